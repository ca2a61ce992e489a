"""`quant:BITS`: KIVI-style quantized cache at 2, 4 or 8 bits.

KIVI (Liu et al. 2024, "KIVI: A Tuning-Free Asymmetric 2bit Quantization for KV Cache"): keys quantized per
channel over blocks of G tokens, values per token over groups of channels, and a full-precision residual window
of the most recent tokens, which stay exact until a whole block of G older tokens can be quantized at once.
KVQuant (Hooper et al. 2024) motivates the same per-channel treatment of keys.

Our defaults differ from the paper's (G=32, R=128). The float16 scale and zero point of each group cost 4 bytes,
so the group size sets how close to bits/16 the cache gets. At 4 and 8 bits, G=128 tokens per key block and one
value group per head (up to 128 channels): 4 bits then store 0.55 bytes per element on SmolLM2 (head dim 64),
3.66x fewer than bf16 once the residual is amortized, where G=32 stops near 3.2x. At 2 bits, G=64 (6.4x
amortized) with the clipping search of quantize.py. R=32 recent tokens stay at full precision.

The first `sinks` tokens (4) stay exact as well. They are the attention sinks of StreamingLLM: most heads put
much of their attention on them, their keys are outliers, and quantized with the rest they would set the range
of every channel of the first block. IntactKV (Liu et al. 2024, "IntactKV: Improving Large Language Model
Quantization by Keeping Pivot Tokens Intact") keeps them lossless for the same reason. On SmolLM2 they halved
the perplexity damage at 2 bits, and with them 128-token key blocks at 4 bits found every needle that `full`
found (without them, half). benchmarks/kv.py and docs/benchmarks.md have the figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .base import KVLayer, KVPolicy
from .quantize import SUPPORTED_BITS, QuantizedBlocks, value_group
from .static import StaticPolicyCache
from .static_codes import QuantizedAttention


@dataclass(frozen=True)
class QuantPolicy(KVPolicy):
    bits: int
    group: int = 0  # tokens per key block; 0: 64 at 2 bits, else 128
    value_group: int = 0  # channels per value group (capped at the head dim); 0: same as group
    residual: int = 32  # most recent tokens always kept at full precision
    sinks: int = 4  # first tokens always kept at full precision (attention sinks)

    def __post_init__(self) -> None:
        if self.bits not in SUPPORTED_BITS:
            raise ValueError(f"quant:BITS takes BITS in {SUPPORTED_BITS}, got {self.bits}")
        if not self.group:
            object.__setattr__(self, "group", 64 if self.bits == 2 else 128)
        if not self.value_group:
            object.__setattr__(self, "value_group", self.group)

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"quant:{self.bits}"

    def new_layer(self) -> "QuantLayer":
        return QuantLayer(self)

    def static_form(self) -> type[StaticPolicyCache]:
        return StaticQuant


class QuantLayer(KVLayer):
    """Stored as [quantized blocks][sinks + residual]: `keys`/`values` hold the exact tokens, the sinks first.

    Every stored token precedes the tokens being fed, so the stored order does not change the causal mask
    (base.py), and keeping the sinks at the front of the exact part costs no extra copy per step.
    """

    policy: QuantPolicy

    def __init__(self, policy: QuantPolicy) -> None:
        super().__init__(policy)
        self.store: QuantizedBlocks | None = None

    @property
    def sink_count(self) -> int:
        """The sinks are the first tokens ever fed, so their count follows from the logical length."""
        return min(self.policy.sinks, self.seen)

    def get_seq_length(self) -> int:
        exact = 0 if self.keys is None else self.keys.shape[-2]
        return exact + (len(self.store) if self.store is not None else 0)

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        head_dim = key_states.shape[-1]
        self.store = QuantizedBlocks(self.policy.bits, self.policy.group, value_group(head_dim, self.policy.value_group))

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        assert self.store is not None
        self.seen += key_states.shape[-2]
        if self.keys is None:
            self.keys, self.values = key_states, value_states
        else:
            self.keys = torch.cat([self.keys, key_states], dim=-2)
            self.values = torch.cat([self.values, value_states], dim=-2)
        if len(self.store):
            keys, values = self.store.dequantize_with(self.keys, self.values)
        else:
            keys, values = self.keys, self.values
        # Quantize whole blocks of the oldest non-sink tokens, leaving at least `residual` at full precision.
        sinks, group = self.sink_count, self.policy.group
        flush = (self.keys.shape[-2] - sinks - self.policy.residual) // group * group
        if flush > 0:
            end = sinks + flush
            self.store.append(self.keys[..., sinks:end, :], self.values[..., sinks:end, :])
            # A fresh tensor either way: a slice would keep the whole pre-flush tensor alive.
            self.keys = torch.cat([self.keys[..., :sinks, :], self.keys[..., end:, :]], dim=-2)
            self.values = torch.cat([self.values[..., :sinks, :], self.values[..., end:, :]], dim=-2)
        return keys, values

    def tensors(self) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        if self.keys is not None:
            out.update(keys=self.keys, values=self.values)
        if self.store is not None:
            out.update({f"q_{k}": v for k, v in self.store.tensors().items()})
        return out

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        # The exact part is never None once a token was fed (it keeps the sinks and at least `residual` tokens).
        self.lazy_initialization(tensors["keys"], tensors["values"])
        self.keys, self.values = tensors["keys"], tensors["values"]
        assert self.store is not None
        self.store.load({k[2:]: v for k, v in tensors.items() if k.startswith("q_")})


# -- the static form (kv/static.py) -------------------------------------------------------------------------------
class StaticQuant(QuantizedAttention, StaticPolicyCache):
    """Codes for the window; the exact part holds the sinks, then the residual in order, with room for one more
    block: when it is full, the block after the sinks is quantized and the rest shifts down (the dynamic rule)."""

    policy: QuantPolicy

    def main_slots(self) -> int:
        p = self.policy
        return p.sinks + p.residual + p.group

    def _load_layer(self, row: int, index: int, layer: Any) -> tuple[int, int]:
        length, _ = super()._load_layer(row, index, layer)
        return length, self.codes[index].load(row, layer.store)

    def load_row(self, row: int, cache: Any) -> None:
        if cache.layers[0].seen < self.policy.sinks:
            raise ValueError("the static quant form needs at least the sink tokens in the prompt")
        super().load_row(row, cache)

    def _maintain(self) -> None:
        for row in range(self.active):
            if self.host_length[row] == self.slots:
                self._flush(row)

    def _flush(self, row: int) -> None:
        p = self.policy
        sinks, group, at = p.sinks, p.group, self.host_low[row]
        for index in range(self.n_layers):
            keys, values = self.keys[index], self.values[index]
            self.codes[index].append(row, at, keys[row : row + 1, :, sinks : sinks + group],
                                     values[row : row + 1, :, sinks : sinks + group])
            rest = self.slots - sinks - group
            keys[row, :, sinks : sinks + rest] = keys[row, :, sinks + group :].clone()
            values[row, :, sinks : sinks + rest] = values[row, :, sinks + group :].clone()
        self.length[row] = self.slots - group
        self.low[row] = at + group
        self.host_length[row] = self.slots - group
        self.host_low[row] = at + group

    def row_positions(self, row: int, index: int = 0) -> torch.Tensor:
        sinks, seen, length = self.policy.sinks, self.host_seen[row], self.host_length[row]
        return torch.tensor(list(range(sinks)) + list(range(seen - (length - sinks), seen)))

