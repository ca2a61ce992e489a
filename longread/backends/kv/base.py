"""What every KV policy shares: the one-method policy interface, the cache container, byte accounting, state.

A policy is a small dataclass with one method, `new_layer()`, returning a cache layer on the transformers v5
cache-layer API (`CacheLayerMixin`). `PolicyCache` holds one such layer per model layer.

Logical vs physical length. A layer's `get_seq_length()` is its *physical* length (tokens stored); the mask
built by transformers is sized from it through `get_mask_sizes`, and every stored token lies in the past of the
tokens being fed, so any order of stored tokens gives the right causal mask. The *logical* length (`seen`) keeps
counting every token fed; callers pass explicit `position_ids`, so RoPE keeps using true positions after eviction
(the keys were rotated at their true positions when they were computed).
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

import torch
from transformers.cache_utils import Cache, CacheLayerMixin, DynamicLayer

if TYPE_CHECKING:
    from .static import StaticPolicyCache


class KVPolicy(ABC):
    """A KV cache policy: one method, a fresh cache layer for one model layer; optionally its static form."""

    name: str = "policy"

    @abstractmethod
    def new_layer(self) -> CacheLayerMixin: ...

    def static_form(self) -> type[StaticPolicyCache] | None:
        """The static-shape twin of this policy's layers for the batched GPU engine (kv/static.py), defined in
        the policy's own module; None (the default): the policy runs on the eager engine. Found by inheritance,
        so a subclass runs on its parent's form: one whose layers keep other tokens overrides this (its own form,
        or None)."""
        return None

    @property
    def budget_tokens(self) -> int | None:
        """Most tokens kept at full precision per layer and head, or None when unbounded."""
        return None

    def __str__(self) -> str:
        return self.name


class CacheAttention:
    """What a layer may return from `update` in place of its keys, to compute its own attention: the batched and
    static engines' caches do (longread.backends.local.attention routes the model's attention to `attend`)."""

    def attend(self, module: Any, query: torch.Tensor, scaling: float, inner: Any, **kwargs: Any) -> torch.Tensor:
        """The attention output (batch, q_len, heads, head_dim) for query (batch, heads, q_len, head_dim);
        `inner` is the model's own attention function, for layers that delegate to it."""
        raise NotImplementedError


