"""Importance scores from an observation window, for the eviction (snap) and mixed-precision (mixed) policies.

SnapKV (Li et al. 2024, "SnapKV: LLM Knows What You are Looking for Before Generation") observed that the
attention the last few prompt tokens pay to earlier tokens predicts which tokens generation will need; it scores
each key by that attention, averaged over the window's queries and smoothed by a small 1-D pooling, and keeps the
best. H2O (Zhang et al. 2023, "H2O: Heavy-Hitter Oracle") keeps the tokens that collect the most attention as the
sequence grows; applying the window score again whenever the cache outgrows its budget gives that behaviour
during decoding.

The cache API hands a layer only keys and values, so the queries come from a forward pre-hook on each attention
module (the way kvpress gets them): it recomputes the query projection of the last `window` tokens, applies the
model's own RoPE cos/sin, and passes them to the cache layer before the layer's `update` runs.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

_HOOKED = "_longread_query_hooks"


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _capture_queries(module: Any, args: tuple, kwargs: dict) -> None:
    cache = kwargs.get("past_key_values")
    if cache is None or not getattr(cache, "wants_queries", False):
        return
    layer = cache.layers[module.layer_idx]
    window = getattr(layer, "window", 0)
    hidden = kwargs.get("hidden_states", args[0] if args else None)
    rope = kwargs.get("position_embeddings")
    if not window or hidden is None or rope is None:
        return
    with torch.no_grad():
        tail = hidden[:, -window:]
        queries = module.q_proj(tail).view(*tail.shape[:2], -1, module.head_dim)
        if hasattr(module, "q_norm"):  # Qwen3, OLMo2: a norm on the query head before RoPE
            queries = module.q_norm(queries)
        queries = queries.transpose(1, 2)
        cos, sin = (t[:, -window:].unsqueeze(1) for t in rope)
        if cos.shape[-1] != queries.shape[-1]:
            return  # partial-rotary models: leave the layer to its key-based fallback
        cache.observe(module.layer_idx, queries * cos + _rotate_half(queries) * sin)


def install_query_hooks(model: Any) -> int:
    """Adds the query pre-hook to every attention module of the model (once); returns how many are hooked."""
    if getattr(model, _HOOKED, None) is not None:
        return getattr(model, _HOOKED)
    count = 0
    for module in model.modules():
        if hasattr(module, "q_proj") and hasattr(module, "layer_idx") and hasattr(module, "head_dim"):
            module.register_forward_pre_hook(_capture_queries, with_kwargs=True)
            count += 1
    setattr(model, _HOOKED, count)
    return count


def window_scores(
    queries: torch.Tensor,
    query_positions: torch.Tensor,
    keys: torch.Tensor,
    key_positions: torch.Tensor,
    pool: int = 7,
) -> torch.Tensor:
    """SnapKV scores (b, kv_heads, L): window attention on each key, averaged over the window and the query group.

    queries (b, q_heads, w, d) at query_positions (w,); keys (b, kv_heads, L, d) at key_positions (b, kv_heads, L),
    -1 for keys known to precede the window. A key after a query is masked out for that query (causality inside
    the window). Scores are pooled along the stored order, which the layers keep sorted by position.
    """
    b, q_heads, w, d = queries.shape
    kv_heads, length = keys.shape[1], keys.shape[2]
    group = q_heads // kv_heads
    # Query head i uses kv head i // group (transformers' repeat_kv order).
    q = queries.float().reshape(b, kv_heads, group * w, d)
    logits = torch.matmul(q, keys.float().transpose(-1, -2)) / math.sqrt(d)
    qpos = query_positions.to(keys.device).repeat(group)  # (group*w,) in the same order as q's rows
    future = key_positions.unsqueeze(-2) > qpos.view(1, 1, -1, 1)
    logits = logits.masked_fill(future, float("-inf"))
    scores = torch.softmax(logits, dim=-1).mean(dim=-2)
    if pool > 1 and length > 1:
        scores = F.avg_pool1d(scores.reshape(b * kv_heads, 1, length), pool, stride=1, padding=pool // 2,
                              count_include_pad=False).reshape(b, kv_heads, length)
    return scores
