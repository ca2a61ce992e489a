"""The worker agent: (segment, previous CU, question or none) -> CU."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

from ..backends.base import CallTag, ChatModel, Completion, Message
from ..backends.calls import Call, Steps, adrive, drive
from ..segmenting import Segment
from ..tokenizers import truncate_to_tokens
from .budget import Budget
from .messages import Mode, worker_messages, worker_prefix_chars
from .notes import CommunicationUnit, add_evidence, grounded
from .prompts import Prompts
from .replies import after_marker, found_nothing


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
    # A guided chain: the passages of a segment to show after it (their tokens are within the notes' room).
    focus: Callable[[Segment], Sequence[str]] | None = field(default=None, repr=False)
    # Evidence notes (query mode): each grounded reply becomes an item of the notes (agents/notes.py); `rank`
    # scores items for the question, so the least relevant go first when the notes outgrow their cap.
    evidence: bool = False
    rank: Callable[[Sequence[str]], Sequence[float]] | None = field(default=None, repr=False)

    def messages(self, segment: Segment, previous: CommunicationUnit) -> tuple[list[Message], int]:
        """The prompt, and how many characters of its last message are the reusable prefix."""
        number = segment.index + 1
        focus = self.focus(segment) if self.focus is not None else ()
        shown = previous.text if self.prompts.previous_notes_heading else ""  # map: the notes are not shown
        messages = worker_messages(self.prompts, self.mode, self.question, segment.text, shown, number, focus)
        return messages, worker_prefix_chars(self.prompts, segment.text, number, self.question)

    def reading(self, segment: Segment, previous: CommunicationUnit, path: int | None = None) -> Steps[WorkerStep]:
        """The worker's one call and its step (backends/calls.py: `drive` or `adrive` runs it)."""
        messages, prefix = self.messages(segment, previous)
        completion = yield Call(self.model, messages, self.budget.notes_tokens, window=self.budget.window,
                                cache_prefix=prefix, tag=CallTag("worker", segment.index, path))
        return self.step(segment, previous, completion)

    def read(self, segment: Segment, previous: CommunicationUnit, path: int | None = None) -> WorkerStep:
        return drive(self.reading(segment, previous, path))

    async def aread(self, segment: Segment, previous: CommunicationUnit, path: int | None = None) -> WorkerStep:
        return await adrive(self.reading(segment, previous, path))

    def step(self, segment: Segment, previous: CommunicationUnit, completion: Completion) -> WorkerStep:
        marker = self.prompts.nothing_relevant
        # In summary mode every part matters, so only an empty reply passes the notes on.
        nothing = not completion.text.strip() if self.mode == "summary" else found_nothing(completion.text, marker)
        if nothing:
            return WorkerStep(previous, completion, passed_on=True)
        text = after_marker(completion.text, marker) if self.mode == "query" else completion.text.strip()
        if self.evidence and self.mode == "query":
            bound = getattr(self.model, "upper_bound", False)  # a dry run keeps every note a real reply could give
            if not bound and not grounded(text, segment.text, self.question or ""):
                return WorkerStep(previous, completion, passed_on=True)  # an answer its part does not hold
            count, cap = self.model.tokenizer.count, self.budget.notes_tokens
            return WorkerStep(add_evidence(previous, segment.index, text, lambda t: count(t) <= cap, self.rank),
                              completion, passed_on=False)
        text = truncate_to_tokens(text, self.model.tokenizer, self.budget.notes_tokens)
        evidence = tuple(sorted(set(previous.evidence) | {segment.index}))
        return WorkerStep(CommunicationUnit(text, evidence), completion, passed_on=False)
