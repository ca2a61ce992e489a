"""`mixed:N:BITS`: the N most important tokens at full precision, the rest quantized to BITS instead of dropped.

MiKV (Yang et al. 2024, "No Token Left Behind: Reliable KV Cache Compression via Importance-Aware Mixed
Precision Quantization"): eviction loses context for good and can derail generation; keeping evicted tokens at
low precision retains most of the benefit at a fraction of the bytes. Importance is SnapKV's window score (see
snap.py); tokens leave the full-precision set in blocks of G per head, quantized with KIVI's layout (keys per
channel over the block, values per token). The full-precision set never exceeds N tokens between forward
passes; the low-precision part grows with the text at BITS/16 of the full cost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .quantize import SUPPORTED_BITS, QuantizedBlocks, value_group
from .snap import ScoredLayer, ScoredPolicy, StaticSnap, default_window
from .static import StaticPolicyCache
from .static_codes import QuantizedAttention


@dataclass(frozen=True)
class MixedPolicy(ScoredPolicy):
    budget: int
    bits: int
    window: int = field(default=0)  # 0: min(32, N // 4)
    group: int = field(default=0)  # 0: min(64, N - window): tokens demoted (and quantized) together
    value_group: int = 128
    pool: int = 7

    def __post_init__(self) -> None:
        if self.bits not in SUPPORTED_BITS:
            raise ValueError(f"mixed:N:BITS takes BITS in {SUPPORTED_BITS}, got {self.bits}")
        if self.budget < 8:
            raise ValueError(f"mixed:N:BITS needs N >= 8, got {self.budget}")
        if not self.window:
            object.__setattr__(self, "window", default_window(self.budget))
        if not self.group:
            object.__setattr__(self, "group", min(64, self.budget - self.window))
        if self.group > self.budget - self.window:
            raise ValueError(f"mixed: group {self.group} must be at most N - window = {self.budget - self.window}")

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"mixed:{self.budget}:{self.bits}"

    @property
    def budget_tokens(self) -> int:
        return self.budget

    def new_layer(self) -> "MixedLayer":
        return MixedLayer(self)

    def static_form(self) -> type[StaticPolicyCache]:
        return StaticMixed


class MixedLayer(ScoredLayer):
    policy: MixedPolicy

    def __init__(self, policy: MixedPolicy) -> None:
        super().__init__(policy)
        self.low: QuantizedBlocks | None = None

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        groups = value_group(key_states.shape[-1], self.policy.value_group)
        self.low = QuantizedBlocks(self.policy.bits, self.policy.group, groups)

    @property
    def full_precision_tokens(self) -> int:
        return super().get_seq_length()

    def get_seq_length(self) -> int:
        return self.full_precision_tokens + (len(self.low) if self.low is not None else 0)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        self._append(key_states, value_states)
        assert self.low is not None
        if len(self.low):
            keys, values = self.low.dequantize_with(self.keys, self.values)
        else:
            keys, values = self.keys, self.values
        over = self.full_precision_tokens - self.policy.budget
        if over > 0:
            group = self.policy.group
            demote = -(-over // group) * group
            # Score against every key this forward sees, so the softmax is the model's; low-precision keys all
            # precede the window (position -1).
            low_count = keys.shape[-2] - self.full_precision_tokens
            b, h = self.positions.shape[:2]
            positions = torch.cat([self.positions.new_full((b, h, low_count), -1), self.positions], dim=-1)
            scores = self._scores(keys, positions)[..., low_count:]
            order = scores.argsort(dim=-1)  # ascending: the least important first
            drop, keep = order[..., :demote].sort(dim=-1).values, order[..., demote:]
            index = drop.unsqueeze(-1).expand(-1, -1, -1, self.keys.shape[-1])
            self.low.append(self.keys.gather(-2, index), self.values.gather(-2, index))
            self._select(keep)
        return keys, values

    def tensors(self) -> dict[str, torch.Tensor]:
        out = super().tensors()
        if self.low is not None:
            out.update({f"q_{k}": v for k, v in self.low.tensors().items()})
        return out

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        super().load_tensors(tensors)
        assert self.low is not None
        self.low.load({k[2:]: v for k, v in tensors.items() if k.startswith("q_")})


# -- the static form (kv/static.py) -------------------------------------------------------------------------------
class StaticMixed(QuantizedAttention, StaticSnap):
    """snap's full-precision set (N + 1 slots, positions, the query ring) and quant's codes for the demoted."""

    policy: MixedPolicy

    def _load_layer(self, row: int, index: int, layer: Any) -> tuple[int, int]:
        return self._load_scored(row, index, layer), self.codes[index].load(row, layer.low)

    def _evict(self, row: int) -> None:
        """MiKV's demotion, as MixedLayer.update does it: the least attended block goes into codes."""
        p = self.policy
        length, low = self.host_length[row], self.host_low[row]
        over = length - p.budget
        demote = -(-over // p.group) * p.group
        for index in range(self.n_layers):
            fp_keys = self.keys[index][row : row + 1, :, :length]
            fp_values = self.values[index][row : row + 1, :, :length]
            positions = self.positions[index][row : row + 1, :, :length]
            if low:
                low_keys, _ = self.codes[index].dequantize(row, low, self.dtype)
                keys = torch.cat([low_keys, fp_keys], dim=2)
            else:
                keys = fp_keys
            all_positions = torch.cat([positions.new_full((1, self.kv_heads, low), -1), positions], dim=-1)
            scores = self._scores(row, index, keys, all_positions)[..., low:]
            order = scores.argsort(dim=-1)
            drop, keep = order[..., :demote].sort(dim=-1).values, order[..., demote:]
            gather = drop.unsqueeze(-1).expand(-1, -1, -1, self.head_dim)
            self.codes[index].append(row, low, fp_keys.gather(-2, gather), fp_values.gather(-2, gather))
            self._keep(row, index, keep, length)
        self.length[row] = length - demote
        self.low[row] = low + demote
        self.host_length[row] = length - demote
        self.host_low[row] = low + demote

