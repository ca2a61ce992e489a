"""The manager agent: (question or none, final CU [+ archived notes]) -> answer or summary."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..backends.base import ChatModel, Completion, Message
from .budget import Budget, Mode
from .notes import CommunicationUnit
from .prompts import Prompts


def manager_messages(prompts: Prompts, mode: Mode, question: str | None, notes: str) -> list[Message]:
    if mode == "summary":
        task = prompts.manager_summary_task.format(notes=notes)
    else:
        task = prompts.manager_query_task.format(notes=notes, question=question)
    return [{"role": "system", "content": prompts.manager_system}, {"role": "user", "content": task}]


@dataclass
class Manager:
    model: ChatModel
    prompts: Prompts
    mode: Mode
    question: str | None
    budget: Budget

    def messages(self, notes: CommunicationUnit, extra_notes: Sequence[str] = ()) -> list[Message]:
        text = notes.text or "(the readers found nothing relevant)"
        if extra_notes:
            text = "\n\n".join([*extra_notes, text])
        return manager_messages(self.prompts, self.mode, self.question, text)

    def write(self, notes: CommunicationUnit, extra_notes: Sequence[str] = ()) -> Completion:
        return self.model.complete(self.messages(notes, extra_notes), self.budget.answer_tokens, window=self.budget.window)

    async def awrite(self, notes: CommunicationUnit, extra_notes: Sequence[str] = ()) -> Completion:
        return await self.model.acomplete(
            self.messages(notes, extra_notes), self.budget.answer_tokens, window=self.budget.window
        )
