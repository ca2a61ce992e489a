"""The judge of multipath reading: k answers, each with the notes behind it -> one answer (or one summary).

Chain-of-Agents (Zhang et al., NeurIPS 2024), section 5: several reading orders of the same document, then an
LLM judge that picks or merges their answers. Each candidate's notes are cut evenly to fit the judge's window.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..backends.base import CallTag, ChatModel, Completion, Message, TextCallback
from ..backends.calls import Call, Steps, adrive, drive
from ..errors import WindowTooSmall
from ..tokenizers import truncate_to_tokens
from .messages import Mode, judge_messages
from .prompts import Prompts


@dataclass
class Judge:
    model: ChatModel
    prompts: Prompts
    mode: Mode
    question: str | None
    window: int
    answer_tokens: int

    def messages(self, candidates: Sequence[tuple[str, str]]) -> list[Message]:
        """The judge's prompt with each candidate's notes shortened evenly until it fits with the answer cap."""
        limit = min(self.window, self.model.context_window) - self.answer_tokens
        tokenizer = self.model.tokenizer
        candidates = list(candidates)
        messages = judge_messages(self.prompts, self.mode, self.question, candidates)
        excess = self.model.count_prompt_tokens(messages) - limit
        while excess > 0:
            longest = max(range(len(candidates)), key=lambda i: tokenizer.count(candidates[i][1]))
            answer, notes = candidates[longest]
            size = tokenizer.count(notes)
            if size == 0:
                # Only the answers are left and they do not fit: cut the longest answer.
                longest = max(range(len(candidates)), key=lambda i: tokenizer.count(candidates[i][0]))
                answer, notes = candidates[longest]
                size = tokenizer.count(answer)
                if size == 0:
                    raise WindowTooSmall(f"the judge's instructions do not fit a window of {self.window}")
                candidates[longest] = (truncate_to_tokens(answer, tokenizer, max(0, size - excess - 1)), notes)
            else:
                candidates[longest] = (answer, truncate_to_tokens(notes, tokenizer, max(0, size - excess - 1)))
            messages = judge_messages(self.prompts, self.mode, self.question, candidates)
            excess = self.model.count_prompt_tokens(messages) - limit
        return messages

    def judging(self, candidates: Sequence[tuple[str, str]], *, on_text: TextCallback | None = None
                ) -> Steps[Completion]:
        """The judge's call (backends/calls.py: `drive` or `adrive` runs it)."""
        return (yield Call(self.model, self.messages(candidates), self.answer_tokens, window=self.window,
                           tag=CallTag("judge"), on_text=on_text))

    def judge(self, candidates: Sequence[tuple[str, str]], *, on_text: TextCallback | None = None) -> Completion:
        return drive(self.judging(candidates, on_text=on_text))

    async def ajudge(self, candidates: Sequence[tuple[str, str]], *, on_text: TextCallback | None = None) -> Completion:
        return await adrive(self.judging(candidates, on_text=on_text))
