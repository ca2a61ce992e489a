"""Letting a cache compute its own attention: the hook the batched and static engines need.

transformers' attention modules call `past_key_values.update(k, v, layer)` and hand what it returns to the
attention function named by `config._attn_implementation`. Two engines need more than "return the keys":
- the batched engine (batching.py) keeps one cache per sequence, of different lengths and policies, so each
  sequence's attention runs over its own keys (no padding, no copy of the caches into one tensor);
- the static engine (static_engine.py) keeps fixed-size buffers whose filled slots a mask marks, and for
  `quant`/`mixed` reads the codes directly (a fused kernel on CUDA, quant_attention.py) instead of dequantizing
  the whole cache first.

So those caches return a `CacheAttention` object in place of the key tensor, and `install(model)` registers (with
transformers' AttentionInterface, the library's extension point for this) a function that asks that object for
the attention output; for ordinary tensors it calls the model's own attention function with the same arguments,
so every other call computes exactly what it computed before (tests/test_gpu_engine.py checks the logits are
bit-identical).
"""

from __future__ import annotations

import sys
import threading
from typing import Any, Callable

import torch

from ..kv.base import CacheAttention

NAME = "longread"
_INSTALL_LOCK = threading.Lock()


def _inner_function(module: Any, name: str) -> Callable:
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if name != "eager" and name in ALL_ATTENTION_FUNCTIONS:
        return ALL_ATTENTION_FUNCTIONS[name]
    # Each model family has its own eager function, next to its attention module.
    return getattr(sys.modules[type(module).__module__], "eager_attention_forward")


def dispatch(module: Any, query: torch.Tensor, key: Any, value: Any, attention_mask: Any, **kwargs: Any):
    inner = module._longread_inner
    if isinstance(key, CacheAttention):
        scaling = kwargs.pop("scaling", None)
        if scaling is None:
            scaling = query.shape[-1] ** -0.5
        kwargs.pop("dropout", None)
        return key.attend(module, query, scaling, inner, **kwargs), None
    return inner(module, query, key, value, attention_mask, **kwargs)


def install(model: Any) -> bool:
    """Routes the model's attention through `dispatch` (once); False when its attention modules are not the
    functional kind (then the batched and static engines are not used for it)."""
    with _INSTALL_LOCK:
        config = model.config
        if getattr(model, "_longread_attention", None) is not None:
            return True
        from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
        from transformers.modeling_utils import AttentionInterface

        # transformers has no public getter for the implementation a model runs; `config._attn_implementation` is
        # the property its own modeling code reads (pinned: transformers>=5.23,<5.24 in pyproject.toml).
        original = config._attn_implementation or "eager"
        if original == NAME:
            return True
        modules = [m for m in model.modules() if hasattr(m, "layer_idx") and hasattr(m, "q_proj")]
        if not modules:
            return False
        for module in modules:
            module._longread_inner = _inner_function(module, original)
        AttentionInterface.register(NAME, dispatch)
        # The mask the model builds for its own calls stays the one its attention function expects.
        mask_name = original if original in ALL_MASK_ATTENTION_FUNCTIONS else "eager"
        AttentionMaskInterface.register(NAME, ALL_MASK_ATTENTION_FUNCTIONS[mask_name])
        model.set_attn_implementation(NAME)  # transformers' public setter: the config and every sub-model's
        if config._attn_implementation != NAME:  # a model that cannot switch (transformers warned): engines not used
            return False
        model._longread_attention = original
        return True


def original_implementation(model: Any) -> str:
    return getattr(model, "_longread_attention", None) or model.config._attn_implementation or "eager"


def causal_mask(inner_name: str, past: int, q_len: int, dtype: torch.dtype, device: Any) -> torch.Tensor | None:
    """The mask a chunk of q_len queries after `past` stored keys needs, in the form the model's attention takes
    (bool for sdpa, additive for eager); None for one query (it sees every key)."""
    if q_len == 1:
        return None
    keys = torch.arange(past + q_len, device=device)
    allowed = keys[None, :] <= (past + torch.arange(q_len, device=device))[:, None]
    allowed = allowed[None, None]
    if inner_name == "sdpa":
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill(~allowed, torch.finfo(dtype).min)
