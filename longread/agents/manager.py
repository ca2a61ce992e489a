"""The manager agent: (question or none, final CU [+ archived notes] [+ cited source passages]) -> answer or summary."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..backends.base import CallTag, ChatModel, Completion, Message, TextCallback
from ..backends.calls import Call, Steps, adrive, drive
from .budget import Budget
from .messages import Mode, manager_messages
from .notes import CommunicationUnit
from .prompts import Prompts

EMPTY_NOTES = "(the readers found nothing relevant)"


@dataclass
class Manager:
    model: ChatModel
    prompts: Prompts
    mode: Mode
    question: str | None
    budget: Budget

    def messages(self, notes: CommunicationUnit, extra_notes: Sequence[str] = (), sources: str = "") -> list[Message]:
        text = notes.text or EMPTY_NOTES
        if extra_notes:
            text = "\n\n".join([*extra_notes, text])
        return manager_messages(self.prompts, self.mode, self.question, text, sources)

    def fits(self, notes: CommunicationUnit, extra_notes: Sequence[str] = (), sources: str = "") -> bool:
        """Whether this prompt and the answer cap fit the window (recall and lookback add text while it does)."""
        limit = min(self.budget.window, self.model.context_window)
        prompt = self.model.count_prompt_tokens(self.messages(notes, extra_notes, sources))
        return prompt + self.budget.answer_tokens <= limit

    def nothing_to_read(self, notes: CommunicationUnit, extra_notes: Sequence[str] = (), sources: str = "") -> bool:
        """A question whose readers all found nothing: the answer is `not_found_answer`, with no call that could
        invent one. (A summary still gets its call: every part was read.)"""
        if getattr(self.model, "upper_bound", False):
            return False  # a dry run counts the call a real reply could lead to
        return self.mode == "query" and not notes.text.strip() and not extra_notes and not sources.strip()

    def not_found(self, parts: int) -> str:
        return self.prompts.not_found_answer.format(parts=parts)

    def writing(self, notes: CommunicationUnit, extra_notes: Sequence[str] = (), sources: str = "", *,
                path: int | None = None, on_text: TextCallback | None = None) -> Steps[Completion]:
        """The manager's call (backends/calls.py: `drive` or `adrive` runs it)."""
        return (yield Call(self.model, self.messages(notes, extra_notes, sources), self.budget.answer_tokens,
                           window=self.budget.window, tag=CallTag("manager", None, path), on_text=on_text))

    def write(self, notes: CommunicationUnit, extra_notes: Sequence[str] = (), sources: str = "", *,
              path: int | None = None, on_text: TextCallback | None = None) -> Completion:
        return drive(self.writing(notes, extra_notes, sources, path=path, on_text=on_text))

    async def awrite(self, notes: CommunicationUnit, extra_notes: Sequence[str] = (), sources: str = "", *,
                     path: int | None = None, on_text: TextCallback | None = None) -> Completion:
        return await adrive(self.writing(notes, extra_notes, sources, path=path, on_text=on_text))
