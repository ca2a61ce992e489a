"""`sink:N`: attention sinks plus a recent window, N tokens in all.

StreamingLLM (Xiao et al. 2023, "Efficient Streaming Language Models with Attention Sinks"): models park a large
share of attention on the first few tokens whatever they say, so dropping them breaks generation; keeping those
`sinks` tokens plus the most recent N - sinks keeps a fixed-size cache fluent.

One difference from the paper: it re-assigns positions inside the cache (so a stream can run past the trained
length); we keep each token's true position (its key was rotated there), which is exact as long as the whole
call stays inside the model's window, which longread checks before every call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .base import KVLayer, KVPolicy
from .static import StaticPolicyCache


@dataclass(frozen=True)
class SinkPolicy(KVPolicy):
    budget: int
    sinks: int = 4

    def __post_init__(self) -> None:
        if self.budget <= self.sinks:
            raise ValueError(f"sink:N needs N > {self.sinks} (the attention sinks), got {self.budget}")

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"sink:{self.budget}"

    @property
    def budget_tokens(self) -> int:
        return self.budget

    def new_layer(self) -> "SinkLayer":
        return SinkLayer(self)

    def static_form(self) -> type[StaticPolicyCache]:
        return StaticSink


class SinkLayer(KVLayer):
    policy: SinkPolicy

    def get_seq_length(self) -> int:
        return 0 if self.keys is None else self.keys.shape[-2]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self.seen += key_states.shape[-2]
        if self.keys is None:
            keys, values = key_states, value_states
        else:
            keys = torch.cat([self.keys, key_states], dim=-2)
            values = torch.cat([self.values, value_states], dim=-2)
        budget, sinks = self.policy.budget, self.policy.sinks
        if keys.shape[-2] > budget:
            # The stored order is by position, so sinks are the first rows and the recent window the last.
            recent = budget - sinks
            self.keys = torch.cat([keys[..., :sinks, :], keys[..., -recent:, :]], dim=-2)
            self.values = torch.cat([values[..., :sinks, :], values[..., -recent:, :]], dim=-2)
        else:
            self.keys, self.values = keys, values
        # This forward attends to everything it had plus the new tokens; eviction shows from the next one on.
        return keys, values

    def positions(self) -> list[int]:
        """The logical positions of the stored tokens (computed: sinks, then the most recent ones)."""
        stored = self.get_seq_length()
        if stored == self.seen:
            return list(range(self.seen))
        sinks = self.policy.sinks
        return list(range(sinks)) + list(range(self.seen - (stored - sinks), self.seen))

    def tensors(self) -> dict[str, torch.Tensor]:
        return {} if self.keys is None else {"keys": self.keys, "values": self.values}

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.lazy_initialization(tensors["keys"], tensors["values"])
        self.keys, self.values = tensors["keys"], tensors["values"]


# -- the static form (kv/static.py) -------------------------------------------------------------------------------
class StaticSink(StaticPolicyCache):
    """The sinks in the first slots, then a ring: position p >= slots goes to sinks + (p - sinks) % ring."""

    policy: SinkPolicy

    def main_slots(self) -> int:
        return self.policy.budget + 1

    @property
    def ring(self) -> int:
        return self.slots - self.policy.sinks

    def _slot_of(self, p: torch.Tensor) -> torch.Tensor:
        sinks = self.policy.sinks
        return torch.where(p < self.slots, p, sinks + (p - sinks) % self.ring)

    def _slot(self, n: int) -> torch.Tensor:
        return self._slot_of(self.seen[:n])

    def _filled(self, n: int) -> torch.Tensor:
        return self._arange[None, : self.slots] <= self.seen[:n, None]

    def _count(self, n: int) -> torch.Tensor:
        return (self.seen[:n] + 1).clamp(max=self.slots)

    def _load_layer(self, row: int, index: int, layer: Any) -> tuple[int, int]:
        slots = self._slot_of(torch.tensor(layer.positions(), device=self.device))
        self.keys[index][row, :, slots] = layer.keys[0]
        self.values[index][row, :, slots] = layer.values[0]
        return layer.keys.shape[-2], 0

    def row_positions(self, row: int, index: int = 0) -> torch.Tensor:
        seen, sinks = self.host_seen[row], self.policy.sinks
        if seen <= self.policy.budget:
            return torch.arange(seen)
        # The ring's oldest slot is the next write's, never attended again: held are the budget's tokens.
        positions = torch.tensor(list(range(sinks)) + list(range(seen - (self.ring - 1), seen)))
        order = self._slot_of(positions.to(self.device)).cpu().argsort()
        return positions[order]

