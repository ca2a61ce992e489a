"""`full` (baseline): the whole document in one call, as a long-context model reads it.

The call's window is the model's context (or `context` tokens, when given), not the agents' window: this is the
baseline of a model that can read everything at once. A document that does not fit is a clear error naming the
sizes, before any call (under --dry-run too).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..agents import DirectReader, Mode, default_caps
from ..errors import DocumentTooLong
from ..results import Citation
from .base import ReadingContext
from .one_call import OneCallStrategy, Selection


@dataclass
class FullStrategy(OneCallStrategy):
    """Everything in one call of up to the model's context."""

    name: ClassVar[str] = "full"
    context: int | None = None  # tokens of the call; None: the model's context window

    def reader(self, ctx: ReadingContext, mode: Mode, question: str | None) -> DirectReader:
        window = min(self.context or ctx.model.context_window, ctx.model.context_window)
        # The answer cap of the agents' window, so every strategy's answer has the same room.
        return DirectReader(ctx.model, ctx.prompts, mode, question, window, default_caps(ctx.window, mode)[1])

    def select(self, ctx: ReadingContext, reader: DirectReader, question: str | None) -> Selection:
        text = ctx.document.text
        if not reader.fits(text):
            needed = ctx.model.count_prompt_tokens(reader.messages(text)) + reader.answer_tokens
            raise DocumentTooLong(needed, reader.limit, f"{ctx.document.source} (full strategy)")
        return Selection(text, [Citation(0, 0, len(text))], 1, window=reader.window)
