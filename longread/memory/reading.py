"""Memory beside the reading agents: one session of a memory stream, seen from a strategy and from a chat turn.

Self-Controlled Memory (Wang et al., arXiv:2304.13343). ReadingMemory binds a MemoryController to one session and
gives the reading workflows what they need, with the policy kept here (and in the controller), not in them:

- `archive(segment, notes, passed_on)`: every worker CU that is not passed on becomes a `note` with the span of
  the segment it read;
- `recall(query, notes, fits, mode)`: the archived notes a chain's manager gets beside its last CU, best first,
  as many as fit its window (the controller's `recall_for_manager`);
- the steps of answering a chat turn from memory (workflows/chat.py): `has_notes`, `needs_memory`, `activate`,
  `prompt` (SCM's fused prompt with the INSUFFICIENT escape), `insufficient`, `remember`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from ..agents.replies import found_nothing
from ..agents.prompts import NOT_FOUND_PHRASES
from ..results import CallRecord, Citation
from .controller import FusedPrompt, MemoryController, Recalled
from .store import MemoryItem, MemoryStream

# Replies that say "I cannot answer from this" without the marker (small models paraphrase it).
INSUFFICIENT_PHRASES = NOT_FOUND_PHRASES + (
    "insufficient", "do not contain", "does not contain", "doesn't contain", "don't contain", "not mentioned",
    "cannot answer", "can't answer", "cannot be answered", "no answer", "not in the memory", "not in the notes",
)


@dataclass
class ReadingMemory:
    controller: MemoryController
    session: str
    recalled: list[MemoryItem] = field(default_factory=list)  # what the last chain's manager was given

    @property
    def stream(self) -> MemoryStream:
        return self.controller.stream

    # -- a chain pass -------------------------------------------------------------------------------------------
    def archive(self, segment: Any, notes: Any, passed_on: bool) -> None:
        if not passed_on and notes.text.strip():
            span = {"segment": segment.index, "start": segment.start, "end": segment.end}
            self.stream.add(self.session, "note", notes.text, spans=[span])

    def recall(self, question: str | None, notes: str, fits: Callable[[list[str]], bool]) -> list[str]:
        """Archived notes for the manager (see the module docstring); a summary recalls the notes that tell the
        story, in document order."""
        query = question or self.controller.prompts.summary_recall_query
        chosen = self.controller.recall_for_manager(
            self.session, query, notes, fits, in_document_order=question is None
        )
        self.recalled.extend(item for _, item in chosen)
        return [text for text, _ in chosen]

    def recalled_citations(self) -> list[Citation]:
        return [span for item in self.recalled for span in item.spans]  # a memory Span is a Citation

    # -- a chat turn --------------------------------------------------------------------------------------------
    def has_notes(self) -> bool:
        """Whether memory holds notes of this session (a chain pass has read the document)."""
        return bool(self.stream.items(self.session, kinds=("note",), last=1))

    def needs_memory(self, question: str) -> tuple[bool, list[CallRecord]]:
        """SCM's activation gate: (needed, the calls it made)."""
        first = len(self.controller.calls)
        needed = self.controller.needs_memory(question)
        return needed, self.controller.calls[first:]

    def activate(self, question: str) -> tuple[tuple[Recalled, ...], list[CallRecord]]:
        """Retrieval and the summary gate: (the top-k items, the calls the summaries took)."""
        first = len(self.controller.calls)
        recalled = self.controller.activate_items(self.session, question)
        return recalled, self.controller.calls[first:]

    def prompt(self, question: str, recalled: Sequence[Recalled], window: int, answer_tokens: int) -> FusedPrompt:
        """SCM's fused prompt [related memory][flash memory][question] with the INSUFFICIENT escape; it fits the
        window with the answer cap (the controller drops and cuts the lowest-ranked memory first)."""
        flash = self.stream.flash(self.session)
        prompts = self.controller.prompts
        return self.controller.build_prompt(question, flash, recalled, window, answer_tokens,
                                            instructions=prompts.memory_answer_system)

    def insufficient(self, reply: str) -> bool:
        """Whether a reply from memory says memory cannot answer (the marker, or a short paraphrase of it)."""
        return found_nothing(reply, self.controller.prompts.insufficient, INSUFFICIENT_PHRASES)

    def remember(self, question: str, answer: str, citations: Sequence[Citation] = ()) -> None:
        """Archive a question and its answer (the answer with the spans it cites)."""
        self.stream.add(self.session, "question", question)
        if answer.strip():
            self.stream.add(self.session, "answer", answer.strip(), spans=citations)

    def remember_summary(self, summary: str, citations: Sequence[Citation] = ()) -> None:
        if summary.strip():
            self.stream.add(self.session, "summary", summary.strip(), spans=citations)
