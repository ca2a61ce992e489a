"""`full`: keep every key and value at the model's precision (transformers' DynamicLayer): the baseline."""

from __future__ import annotations

from dataclasses import dataclass

from .base import FullLayer, KVPolicy


@dataclass(frozen=True)
class FullPolicy(KVPolicy):
    """No compression; every other policy is measured against this one."""

    @property
    def name(self) -> str:  # type: ignore[override]
        return "full"

    def new_layer(self) -> FullLayer:
        return FullLayer(self)
