"""The `--dry-run` stand-in: runs a whole read without calling the model, and bounds what the real run will cost.

`EstimateModel` counts every prompt exactly as the chosen model does (its own tokenizer and framing) and answers
each call with its full `max_new_tokens`. Filling every cap makes the completion tokens, and the notes passed along
(so the later prompts), upper bounds: the cost it reports is the most the run can cost, never a guess.

For a model on this machine no price applies; what matters is time. `calibrate` measures the model's prefill and
decode speed with one short call (a 256-token prompt, 16 new tokens) after a one-token warm-up, and `Estimate.seconds_max` turns the
estimate's token counts into seconds at those speeds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

from .base import ChatModel, Completion, Message


class EstimateModel(ChatModel):
    """Counts prompts with `counter` (the chosen model) and writes every call's full cap (see the module doc).

    `upper_bound`: strategies take every branch a real reply could lead to (a worker's notes are kept, the manager
    is called, auto's fallback runs), so the estimate bounds the real run. `stand_in`: model-free helpers (the
    hashing embedder) serve it, since it must not load a neural model to count tokens.
    """

    upper_bound = True
    stand_in = True

    def __init__(self, counter: ChatModel):
        self.counter = counter
        self.name = counter.name
        self.tokenizer = counter.tokenizer
        self.context_window = counter.context_window
        self.is_local = counter.is_local
        self._price = tuple(counter.price_per_token())
        self.calls = 0

    def count_prompt_tokens(self, messages: Sequence[Message], cache_prefix: int | None = None) -> int:
        return self.counter.count_prompt_tokens(messages, cache_prefix)

    def price_per_token(self) -> tuple[float, float]:
        return self._price  # type: ignore[return-value]

    def _complete(self, messages, max_new_tokens, temperature, prompt_tokens, cache_prefix, **extra) -> Completion:
        self.calls += 1
        # A plain word repeated: it never reads as "nothing relevant", so every note is passed on at full length.
        ids = self.tokenizer.encode(" the" * max_new_tokens)[:max_new_tokens]
        return Completion(self.tokenizer.decode(ids), prompt_tokens, max_new_tokens, 0.0, 0.0, "length")

    async def _acomplete(self, messages, max_new_tokens, temperature, prompt_tokens, cache_prefix,
                         **extra) -> Completion:
        return self._complete(messages, max_new_tokens, temperature, prompt_tokens, cache_prefix)


def estimate_model(model: ChatModel) -> EstimateModel:
    """The stand-in for `model`: same name, tokenizer, window and prices; it never calls `model`."""
    return EstimateModel(model)


@dataclass(frozen=True)
class Speed:
    """Tokens per second of one model on this machine, measured by `calibrate`."""

    prefill_tokens_per_second: float
    decode_tokens_per_second: float
    seconds: float  # how long the calibration took

    def seconds_for(self, prompt_tokens: int, completion_tokens: int) -> float:
        return prompt_tokens / self.prefill_tokens_per_second + completion_tokens / self.decode_tokens_per_second

    def to_dict(self) -> dict[str, float]:
        return {"prefill_tokens_per_second": round(self.prefill_tokens_per_second, 1),
                "decode_tokens_per_second": round(self.decode_tokens_per_second, 2),
                "calibration_seconds": round(self.seconds, 2)}


CALIBRATION_PROMPT_TOKENS = 256
CALIBRATION_NEW_TOKENS = 16


def calibrate(model: ChatModel, *, prompt_tokens: int = CALIBRATION_PROMPT_TOKENS,
              new_tokens: int = CALIBRATION_NEW_TOKENS) -> Speed:
    """One short real call: a prompt of about `prompt_tokens` tokens, then up to `new_tokens` new tokens.

    A local engine reports its prefill and decode seconds (`stats`); any other model gets the call's whole time
    split by the same ratio as a local one would be, which is rough but never faster than it measured."""
    filler = " ".join(str(i) for i in range(prompt_tokens))  # numbers: about one token each, no early stop
    ids = model.tokenizer.encode(filler)[:prompt_tokens]
    messages: list[Message] = [{"role": "user", "content": model.tokenizer.decode(ids) + "\nContinue counting:"}]
    model.complete([{"role": "user", "content": "1 2 3"}], 1)  # warm-up: the first call pays one-off set-up
    stats = getattr(model, "stats", None)
    before = (stats.seconds_prefill, stats.seconds_decode) if stats is not None else None
    started = time.perf_counter()
    completion = model.complete(messages, new_tokens)
    total = time.perf_counter() - started
    prompt = max(completion.prompt_tokens, 1)
    generated = max(completion.completion_tokens, 1)
    if before is not None:
        prefill_s = max(stats.seconds_prefill - before[0], 1e-6)
        decode_s = max(stats.seconds_decode - before[1], 1e-6)
    else:
        prefill_s = decode_s = max(total, 1e-6) / 2
    return Speed(prompt / prefill_s, generated / decode_s, total)


@dataclass(frozen=True)
class Estimate:
    """A dry run's bound on one document (or the sum of several): calls, tokens, cost at most, time at most."""

    calls: int
    prompt_tokens: int
    completion_tokens_max: int
    price: tuple[float, float]
    speed: Speed | None = None

    @classmethod
    def of(cls, calls: Sequence[Any], price: tuple[float, float], speed: Speed | None = None) -> "Estimate":
        prompt = sum(c.prompt_tokens for c in calls)
        caps = sum(c.max_new_tokens for c in calls)
        return cls(len(calls), prompt, caps, price, speed)

    @property
    def cost_usd_max(self) -> float:
        return self.prompt_tokens * self.price[0] + self.completion_tokens_max * self.price[1]

    @property
    def seconds_max(self) -> float | None:
        return self.speed.seconds_for(self.prompt_tokens, self.completion_tokens_max) if self.speed else None

    def __add__(self, other: "Estimate") -> "Estimate":
        return Estimate(self.calls + other.calls, self.prompt_tokens + other.prompt_tokens,
                        self.completion_tokens_max + other.completion_tokens_max, self.price, self.speed or other.speed)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "calls": self.calls,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens_max": self.completion_tokens_max,
            "estimated_cost_usd_max": self.cost_usd_max,
            "price_per_token": {"input": self.price[0], "output": self.price[1]},
        }
        if self.speed is not None:
            data["estimated_seconds_max"] = round(self.seconds_max or 0.0, 1)
            data["speed"] = self.speed.to_dict()
        data["note"] = "completion tokens are each call's max_new_tokens, so cost and time are upper bounds"
        return data
