"""What the local engine may hold on a GPU, and what a call costs there (issue 21, item 1).

The budget (`--gpu-memory FRACTION`, LONGREAD_GPU_MEMORY, default 0.9, like vLLM's `gpu_memory_utilization`) is a
share of the card's memory for everything this process allocates on it: weights, the static engines' rows, the
caches of calls being prefilled, prefix-cache entries, activations. It is checked against what the device reports
as allocated (`torch.cuda.memory_allocated`), so every engine, policy and window of the process draws on one
budget and nothing has to be accounted twice. The static engines (static_engine.py) allocate rows only for the
calls that are live and grow on demand; a call whose row does not fit now waits for rows to free, and a call that
cannot fit even alone is refused before any model work, naming the sizes (`GPUMemoryExceeded`).

The sizing rule (what the engine reserves before it prefills a call):
- a static row: the static form of the policy at the call's window (rows are sized in steps: engine.py), plus the
  row's device rules (a vocabulary-sized mask and a few counters); exact, read off the static cache's own buffers
  built on the `meta` device;
- the prefill transient: the dynamic cache the prompt is prefilled into before it is copied into its row (exact
  for `full`: its buffer grows by an eighth with one layer's old copy alive while it grows; for the other
  policies their static bytes at the prompt's length plus one layer at the model's precision, an upper bound:
  `quant` and `fp8` dequantize one layer at a time), plus the activations of one prefill chunk;
- the weights, as loaded.

`agents_that_fit` turns the rule into the number of concurrent calls of one window a card holds (docs/gpu-engine.md
has the table for 24, 80 and 141 GB, computed, not measured).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

import torch

DEFAULT_FRACTION = 0.9
ENV = "LONGREAD_GPU_MEMORY"
GB = 1e9


def gpu_memory_fraction(value: float | str | None = None) -> float:
    """The share of the card the engine may use: `value`, else LONGREAD_GPU_MEMORY, else 0.9; ValueError outside
    (0, 1]."""
    raw = value if value is not None else os.environ.get(ENV) or DEFAULT_FRACTION
    try:
        fraction = float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"--gpu-memory takes a fraction of the GPU's memory between 0 and 1, got {raw!r}") from None
    if not 0 < fraction <= 1:
        raise ValueError(f"--gpu-memory takes a fraction of the GPU's memory between 0 and 1, got {raw!r}")
    return fraction


@dataclass(frozen=True)
class Meter:
    """What a device reports: its memory and what this process has allocated on it (tests pass their own)."""

    total: int
    allocated: Callable[[], int]
    name: str = "GPU"


def cuda_meter(device: Any) -> Meter:
    device = torch.device(device)
    props = torch.cuda.get_device_properties(device)
    return Meter(int(props.total_memory), lambda: int(torch.cuda.memory_allocated(device)), props.name)


class MemoryBudget:
    """`fraction` of the device's memory for everything this process allocates there."""

    def __init__(self, meter: Meter, fraction: float = DEFAULT_FRACTION):
        self.meter = meter
        self.fraction = gpu_memory_fraction(fraction)

    @property
    def limit(self) -> int:
        return int(self.meter.total * self.fraction)

    def free(self) -> int:
        return self.limit - self.meter.allocated()

    def fits(self, nbytes: int) -> bool:
        return nbytes <= self.free()

    def describe(self) -> str:
        return f"{gb(self.limit)} ({self.fraction:g} of the {gb(self.meter.total)} of {self.meter.name})"


def budget_for(device: Any, fraction: float | None = None) -> MemoryBudget | None:
    """The budget of a CUDA device; None elsewhere (the CPU engine has no memory rule of its own)."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    return MemoryBudget(cuda_meter(device), gpu_memory_fraction(fraction))


def gb(nbytes: float) -> str:
    """Bytes for a message: GB, or MB under 0.1 GB."""
    return f"{nbytes / GB:.2f} GB" if nbytes >= 0.1 * GB else f"{nbytes / 1e6:.1f} MB"


# -- the sizing rule --------------------------------------------------------------------------------------------
def weight_bytes(model: Any) -> int:
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in {id(t): t for t in tensors}.values())


def _shape(config: Any) -> tuple[int, int, int, int, int, int]:
    text = config.get_text_config()
    q_heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // q_heads
    kv_heads = getattr(text, "num_key_value_heads", None) or q_heads
    return (text.num_hidden_layers, kv_heads, q_heads, head_dim, text.hidden_size,
            getattr(text, "intermediate_size", 4 * text.hidden_size))


def static_row_bytes(policy: Any, config: Any, window: int, dtype: torch.dtype, vocab: int) -> int:
    """Bytes one row of a static engine holds: the policy's static buffers at `window`, the filled-slot mask and
    the row's device rules."""
    return _row_bytes(policy, *_shape(config)[:4], window, dtype, vocab)


