"""The one chat interface every agent uses, whatever runs the model.

`acomplete(messages, max_new_tokens, temperature=0) -> Completion` is async-first; `complete` is its sync twin.
The window check lives here, in the shared base, so no backend can forget it: a call whose prompt tokens plus
max_new_tokens exceed the window raises WindowExceeded before any model is called.
"""

from __future__ import annotations

import asyncio
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Sequence, TypedDict

from ..errors import WindowExceeded
from ..tokenizers import Tokenizer
from .calls import Blocking, Steps, Twin, adrive, drive


class Message(TypedDict):
    role: str  # "system" | "user" | "assistant"
    content: str


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    cost_usd: float = 0.0
    finish_reason: str = "stop"  # "stop" | "length" | "repetition"
    cached_prompt_tokens: int = 0  # prompt tokens whose KV was reused instead of computed (local backend)
    cache_hit: bool = False  # answered from the completion cache (backends/cache.py): no model ran, nothing paid


@dataclass(frozen=True)
class CallTag:
    """Who makes a call: the agent role, the segment it reads and the reading path (multipath).

    Real backends may ignore it; the recording MockModel routes its replies by it, so tests never have to match
    prompt wording, and traces name each call's role.
    """

    agent: str
    segment: int | None = None
    path: int | None = None
    step: str | None = None  # what the call does within its role: "memory" (answer from memory), "gate", "summary"


TextCallback = Callable[[str], None]


def check_window(prompt_tokens: int, max_new_tokens: int, window: int | None, what: str = "call") -> None:
    if window is not None and prompt_tokens + max_new_tokens > window:
        raise WindowExceeded(prompt_tokens, max_new_tokens, window, what)


class ChatModel(ABC):
    """A chat model with a tokenizer that counts its prompts exactly (local) or closely (API, tiktoken).

    Subclasses implement `count_prompt_tokens` and at least one of `_complete` / `_acomplete`.
    `cache_prefix` marks the first N characters of the last message as question-independent (together with
    every earlier message): the local backend keeps and reuses their KV; API backends ignore it.
    """

    name: str
    tokenizer: Tokenizer
    context_window: int
    is_local: bool = False

    @abstractmethod
    def count_prompt_tokens(self, messages: Sequence[Message], cache_prefix: int | None = None) -> int:
        """Tokens of the prompt as this backend will send it (cache_prefix may change how a local one splits it)."""

    def price_per_token(self) -> tuple[float, float]:
        """(input, output) USD per token; 0 where unknown or free."""
        return (0.0, 0.0)

    # Backends that can stream set `streams = True` and take `on_text` in `_complete`/`_acomplete`; backends that
    # route by role (the MockModel) set `accepts_tag = True` and take `tag`; backends that can ask the provider for
    # JSON (litellm) set `accepts_response_format = True` and take `response_format` (OpenAI's shape); backends that
    # can stop a call midway set `cancellable = True` and take `cancel` (a threading.Event: set, the call ends at
    # its next token). Everything else keeps one signature.
    streams: bool = False
    accepts_tag: bool = False
    accepts_response_format: bool = False
    cancellable: bool = False

    async def acomplete(
        self,
        messages: Sequence[Message],
        max_new_tokens: int,
        temperature: float = 0.0,
        *,
        window: int | None = None,
        cache_prefix: int | None = None,
        tag: CallTag | None = None,
        on_text: TextCallback | None = None,
        response_format: dict[str, Any] | None = None,
        cancel: threading.Event | None = None,
    ) -> Completion:
        """One call. `on_text` receives the text as it is written (pieces, in order), or all of it at the end
        when the backend does not stream. `response_format` (OpenAI's `{"type": "json_schema", ...}`) reaches the
        backends that can pass it on; the others ignore it (longread/structured.py validates the reply anyway).
        `cancel`, once set, stops a cancellable backend's call early (its finish_reason is then "cancelled";
        `longread serve` sets it for a client that has gone)."""
        return await adrive(self._completing(messages, max_new_tokens, temperature, window, cache_prefix, tag, on_text,
                                             response_format, cancel))

    def complete(
        self,
        messages: Sequence[Message],
        max_new_tokens: int,
        temperature: float = 0.0,
        *,
        window: int | None = None,
        cache_prefix: int | None = None,
        tag: CallTag | None = None,
        on_text: TextCallback | None = None,
        response_format: dict[str, Any] | None = None,
        cancel: threading.Event | None = None,
    ) -> Completion:
        return drive(self._completing(messages, max_new_tokens, temperature, window, cache_prefix, tag, on_text,
                                      response_format, cancel))

    def _completing(self, messages: Sequence[Message], max_new_tokens: int, temperature: float, window: int | None,
                    cache_prefix: int | None, tag: CallTag | None, on_text: TextCallback | None,
                    response_format: dict[str, Any] | None, cancel: threading.Event | None) -> Steps[Completion]:
        """`complete` and `acomplete` written once (backends/calls.py): the window check, the backend's call
        (`_complete` or `_acomplete`), and the whole text to `on_text` when the backend does not stream."""
        def count() -> int:
            return self._checked_prompt_tokens(messages, max_new_tokens, window, cache_prefix)

        # a local model counts with its own tokenizer: CPU work, kept off the event loop (in place when sync)
        prompt_tokens = (yield Blocking(count)) if self.is_local else count()
        extra = self._extra(tag, on_text, response_format, cancel)
        completion = yield Twin(self._complete, self._acomplete, list(messages), max_new_tokens, temperature,
                                prompt_tokens, cache_prefix, **extra)
        if on_text is not None and "on_text" not in extra:
            on_text(completion.text)
        return completion

    def _extra(self, tag: CallTag | None, on_text: TextCallback | None,
               response_format: dict[str, Any] | None = None,
               cancel: threading.Event | None = None) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if self.accepts_tag:
            extra["tag"] = tag
        if self.streams and on_text is not None:
            extra["on_text"] = on_text
        if self.accepts_response_format and response_format is not None:
            extra["response_format"] = response_format
        if self.cancellable and cancel is not None:
            extra["cancel"] = cancel
        return extra

    def _checked_prompt_tokens(
        self, messages: Sequence[Message], max_new_tokens: int, window: int | None, cache_prefix: int | None
    ) -> int:
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        prompt_tokens = self.count_prompt_tokens(messages, cache_prefix)
        limit = min(w for w in (window, self.context_window) if w is not None)
        check_window(prompt_tokens, max_new_tokens, limit, f"a call to {self.name}")
        return prompt_tokens

    # Default twins: a backend written sync runs in a worker thread under asyncio; one written async runs in a loop.
    async def _acomplete(
        self, messages: list[Message], max_new_tokens: int, temperature: float, prompt_tokens: int,
        cache_prefix: int | None, **extra: Any,
    ) -> Completion:
        return await asyncio.to_thread(
            self._complete, messages, max_new_tokens, temperature, prompt_tokens, cache_prefix, **extra
        )

    def _complete(
        self, messages: list[Message], max_new_tokens: int, temperature: float, prompt_tokens: int,
        cache_prefix: int | None, **extra: Any,
    ) -> Completion:
        return asyncio.run(self._acomplete(messages, max_new_tokens, temperature, prompt_tokens, cache_prefix, **extra))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"
