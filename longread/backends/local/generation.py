"""The one generation loop of the local backend. It takes a cache object, so every KV policy plugs in here.

We write the loop by hand rather than call `model.generate` because the compressed caches need control that
`generate` does not give: chunked prefill (peak memory independent of prompt length for eviction policies),
logical positions that keep counting after eviction, starting from a reused prefix cache, and a repetition guard
that stops small models looping.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from ..kv import install_query_hooks


@dataclass
class RepetitionGuard:
    """Stops generation when the tail of the output repeats a block of up to `max_period` tokens `repeats` times."""

    max_period: int = 32
    repeats: int = 3
    min_span: int = 12  # a tail shorter than this is never called a loop ("...", "- -")

    def holdback(self) -> int:
        """The most tokens a detected loop can ever remove from the end."""
        return max(p * max(self.repeats, -(-self.min_span // p)) - p for p in range(1, self.max_period + 1))

    def unsettled(self, ids: Sequence[int]) -> int:
        """How many of the last tokens a loop completed later could still remove: what a stream holds back now.

        A loop of period p removes only tokens that repeat the token p before them, and only from an unbroken run
        of such tokens at the end. So the tokens before the longest such run (over every period) are settled: no
        later token can make them part of a removed repeat. In ordinary text the runs are a token or two long, so
        the text streams almost as it is decoded; only text that starts repeating is held (at most `holdback()`).
        """
        n, longest = len(ids), 0
        for period in range(1, min(self.max_period, n - 1) + 1):
            run = 0
            while run < n - period and ids[n - 1 - run] == ids[n - 1 - run - period]:
                run += 1
            longest = max(longest, run)
        return longest

    def looping(self, ids: Sequence[int]) -> int:
        """The period of the loop at the end of ids, or 0."""
        n = len(ids)
        for period in range(1, self.max_period + 1):
            span = period * max(self.repeats, -(-self.min_span // period))
            if span > n:
                continue
            tail = ids[n - span :]
            if all(tail[i] == tail[i % period] for i in range(span)):
                return period
        return 0


@dataclass
class GenerationResult:
    ids: list[int]
    finish_reason: str  # "stop" | "length" | "repetition"
    prefill_tokens: int  # prompt tokens run through the model in this call (reused prefix excluded)
    seconds_prefill: float = 0.0
    seconds_decode: float = 0.0
    extras: dict[str, Any] = field(default_factory=dict)
    decoded_tokens: int = 0  # tokens the model chose, EOS and a loop's trimmed repeats included


@torch.inference_mode()
def prefill(model: Any, ids: Sequence[int], cache: Any, *, start_position: int = 0, chunk: int = 512) -> torch.Tensor:
    """Runs ids through the model into cache in chunks; returns the logits of the last position.

    Chunking bounds peak memory: an eviction policy trims its cache after every chunk, so the cache never holds
    more than its budget plus one chunk, whatever the prompt's length.
    """
    device = next(model.parameters()).device
    if getattr(cache, "wants_queries", False):
        install_query_hooks(model)  # snap / mixed score tokens with the queries of an observation window
    logits = None
    for lo in range(0, len(ids), chunk):
        piece = torch.tensor([list(ids[lo : lo + chunk])], device=device)
        positions = torch.arange(start_position + lo, start_position + lo + piece.shape[1], device=device)[None]
        out = model(input_ids=piece, position_ids=positions, past_key_values=cache, use_cache=True, logits_to_keep=1)
        logits = out.logits[:, -1, :]
    if logits is None:
        raise ValueError("prefill needs at least one token")
    return logits


class Decoding:
    """One sequence's host rules while it decodes: the output-only repetition penalty, the choice of token, and
    the stops (EOS, the repetition guard, the length cap). `generate` below and the batched engine
    (batching.py) both drive it, so a sequence follows the same rules alone or in a batch; the static engine
    (static_engine.py) picks tokens on the device and replays them through `accept` at each sync."""

    def __init__(self, max_new_tokens: int, eos_ids: set[int], *, temperature: float = 0.0,
                 repetition_penalty: float = 1.1, guard: RepetitionGuard | None = None, seed: int = 0,
                 device: Any = "cpu", on_token: Callable[[int], None] | None = None,
                 stop: Callable[[], bool] | None = None):
        self.max_new_tokens = max_new_tokens
        self.stop = stop  # asked at every token: True ends the sequence ("cancelled": its caller has gone)
        self.eos_ids = eos_ids
        self.temperature = temperature
        self.repetition_penalty = repetition_penalty
        self.guard = guard or RepetitionGuard()
        self.device = device
        self.on_token = on_token
        self.generator = torch.Generator(device=device).manual_seed(seed) if temperature > 0 else None
        self.out: list[int] = []
        self.decoded = 0  # tokens accepted, before the guard's trim (what decoding cost)
        self.finish = "length"
        self.done = max_new_tokens < 1

    def pick(self, logits: torch.Tensor) -> int:
        """The next token from the logits (1, vocab) of the last position."""
        scores = logits.float()
        out = self.out
        if self.repetition_penalty != 1.0 and out:
            # Penalize only what this answer already said: penalizing the prompt would push the model away from
            # quoting the document, which is exactly what a worker agent should do.
            seen = torch.tensor(sorted(set(out)), device=scores.device)
            picked = scores[0, seen]
            scores[0, seen] = torch.where(picked > 0, picked / self.repetition_penalty,
                                          picked * self.repetition_penalty)
        if self.temperature > 0:
            probs = torch.softmax(scores / self.temperature, dim=-1)
            return int(torch.multinomial(probs, 1, generator=self.generator)[0, 0])
        return int(scores.argmax(dim=-1)[0])

    def accept(self, token: int) -> bool:
        """Takes a chosen token; True when the sequence goes on (the token is then fed back to the model)."""
        if self.done:
            return False
        if self.stop is not None and self.stop():
            self.finish, self.done = "cancelled", True
            return False
        self.decoded += 1
        out = self.out
        if token in self.eos_ids:
            self.finish, self.done = "stop", True
            return False
        out.append(token)
        period = self.guard.looping(out)
        if period:
            # Keep one copy of the repeated block, drop the rest.
            while len(out) >= 2 * period and out[-period:] == out[-2 * period : -period]:
                del out[-period:]
            self.finish, self.done = "repetition", True
            return False
        if self.on_token is not None:
            self.on_token(token)
        if len(out) == self.max_new_tokens:
            self.done = True
            return False
        return True

    def step(self, logits: torch.Tensor) -> int | None:
        """pick then accept: the token to feed next, or None when the sequence has stopped."""
        token = self.pick(logits)
        return token if self.accept(token) else None


@torch.inference_mode()
def generate(
    model: Any,
    prompt_ids: Sequence[int],
    cache: Any,
    *,
    max_new_tokens: int,
    eos_ids: set[int],
    start_position: int = 0,
    prefill_chunk: int = 512,
    temperature: float = 0.0,
    repetition_penalty: float = 1.1,
    guard: RepetitionGuard | None = None,
    seed: int = 0,
    on_token: Callable[[int], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> GenerationResult:
    """Greedy (temperature 0) or sampled decoding of up to max_new_tokens after prompt_ids.

    `cache` may already hold `start_position` tokens of a reused prefix; prompt_ids continue from there.
    Positions are passed explicitly: after eviction the cache is shorter than the text (physical vs logical
    length), and RoPE must keep counting the text. `on_token` sees each token kept, as it is decoded (streaming);
    `stop()`, asked at every token, ends the call early when True.
    """
    import time

    device = next(model.parameters()).device
    t0 = time.perf_counter()
    logits = prefill(model, prompt_ids, cache, start_position=start_position, chunk=prefill_chunk)
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # so seconds_prefill is the prefill's, not the first decode step's
    t1 = time.perf_counter()
    state = Decoding(max_new_tokens, eos_ids, temperature=temperature, repetition_penalty=repetition_penalty,
                     guard=guard, seed=seed, device=device, on_token=on_token, stop=stop)
    position = start_position + len(prompt_ids)
    while not state.done:
        token = state.step(logits)
        if token is None:
            break
        logits = decode_step(model, token, position, cache, device)
        position += 1
    t2 = time.perf_counter()
    return GenerationResult(state.out, state.finish, len(prompt_ids), t1 - t0, t2 - t1,
                            decoded_tokens=state.decoded)


@torch.inference_mode()
def decode_step(model: Any, token: int, position: int, cache: Any, device: Any) -> torch.Tensor:
    """One token through the model at its true position; the logits (1, vocab) of the next."""
    step = model(
        input_ids=torch.tensor([[token]], device=device),
        position_ids=torch.tensor([[position]], device=device),
        past_key_values=cache,
        use_cache=True,
    )
    return step.logits[:, -1, :]
