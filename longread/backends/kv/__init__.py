"""KV cache policies for the local backend, selected by `--kv` strings (DESIGN.md).

| string          | policy                                                     | paper                          |
| --------------- | ---------------------------------------------------------- | ------------------------------ |
| `full`          | keep everything (a DynamicLayer grown with spare room)     | baseline                       |
| `quant:BITS`    | keys per channel, values per token, fp residual window     | KIVI (Liu et al. 2024), KVQuant |
| `sink:N`        | 4 attention sinks + the most recent tokens, N in all       | StreamingLLM (Xiao et al. 2023) |
| `snap:N`        | keep the N tokens an observation window attends to most    | SnapKV (Li et al. 2024), H2O    |
| `mixed:N:BITS`  | those N at full precision, the rest quantized, not dropped | MiKV (Yang et al. 2024)         |

    cache = make_cache("snap:1024", model.config)   # a fresh transformers Cache for one call
    model(input_ids=..., position_ids=..., past_key_values=cache)

Each policy is a small dataclass with one method, `new_layer()`. docs/kv.md explains how to add one.
"""

from __future__ import annotations

import re
from typing import Any

from .base import (
    FullLayer,
    KVLayer,
    KVPolicy,
    PolicyCache,
    bf16_bytes_per_token,
    cache_bytes,
    export_state,
    import_state,
    layer_kinds,
)
from .full import FullPolicy
from .kivi import QuantPolicy
from .mixed import MixedPolicy
from .observe import install_query_hooks, window_scores
from .sink import SinkPolicy
from .snap import SnapPolicy

__all__ = [
    "FullLayer", "FullPolicy", "KVLayer", "KVPolicy", "MixedPolicy", "PolicyCache", "QuantPolicy", "SinkPolicy",
    "SnapPolicy", "bf16_bytes_per_token", "cache_bytes", "export_state", "import_state", "install_query_hooks",
    "make_cache", "parse_policy", "validate_policy", "window_scores",
]

VALID_FORMS = (
    "full; quant:BITS with BITS 2, 4 or 8 (e.g. quant:4); sink:N, snap:N (N tokens kept per layer, N >= 8, "
    "e.g. snap:1024); mixed:N:BITS (e.g. mixed:512:2)"
)

_FORMS = [
    (re.compile(r"full"), lambda: FullPolicy()),
    (re.compile(r"quant:(\d+)"), lambda bits: QuantPolicy(bits=int(bits))),
    (re.compile(r"sink:(\d+)"), lambda n: SinkPolicy(budget=int(n))),
    (re.compile(r"snap:(\d+)"), lambda n: SnapPolicy(budget=int(n))),
    (re.compile(r"mixed:(\d+):(\d+)"), lambda n, bits: MixedPolicy(budget=int(n), bits=int(bits))),
]


def parse_policy(policy: str | KVPolicy) -> KVPolicy:
    """A policy object from its `--kv` string (a KVPolicy passes through)."""
    if isinstance(policy, KVPolicy):
        return policy
    text = str(policy).strip().lower()
    for pattern, build in _FORMS:
        match = pattern.fullmatch(text)
        if match:
            try:
                return build(*match.groups())
            except ValueError as exc:
                raise ValueError(f"KV policy {policy!r}: {exc}. Valid forms: {VALID_FORMS}") from None
    raise ValueError(f"unknown KV policy {policy!r}. Valid forms: {VALID_FORMS}")


def validate_policy(policy: str) -> str:
    """The canonical string of a valid policy (`" Quant:4 "` -> `"quant:4"`); ValueError listing the forms otherwise."""
    return parse_policy(policy).name


def make_cache(policy: str | KVPolicy, config: Any) -> Any:
    """A fresh cache for one call. `full` on a model with sliding-window layers is transformers' DynamicCache."""
    parsed = parse_policy(policy)
    if isinstance(parsed, FullPolicy) and layer_kinds(config) != {"full_attention"}:
        from transformers import DynamicCache

        return DynamicCache(config=config)
    return PolicyCache(parsed, config)
