"""The worker agent: (segment, previous CU, question or none) -> CU."""

from __future__ import annotations

from dataclasses import dataclass

from ..backends.base import ChatModel, Completion, Message
from ..segmenting import Segment
from .budget import Budget, Mode
from .notes import CommunicationUnit, truncate_to_tokens
from .prompts import NOTHING_FOUND_PHRASES, Prompts


def worker_messages(
    prompts: Prompts, mode: Mode, question: str | None, segment_text: str, notes: str, number: int
) -> list[Message]:
    """[system][segment][previous notes][question][task]: the segment comes first so its KV can be reused."""
    task = prompts.worker_summary_task if mode == "summary" else prompts.worker_query_task.format(question=question)
    content = (
        prompts.segment_heading.format(number=number)
        + segment_text
        + prompts.previous_notes_heading
        + (notes or prompts.no_notes_yet)
        + "\n\n"
        + task
    )
    return [{"role": "system", "content": prompts.worker_system}, {"role": "user", "content": content}]


def found_nothing(text: str, prompts: Prompts) -> bool:
    """True when a worker's reply says it found nothing: the marker, an empty reply, or a stock phrase."""
    reply = text.strip().strip(".!\"'` ").lower()
    if not reply or reply.startswith(prompts.nothing_relevant.lower()):
        return True
    # A short reply that is only a refusal; a long one that mentions the phrase may still carry notes.
    return len(reply) < 160 and any(phrase in reply for phrase in NOTHING_FOUND_PHRASES)


@dataclass(frozen=True)
class WorkerStep:
    notes: CommunicationUnit
    completion: Completion
    passed_on: bool  # True when the worker found nothing and the previous notes went on unchanged


@dataclass
class Worker:
    model: ChatModel
    prompts: Prompts
    mode: Mode
    question: str | None
    budget: Budget

    def messages(self, segment: Segment, previous: CommunicationUnit) -> tuple[list[Message], int]:
        messages = worker_messages(self.prompts, self.mode, self.question, segment.text, previous.text, segment.index + 1)
        prefix = len(self.prompts.segment_heading.format(number=segment.index + 1)) + len(segment.text)
        return messages, prefix

    def read(self, segment: Segment, previous: CommunicationUnit) -> WorkerStep:
        messages, prefix = self.messages(segment, previous)
        completion = self.model.complete(
            messages, self.budget.notes_tokens, window=self.budget.window, cache_prefix=prefix
        )
        return self._step(segment, previous, completion)

    async def aread(self, segment: Segment, previous: CommunicationUnit) -> WorkerStep:
        messages, prefix = self.messages(segment, previous)
        completion = await self.model.acomplete(
            messages, self.budget.notes_tokens, window=self.budget.window, cache_prefix=prefix
        )
        return self._step(segment, previous, completion)

    def _step(self, segment: Segment, previous: CommunicationUnit, completion: Completion) -> WorkerStep:
        # In summary mode every part matters, so only an empty reply passes the notes on.
        nothing = not completion.text.strip() if self.mode == "summary" else found_nothing(completion.text, self.prompts)
        if nothing:
            return WorkerStep(previous, completion, passed_on=True)
        text = truncate_to_tokens(completion.text.strip(), self.model.tokenizer, self.budget.notes_tokens)
        evidence = tuple(sorted(set(previous.evidence) | {segment.index}))
        return WorkerStep(CommunicationUnit(text, evidence), completion, passed_on=False)
