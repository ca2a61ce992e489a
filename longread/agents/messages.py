"""The messages each agent sends, built from Prompts: one function per agent, used by the agents and by the
window budgets (which count them with empty texts)."""

from __future__ import annotations

from typing import Literal, Sequence

from ..backends.base import Message
from .prompts import Prompts

Mode = Literal["query", "summary"]


def worker_messages(
    prompts: Prompts, mode: Mode, question: str | None, segment_text: str, notes: str, number: int,
    focus: Sequence[str] = (),
) -> list[Message]:
    """[system][segment][focus passages][previous notes][question][task]: the segment comes first so its KV can
    be reused; the focus passages (a guided chain) depend on the question, so they come after it."""
    task = prompts.worker_summary_task if mode == "summary" else prompts.worker_query_task.format(question=question)
    spotlight = ""
    if focus:
        spotlight = prompts.focus_heading + "".join(prompts.focus_passage.format(text=t.strip()) for t in focus)
    content = (
        prompts.segment_heading.format(number=number, question=question or "")
        + segment_text
        + spotlight.rstrip("\n")
        + prompts.previous_notes_heading
        + (notes or prompts.no_notes_yet)
        + "\n\n"
        + task
    )
    return [{"role": "system", "content": prompts.worker_system}, {"role": "user", "content": content}]


def worker_prefix_chars(prompts: Prompts, segment_text: str, number: int, question: str | None = None) -> int:
    """Characters of the worker's user message that do not depend on the notes (nor on the question, unless
    the segment heading names it: then the reusable prefix is per question)."""
    return len(prompts.segment_heading.format(number=number, question=question or "")) + len(segment_text)


def lookback_text(prompts: Prompts, passages: Sequence[tuple[int, str]]) -> str:
    """Source passages (segment index, text) as the manager reads them, in document order."""
    if not passages:
        return ""
    body = "".join(prompts.lookback_passage.format(number=index + 1, text=text.strip()) for index, text in passages)
    return prompts.lookback_heading + body


def manager_messages(prompts: Prompts, mode: Mode, question: str | None, notes: str, sources: str = "") -> list[Message]:
    if mode == "summary":
        task = prompts.manager_summary_task.format(notes=notes)
    else:
        task = prompts.manager_query_task.format(notes=notes, question=question)
    content = f"{sources}\n{task}" if sources else task
    return [{"role": "system", "content": prompts.manager_system}, {"role": "user", "content": content}]


def judge_messages(prompts: Prompts, mode: Mode, question: str | None, candidates: Sequence[tuple[str, str]]) -> list[Message]:
    """candidates: (answer, notes) of each reading path."""
    body = "".join(
        prompts.judge_candidate.format(number=i + 1, answer=answer.strip() or "(empty)", notes=notes.strip() or "(none)")
        for i, (answer, notes) in enumerate(candidates)
    )
    if mode == "summary":
        task = prompts.judge_summary_task.format(candidates=body)
    else:
        task = prompts.judge_query_task.format(candidates=body, question=question)
    return [{"role": "system", "content": prompts.judge_system}, {"role": "user", "content": task}]


def reader_messages(prompts: Prompts, mode: Mode, question: str | None, text: str) -> list[Message]:
    if mode == "summary":
        task = prompts.reader_summary_task.format(text=text)
    else:
        task = prompts.reader_query_task.format(text=text, question=question)
    return [{"role": "system", "content": prompts.reader_system}, {"role": "user", "content": task}]
