"""`full`: keep every key and value at the model's precision (transformers' DynamicLayer): the baseline."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import FullLayer, KVPolicy
from .static import StaticPolicyCache


@dataclass(frozen=True)
class FullPolicy(KVPolicy):
    """No compression; every other policy is measured against this one."""

    @property
    def name(self) -> str:  # type: ignore[override]
        return "full"

    def new_layer(self) -> FullLayer:
        return FullLayer(self)

    def static_form(self) -> type[StaticPolicyCache]:
        return StaticFull


class StaticFull(StaticPolicyCache):
    """K and V for the whole window; a decode step writes at the filled count, nothing moves between steps."""

    def main_slots(self) -> int:
        return self.window

    def row_positions(self, row: int, index: int = 0) -> torch.Tensor:
        return torch.arange(self.host_length[row])
