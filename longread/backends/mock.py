"""A deterministic, recording chat model for tests and for `--dry-run` cost estimates (`--model mock`; public as
`longread.testing.MockModel`)."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from ..tokenizers import Tokenizer, tiktoken_tokenizer
from .base import CallTag, ChatModel, Completion, Message

# Plain words that are one token each with a leading space in the tiktoken encodings we ship.
_WORDS = (
    "the of and to in is was for that with on as by at from his her it an be this are which or had not but "
    "have one were they all their there been has when who will more no if out so said what up its about into "
    "than them can only other new some could time these two may then do first any my now such like our over"
).split()


@dataclass(frozen=True)
class RecordedCall:
    messages: list[Message]
    max_new_tokens: int
    temperature: float
    prompt_tokens: int
    cache_prefix: int | None
    tag: CallTag | None = None

    @property
    def prompt(self) -> str:
        return "\n".join(m["content"] for m in self.messages)

    @property
    def agent(self) -> str | None:
        return self.tag.agent if self.tag else None

    @property
    def segment(self) -> int | None:
        return self.tag.segment if self.tag else None

    @property
    def path(self) -> int | None:
        return self.tag.path if self.tag else None

    @property
    def step(self) -> str | None:
        return self.tag.step if self.tag else None


Reply = str | Callable[[RecordedCall], "str | None"]


@dataclass
class MockModel(ChatModel):
    """Answers with `completion_tokens` tokens (never more than max_new_tokens) derived from a hash of its input.

    - `replies` routes by the caller's role (`CallTag.agent`: worker, manager, judge, reader, controller): a
      fixed text, or a function of the RecordedCall (its tag, segment, path, messages) returning the text or
      None for the derived text. Tests route by role, never by prompt wording.
    - `responder(messages)` may return the text to answer with instead (None: the derived text).
    - `fail_on_calls`: 1-based call numbers that raise `failure` instead of answering (resume tests).
    - Every call is recorded in `calls`, in order, with its messages and max_new_tokens.
    """

    completion_tokens: int = 32
    tokenizer: Tokenizer = field(default_factory=tiktoken_tokenizer)
    context_window: int = 1_000_000
    name: str = "mock"
    responder: Callable[[list[Message]], str | None] | None = None
    replies: Mapping[str, Reply] = field(default_factory=dict)
    fail_on_calls: set[int] = field(default_factory=set)
    failure: type[Exception] = RuntimeError
    calls: list[RecordedCall] = field(default_factory=list)
    price: tuple[float, float] = (0.0, 0.0)
    per_message_overhead: int = 4  # the same framing allowance the API backend counts

    accepts_tag = True
    stand_in = True  # not a real model: strategies use model-free helpers (the hashing embedder) beside it

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self.call_count = 0  # attempts, failed ones included

    def count_prompt_tokens(self, messages: Sequence[Message], cache_prefix: int | None = None) -> int:
        return sum(self.tokenizer.count(m["content"]) + self.per_message_overhead for m in messages) + 3

    def price_per_token(self) -> tuple[float, float]:
        return self.price

    def _complete(self, messages, max_new_tokens, temperature, prompt_tokens, cache_prefix, tag=None) -> Completion:
        with self._lock:
            self.call_count += 1
            number = self.call_count
        if number in self.fail_on_calls:
            raise self.failure(f"injected failure at call {number}")
        call = RecordedCall(list(messages), max_new_tokens, temperature, prompt_tokens, cache_prefix, tag)
        text = self._routed(call)
        if text is None and self.responder:
            text = self.responder(messages)
        if text is None:
            text = self._derived_text(messages, min(self.completion_tokens, max_new_tokens))
        ids = self.tokenizer.encode(text)[:max_new_tokens]
        text = self.tokenizer.decode(ids)
        with self._lock:
            self.calls.append(call)
        cost = prompt_tokens * self.price[0] + len(ids) * self.price[1]
        return Completion(text, prompt_tokens, len(ids), 0.0, cost, "length" if len(ids) >= max_new_tokens else "stop")

    async def _acomplete(self, messages, max_new_tokens, temperature, prompt_tokens, cache_prefix, tag=None) -> Completion:
        return self._complete(messages, max_new_tokens, temperature, prompt_tokens, cache_prefix, tag)

    def _routed(self, call: RecordedCall) -> str | None:
        reply: Any = self.replies.get(call.agent or "")
        if reply is None:
            return None
        return reply(call) if callable(reply) else str(reply)

    def calls_by(self, agent: str) -> list[RecordedCall]:
        """The recorded calls of one role, in order."""
        return [c for c in self.calls if c.agent == agent]

    @staticmethod
    def _derived_text(messages: Sequence[Message], n_tokens: int) -> str:
        digest = hashlib.sha256("\x00".join(m["content"] for m in messages).encode()).digest()
        seed = int.from_bytes(digest[:8], "big")
        words = []
        for i in range(max(n_tokens, 0)):
            seed = (seed * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
            words.append(_WORDS[(seed >> 33) % len(_WORDS)])
        return " " + " ".join(words) if words else ""