class KVLayer(CacheLayerMixin):
    """Base of the compressed layers: byte accounting, logical length, state for the prefix cache."""

    is_sliding = False
    is_compileable = False
    is_croppable = False
    wants_queries = False  # True for layers that score tokens with the queries of an observation window

    def __init__(self, policy: KVPolicy) -> None:
        super().__init__()
        self.policy = policy
        self.seen = 0  # logical length: every token ever fed to this layer

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        self.is_initialized = True

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.get_seq_length() + query_length, 0

    def get_max_length(self) -> int:
        return -1

    def observe(self, queries: torch.Tensor) -> None:
        """Queries (b, heads, w, d) of the last w tokens about to be fed, RoPE applied; ignored unless wanted."""

    @abstractmethod
    def tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor this layer keeps (K/V, codes, scales, zero points, bookkeeping), by name."""

    @abstractmethod
    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """The inverse of tensors(), for a layer restored from disk."""

    def stored_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors().values())

    def reset(self) -> None:
        type(self).__init__(self, self.policy)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        raise NotImplementedError("compressed KV caches run at batch size 1 (no beam search)")

    def offload(self) -> None:  # the compressed layers keep their state on the model's device
        pass

    def prefetch(self) -> None:
        pass


class FullLayer(DynamicLayer):
    """transformers' DynamicLayer (keep everything), with the accounting the other layers have.

    DynamicLayer appends with `torch.cat`, which copies the whole layer on every decode step: at 3,500 tokens that
    is 86 MB per token for Qwen2.5-0.5B (4% of the weight bytes a step reads) and 160 MB for SmolLM2-135M (30%).
    This layer writes into a buffer with room to spare instead (at least GROW_MIN tokens or 1/GROW_FRACTION more
    than needed), so a decode step writes one token; `keys` / `values` are views of the filled part. The values
    attention sees are the same, so the logits are bit-identical to DynamicLayer's (tests/test_kv_policies.py).
    """

    wants_queries = False
    GROW_MIN = 256
    GROW_FRACTION = 8

    def __init__(self, policy: KVPolicy | None = None) -> None:
        super().__init__()
        self.policy = policy
        self.seen = 0
        self._key_buffer: torch.Tensor | None = None
        self._value_buffer: torch.Tensor | None = None

    def reset(self) -> None:
        super().reset()
        self.seen = 0
        self._key_buffer = self._value_buffer = None

    def update(self, key_states, value_states, *args, **kwargs):
        self.seen += key_states.shape[-2]
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        used = self.get_seq_length()
        needed = used + key_states.shape[-2]
        if not self._fits(needed, key_states):
            capacity = needed + max(self.GROW_MIN, needed // self.GROW_FRACTION)
            shape = (*key_states.shape[:-2], capacity, key_states.shape[-1])
            keys = key_states.new_empty(shape)
            values = value_states.new_empty((*shape[:-1], value_states.shape[-1]))
            if used:
                keys[..., :used, :] = self.keys
                values[..., :used, :] = self.values
            self._key_buffer, self._value_buffer = keys, values
        self._key_buffer[..., used:needed, :] = key_states
        self._value_buffer[..., used:needed, :] = value_states
        self.keys = self._key_buffer[..., :needed, :]
        self.values = self._value_buffer[..., :needed, :]
        return self.keys, self.values

    def _fits(self, needed: int, key_states: torch.Tensor) -> bool:
        """The buffer has room and `keys` is still its prefix (crop keeps that; the batch methods replace it)."""
        buffer = self._key_buffer
        if buffer is None or needed > buffer.shape[-2] or buffer.shape[:-2] != key_states.shape[:-2]:
            return False
        if not self.get_seq_length():
            return True
        return self.keys.data_ptr() == buffer.data_ptr() and self.values.data_ptr() == self._value_buffer.data_ptr()

    def __deepcopy__(self, memo: dict) -> "FullLayer":
        """A compact copy (the filled part only): the prefix cache stores snapshots, which never grow."""
        twin = object.__new__(type(self))
        memo[id(self)] = twin
        for name, value in self.__dict__.items():
            if name not in ("keys", "values", "_key_buffer", "_value_buffer"):
                twin.__dict__[name] = copy.deepcopy(value, memo)
        twin._key_buffer = twin._value_buffer = None
        keys, values = self.__dict__.get("keys"), self.__dict__.get("values")
        twin.keys = keys.clone() if isinstance(keys, torch.Tensor) else keys
        twin.values = values.clone() if isinstance(values, torch.Tensor) else values
        return twin

    def observe(self, queries: torch.Tensor) -> None:
        pass

    def tensors(self) -> dict[str, torch.Tensor]:
        if not self.is_initialized or self.keys is None:
            return {}
        return {"keys": self.keys, "values": self.values}

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.lazy_initialization(tensors["keys"], tensors["values"])
        self.keys, self.values = tensors["keys"], tensors["values"]
        self._key_buffer = self._value_buffer = None

    def stored_bytes(self) -> int:
        """Bytes of the filled part; the spare room (at most 1/GROW_FRACTION + GROW_MIN tokens) is not counted."""
        return sum(t.numel() * t.element_size() for t in self.tensors().values())


class PolicyCache(Cache):
    """One policy layer per model layer; tracks the peak of what it stores between forward passes."""

    def __init__(self, policy: KVPolicy, config: Any):
        check_supported(policy, config)
        n_layers = config.get_text_config().num_hidden_layers
        super().__init__(layers=[policy.new_layer() for _ in range(n_layers)])
        self.policy = policy
        self.peak_bytes = 0
        self.peak_tokens = 0
        # Read by the query hook of every attention module on every forward: an attribute, not a property.
        self.wants_queries = any(getattr(layer, "wants_queries", False) for layer in self.layers)

    def observe(self, layer_idx: int, queries: torch.Tensor) -> None:
        self.layers[layer_idx].observe(queries)

    def update(self, key_states, value_states, layer_idx: int, *args, **kwargs):
        out = super().update(key_states, value_states, layer_idx, *args, **kwargs)
        if layer_idx == len(self.layers) - 1:
            # After the last layer of a forward pass: what the cache holds until the next one.
            self.peak_bytes = max(self.peak_bytes, self.stored_bytes())
            self.peak_tokens = max(self.peak_tokens, self.get_seq_length())
        return out

    def stored_bytes(self) -> int:
        return sum(layer.stored_bytes() for layer in self.layers)

    @property
    def seen_tokens(self) -> int:
        return self.layers[0].seen if self.layers else 0


def check_supported(policy: KVPolicy, config: Any) -> None:
    """Compressed layers replace every layer's cache, so a model with sliding-window or linear layers is refused."""
    kinds = layer_kinds(config)
    if kinds - {"full_attention"}:
        raise ValueError(
            f"KV policy {policy} needs a model whose layers all use full attention; this one has {sorted(kinds)}"
            " (use --kv full)"
        )


def layer_kinds(config: Any) -> set[str]:
    text = config.get_text_config()
    if getattr(text, "layer_types", None):
        return set(text.layer_types)
    if getattr(text, "sliding_window", None) and getattr(text, "use_sliding_window", True):
        return {"sliding_attention"}
    return {"full_attention"}


def cache_bytes(cache: Any) -> int:
    """Bytes a cache really stores: every tensor of every layer (codes, scales, zero points, residuals included)."""
    if hasattr(cache, "stored_bytes"):
        return int(cache.stored_bytes())
    total = 0
    for layer in getattr(cache, "layers", []):
        for t in (getattr(layer, "keys", None), getattr(layer, "values", None)):
            if isinstance(t, torch.Tensor):
                total += t.numel() * t.element_size()
    return total


def bf16_bytes_per_token(config: Any) -> int:
    """What one token costs in a plain bf16 cache of this model: the baseline every ratio is taken against."""
    text = config.get_text_config()
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    kv_heads = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
    return text.num_hidden_layers * 2 * kv_heads * head_dim * 2


# -- state, for the prefix cache on disk --------------------------------------------------------------------------
def export_state(cache: Any) -> dict[str, Any]:
    """Plain dicts of tensors and ints (loadable with torch.load(weights_only=True))."""
    layers = []
    for layer in cache.layers:
        # contiguous(): a FullLayer view would otherwise save its whole buffer, spare room included.
        state: dict[str, Any] = {k: v.detach().contiguous() for k, v in layer.tensors().items()}
        state["__seen__"] = int(getattr(layer, "seen", 0))
        layers.append(state)
    return {"layers": layers}


def import_state(cache: Any, state: dict[str, Any], device: torch.device | str | None = None) -> Any:
    """Fills a fresh cache from export_state's dict; returns it."""
    for layer, saved in zip(cache.layers, state["layers"]):
        saved = dict(saved)
        seen = int(saved.pop("__seen__", 0))
        tensors = {k: (v.to(device) if device is not None else v) for k, v in saved.items()}
        if tensors:
            layer.load_tensors(tensors)
        layer.seen = seen
    return cache
