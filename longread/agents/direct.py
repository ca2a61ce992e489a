"""The direct reader: one call over text of the document itself (retrieved chunks, head and tail, or all of it).

The agent of the one-call strategies (rag, truncate, full). `room` says how many tokens of document text fit its
window beside the instructions, the question and the answer cap; the strategy chooses the text to fill it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..backends.base import CallTag, ChatModel, Completion, Message, TextCallback
from ..backends.calls import Call, Steps, adrive, drive
from ..errors import WindowTooSmall
from .budget import JOIN_MARGIN
from .messages import Mode, reader_messages
from .prompts import Prompts


@dataclass
class DirectReader:
    model: ChatModel
    prompts: Prompts
    mode: Mode
    question: str | None
    window: int
    answer_tokens: int

    def messages(self, text: str) -> list[Message]:
        return reader_messages(self.prompts, self.mode, self.question, text)

    @property
    def limit(self) -> int:
        return min(self.window, self.model.context_window)

    def room(self) -> int:
        """Tokens of document text that fit (an estimate with a margin: `fits` is the exact check)."""
        fixed = self.model.count_prompt_tokens(self.messages("")) + JOIN_MARGIN
        room = self.limit - fixed - self.answer_tokens
        if room < 16:
            raise WindowTooSmall(
                f"a window of {self.window} tokens is too small: the instructions and question need {fixed} tokens "
                f"and the answer {self.answer_tokens}"
            )
        return room

    def fits(self, text: str) -> bool:
        return self.model.count_prompt_tokens(self.messages(text)) + self.answer_tokens <= self.limit

    def reading(self, text: str, *, on_text: TextCallback | None = None) -> Steps[Completion]:
        """The reader's one call (backends/calls.py: `drive` or `adrive` runs it)."""
        return (yield Call(self.model, self.messages(text), self.answer_tokens, window=self.window,
                           tag=CallTag("reader"), on_text=on_text))

    def read(self, text: str, *, on_text: TextCallback | None = None) -> Completion:
        return drive(self.reading(text, on_text=on_text))

    async def aread(self, text: str, *, on_text: TextCallback | None = None) -> Completion:
        return await adrive(self.reading(text, on_text=on_text))
