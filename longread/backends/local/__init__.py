"""The local backend: Hugging Face causal LMs run in-process with transformers, under a KV cache policy."""

from .engine import LocalModel

__all__ = ["LocalModel"]
