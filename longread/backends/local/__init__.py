"""The local backend: Hugging Face causal LMs run in-process with transformers, under a KV cache policy.

`LocalModel` is imported on first use (PEP 562), so `local.weights` (the cache folder, the embedded model's name)
can be read without loading torch and transformers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["LocalModel"]


def __getattr__(name: str) -> Any:
    if name == "LocalModel":
        from .engine import LocalModel

        globals()["LocalModel"] = LocalModel
        return LocalModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if TYPE_CHECKING:
    from .engine import LocalModel
