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
        """The most tokens a detected loop removes from the end: what a stream must hold back."""
        return max(p * max(self.repeats, -(-self.min_span // p)) - p for p in range(1, self.max_period + 1))

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
) -> GenerationResult:
    """Greedy (temperature 0) or sampled decoding of up to max_new_tokens after prompt_ids.

    `cache` may already hold `start_position` tokens of a reused prefix; prompt_ids continue from there.
    Positions are passed explicitly: after eviction the cache is shorter than the text (physical vs logical
    length), and RoPE must keep counting the text. `on_token` sees each token kept, as it is decoded (streaming).
    """
    import time

    guard = guard or RepetitionGuard()
    device = next(model.parameters()).device
    t0 = time.perf_counter()
    logits = prefill(model, prompt_ids, cache, start_position=start_position, chunk=prefill_chunk)
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # so seconds_prefill is the prefill's, not the first decode step's
    t1 = time.perf_counter()
    generator = torch.Generator(device=device).manual_seed(seed) if temperature > 0 else None
    out: list[int] = []
    position = start_position + len(prompt_ids)
    finish = "length"
    for _ in range(max_new_tokens):
        scores = logits.float()
        if repetition_penalty != 1.0 and out:
            # Penalize only what this answer already said: penalizing the prompt would push the model away from
            # quoting the document, which is exactly what a worker agent should do.
            seen = torch.tensor(sorted(set(out)), device=device)
            picked = scores[0, seen]
            scores[0, seen] = torch.where(picked > 0, picked / repetition_penalty, picked * repetition_penalty)
        if temperature > 0:
            probs = torch.softmax(scores / temperature, dim=-1)
            token = int(torch.multinomial(probs, 1, generator=generator)[0, 0])
        else:
            token = int(scores.argmax(dim=-1)[0])
        if token in eos_ids:
            finish = "stop"
            break
        out.append(token)
        period = guard.looping(out)
        if period:
            # Keep one copy of the repeated block, drop the rest.
            while len(out) >= 2 * period and out[-period:] == out[-2 * period : -period]:
                del out[-period:]
            finish = "repetition"
            break
        if on_token is not None:
            on_token(token)
        if len(out) == max_new_tokens:
            break
        piece = torch.tensor([[token]], device=device)
        step = model(
            input_ids=piece,
            position_ids=torch.tensor([[position]], device=device),
            past_key_values=cache,
            use_cache=True,
        )
        logits = step.logits[:, -1, :]
        position += 1
    t2 = time.perf_counter()
    return GenerationResult(out, finish, len(prompt_ids), t1 - t0, t2 - t1)
