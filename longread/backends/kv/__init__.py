"""KV cache policies for the local backend, selected by `--kv` strings (see DESIGN.md).

`make_cache(policy, config)` returns a fresh transformers Cache for one call. Only `full` exists until the
compressed policies land (issue: compressed KV caches).
"""

from __future__ import annotations

from typing import Any


def validate_policy(policy: str) -> str:
    if policy != "full":
        raise ValueError(f"unknown KV policy {policy!r}: this build knows 'full'")
    return policy


def make_cache(policy: str, config: Any) -> Any:
    from transformers import DynamicCache

    validate_policy(policy)
    return DynamicCache(config=config)
