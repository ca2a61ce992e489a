"""A ChatModel around another one (the completion cache, tracing): the same model to everything that asks.

A wrapper answers every question about the model (name, tokenizer, window, prices, the local engine's `kv`,
`max_batch`, `with_kv`, ...) as the inner model does, and hands each call on through `_calling` (one body for the
sync and the async call: backends/calls.py). It takes
the role tag and the response format whatever the inner model accepts (a wrapper may use them itself) and passes
on only what the inner model takes, so wrappers stack in any order.
"""

from __future__ import annotations

from typing import Any, Sequence

from .base import ChatModel, Completion, Message
from .calls import Steps, Twin, adrive, drive


class ModelWrapper(ChatModel):
    accepts_tag = True
    accepts_response_format = True

    def __init__(self, inner: ChatModel):
        self.inner = inner
        self.name = inner.name
        self.tokenizer = inner.tokenizer
        # Class-level flags of ChatModel are found on this class before __getattr__ runs: copied from the inner.
        self.is_local = inner.is_local
        self.streams = inner.streams
        self.cancellable = inner.cancellable  # a client that has gone stops the inner model's call too

    @property
    def context_window(self) -> int:  # type: ignore[override]  (an API model resolves it on first need)
        return self.inner.context_window

    def __getattr__(self, name: str) -> Any:
        # Only reached for names this wrapper lacks: the inner model's own (kv, max_batch, stand_in, ...).
        if name == "inner":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

    def count_prompt_tokens(self, messages: Sequence[Message], cache_prefix: int | None = None) -> int:
        return self.inner.count_prompt_tokens(messages, cache_prefix)

    def price_per_token(self) -> tuple[float, float]:
        return self.inner.price_per_token()

    def inner_extra(self, extra: dict[str, Any]) -> dict[str, Any]:
        """The keyword arguments of a call that the inner model takes."""
        passed = dict(extra)
        if not self.inner.accepts_tag:
            passed.pop("tag", None)
        if not self.inner.accepts_response_format:
            passed.pop("response_format", None)
        return passed

    def _calling(self, messages: list[Message], max_new_tokens: int, temperature: float, prompt_tokens: int,
                 cache_prefix: int | None, **extra: Any) -> Steps[Completion]:
        """The inner model's call, the window already checked (by this wrapper's `complete`). A wrapper overrides
        this, once for the sync and the async call (backends/calls.py), and yields from it for the inner call."""
        return (yield Twin(self.inner._complete, self.inner._acomplete, messages, max_new_tokens, temperature,
                           prompt_tokens, cache_prefix, **self.inner_extra(extra)))

    def _complete(self, messages, max_new_tokens, temperature, prompt_tokens, cache_prefix, **extra) -> Completion:
        return drive(self._calling(messages, max_new_tokens, temperature, prompt_tokens, cache_prefix, **extra))

    async def _acomplete(self, messages, max_new_tokens, temperature, prompt_tokens, cache_prefix, **extra
                         ) -> Completion:
        return await adrive(self._calling(messages, max_new_tokens, temperature, prompt_tokens, cache_prefix, **extra))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"


def unwrapped(model: ChatModel) -> ChatModel:
    """The model under every wrapper."""
    while isinstance(model, ModelWrapper):
        model = model.inner
    return model