@lru_cache(maxsize=256)
def _row_bytes(policy: Any, layers: int, kv_heads: int, q_heads: int, head_dim: int, window: int,
               dtype: torch.dtype, vocab: int) -> int:
    from types import SimpleNamespace

    from ..kv.static import make_static_cache
    from .device_rules import DeviceRules

    text = SimpleNamespace(num_hidden_layers=layers, num_key_value_heads=kv_heads, num_attention_heads=q_heads,
                           head_dim=head_dim, hidden_size=q_heads * head_dim)
    config = SimpleNamespace(get_text_config=lambda: text)
    cache = make_static_cache(policy, config, batch=1, window=window, device="meta", dtype=dtype)
    rules = sum(t.numel() * t.element_size() for t in DeviceRules.row_shapes(vocab))
    return cache.stored_bytes() + cache.total_slots + rules


def kv_bytes_per_token(config: Any, dtype: torch.dtype) -> int:
    layers, kv_heads, _, head_dim, _, _ = _shape(config)
    return layers * 2 * kv_heads * head_dim * torch.empty(0, dtype=dtype).element_size()


def dynamic_kv_bytes(policy: Any, config: Any, tokens: int, dtype: torch.dtype, chunk: int = 512) -> int:
    """Most bytes the dynamic cache of a call holds while `tokens` are prefilled into it (see the module doc)."""
    from ..kv.full import FullPolicy

    per_token = kv_bytes_per_token(config, dtype)
    layers = _shape(config)[0]
    if isinstance(policy, FullPolicy):
        # FullLayer's buffer: the tokens plus max(256, 1/8) spare; while a layer grows, its old buffer is alive too.
        held = tokens + max(256, tokens // 8)
        return held * per_token + held * per_token // layers
    try:
        stored = static_row_bytes(policy, config, tokens + chunk, dtype, 0)
    except ValueError:  # a policy with no static form: bounded by full's
        return dynamic_kv_bytes(FullPolicy(), config, tokens, dtype, chunk)
    return stored + (tokens + chunk) * per_token // layers


def activation_bytes(config: Any, chunk: int, context: int, dtype: torch.dtype, vocab: int) -> int:
    """A prefill chunk's transient tensors: hidden states, q/k/v, the MLP's three intermediates, the chunk's mask
    over the context, and the float32 logits of the last position (logits_to_keep=1)."""
    _, kv_heads, q_heads, head_dim, hidden, intermediate = _shape(config)
    elem = torch.empty(0, dtype=dtype).element_size()
    per_token = 4 * hidden + 3 * intermediate + (q_heads + 2 * kv_heads) * head_dim
    return chunk * per_token * elem + chunk * (context + chunk) + 8 * vocab


@dataclass(frozen=True)
class CallCost:
    """What one call needs on the device beyond the weights."""

    row: int  # its static row (0 on the eager engine: its dynamic cache is the transient)
    prefill: int  # the dynamic cache while prefilling, and one chunk's activations

    @property
    def total(self) -> int:
        return self.row + self.prefill


def call_cost(policy: Any, config: Any, *, prompt: int, window: int, dtype: torch.dtype, vocab: int,
              chunk: int, static: bool) -> CallCost:
    row = static_row_bytes(policy, config, window, dtype, vocab) if static else 0
    prefill = dynamic_kv_bytes(policy, config, prompt, dtype, chunk) + activation_bytes(config, chunk, prompt,
                                                                                         dtype, vocab)
    return CallCost(row, prefill)


def agents_that_fit(total: int, *, fraction: float, weights: int, cost: CallCost, reserve: int = 0) -> int:
    """Concurrent calls of one size that `total` bytes hold. On the static engine every call keeps its row and one
    call at a time is being prefilled (calls are admitted between steps); on the eager engine (row 0) each call
    keeps its dynamic cache. `reserve` is held aside (a prefix cache, the CUDA graphs' pools)."""
    free = int(total * fraction) - weights - reserve
    if cost.row:
        free -= cost.prefill
    per_call = cost.row or cost.prefill
    return max(0, free // max(1, per_call))
