"""What the static-shape forms of the KV policies share: buffers allocated once for a batch of rows, so that one
decode step has fixed shapes and fixed addresses (what a CUDA graph needs; docs/gpu-engine.md).

Each row holds one sequence. A row is filled from the sequence's dynamic cache after its (eager, chunked)
prefill (`load_row`), so a reused prefix loads straight in. A decode step writes each row's new key and value
into a slot computed on the device from the row's counters, and attention runs over the whole buffer with the
unfilled slots masked. What changes the layout (snap's eviction, quant's flush of a full block into codes,
mixed's demotion) happens between steps, per row, eagerly, at steps the host knows from the counts alone (no
read of the device), with the same functions the dynamic layers use, so a static cache holds the same tokens as
the dynamic one at every step:

| policy | buffers per layer (rows x kv heads x slots) | decode step | between steps |
| --- | --- | --- | --- |
| `full` | K, V at the window | slot = filled count | nothing |
| `sink:N` | K, V at N + 1: 4 sinks and a ring of N - 3 | slot = the ring's next | nothing |
| `snap:N` | K, V, positions at N + 1; the last `window` queries (a ring) | slot = filled count | at N + 1 filled: the dynamic rule's top-k down to N - slack |
| `quant:B` | codes, scales, zero points for the window; an exact part of sinks + residual + one block | exact slot = its filled count | at a full block: quantize it, shift the residual down |
| `mixed:N:B` | snap's buffers (the full-precision set) and quant's codes | slot = filled count | at N + 1: demote a block of the least attended into codes |
| `fp8` | e4m3 codes and a scale per token and head, for the window | slot = filled count, quantized on the device | nothing |

Each form lives beside its policy (full.py, sink.py, snap.py, kivi.py, mixed.py, fp8.py) on this module's
machinery; a policy names it with `static_form()` (base.KVPolicy), so a subclass runs on its parent's form and a
new policy is one module. A policy without one (the default) runs on the eager engine.

Why the extra slot: the dynamic layers attend to what they stored plus the new token, then evict. A static
layer writes the new token first, so it needs room for the budget plus one to attend to the same keys.

Attention is the layer's own (`attend`, through longread.backends.local.attention): SDPA over the buffer with the
filled-slot mask; for `quant` and `mixed`, over the dequantized codes followed by the exact part (the reference
path, static_codes.py), or the fused kernel of quant_attention.py on CUDA, which reads the codes and stops at the
filled count.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from transformers.cache_utils import Cache, CacheLayerMixin

from .base import CacheAttention, KVPolicy


def _form_of(policy: Any) -> type["StaticPolicyCache"] | None:
    return policy.static_form() if isinstance(policy, KVPolicy) else None


def static_supported(policy: Any) -> bool:
    """Whether `policy` has a static form (its own, or its parent's); those without one run eagerly."""
    return _form_of(policy) is not None


def grouped_attention(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
                      scaling: float) -> torch.Tensor:
    """SDPA of one-token queries (n, q_heads, 1, d) over (n, kv_heads, S, d) with a (n, 1, 1, S) mask;
    (n, 1, q_heads, d). The query heads of a group become the query rows of their kv head (transformers'
    repeat_kv order: head i reads kv head i // group), so no backend expands the keys for GQA, and the masked
    memory-efficient kernel takes it on CUDA (`enable_gqa` with a mask may leave only the math path there)."""
    n, q_heads, q_len, d = query.shape
    kv_heads = keys.shape[1]
    if q_len == 1 and q_heads != kv_heads:
        out = F.scaled_dot_product_attention(query.reshape(n, kv_heads, q_heads // kv_heads, d), keys, values,
                                             attn_mask=mask, scale=scaling)
        return out.reshape(n, q_heads, 1, d).transpose(1, 2)
    out = F.scaled_dot_product_attention(query, keys, values, attn_mask=mask, scale=scaling,
                                         enable_gqa=q_heads != kv_heads)
    return out.transpose(1, 2)


class _Handle(CacheAttention):
    """Returned by a static layer's update in place of its keys: the attention dispatcher calls `attend`."""

    __slots__ = ("cache", "index")

    def __init__(self, cache: "StaticPolicyCache", index: int):
        self.cache, self.index = cache, index

    def attend(self, module, query, scaling, inner, **kwargs):
        return self.cache.attend(self.index, query, scaling)


class StaticLayer(CacheLayerMixin):
    """One model layer's view of a StaticPolicyCache: its update writes into the cache's buffers."""

    is_sliding = False
    is_compileable = True
    is_croppable = False

    def __init__(self, cache: "StaticPolicyCache", index: int):
        super().__init__()
        self.cache, self.index = cache, index
        self.window = getattr(cache.policy, "window", 0)
        self.is_initialized = True
        self._handle = _Handle(cache, index)

    def lazy_initialization(self, key_states, value_states):  # buffers are allocated by the cache
        pass

    def update(self, key_states, value_states, *args, **kwargs):
        self.cache.write(self.index, key_states, value_states)
        return self._handle, self._handle

    def get_seq_length(self) -> int:
        return self.cache.slots

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.cache.slots, 0

    def get_max_cache_shape(self) -> int:
        return self.cache.slots

    def get_max_length(self) -> int:
        return self.cache.slots

    def reset(self) -> None:
        pass


class StaticPolicyCache(Cache):
    """Fixed buffers for `batch` rows under one policy; `window` bounds a row's logical length (prompt + answer).

    Device counters (one per row, shared by every layer, since every layer stores the same number of tokens):
    `seen` (the row's logical length), `length` (filled full-precision slots), `low` (tokens held as codes).
    The host keeps a mirror of them (`host_*`) to schedule the between-step work without reading the device.
    `active` is how many leading rows a step runs over (the engine keeps the live rows first)."""

    def __init__(self, policy: Any, config: Any, *, batch: int, window: int, device: Any, dtype: torch.dtype):
        text = config.get_text_config()
        self.policy = policy
        self.batch, self.window = batch, window
        self.device, self.dtype = torch.device(device), dtype
        self.n_layers = text.num_hidden_layers
        self.kv_heads = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
        self.q_heads = text.num_attention_heads
        self.head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        super().__init__(layers=[StaticLayer(self, i) for i in range(self.n_layers)])
        self.wants_queries = False
        self.active = batch
        zeros = lambda: torch.zeros(batch, dtype=torch.long, device=self.device)  # noqa: E731
        self.seen, self.length, self.low = zeros(), zeros(), zeros()
        self.host_seen, self.host_length, self.host_low = [0] * batch, [0] * batch, [0] * batch
        self.write_slot = zeros()
        self._allocate()
        self.mask = torch.zeros(batch, 1, 1, self.total_slots, dtype=torch.bool, device=self.device)
        self._arange = torch.arange(self.total_slots, device=self.device)

    # -- shapes ---------------------------------------------------------------------------------------------
    def _buffer(self, slots: int, dim: int | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
        return torch.zeros(self.batch, self.kv_heads, slots, self.head_dim if dim is None else dim,
                           dtype=dtype or self.dtype, device=self.device)

    def _allocate(self) -> None:
        self.slots = self.main_slots()
        self.keys = [self._buffer(self.slots) for _ in range(self.n_layers)]
        self.values = [self._buffer(self.slots) for _ in range(self.n_layers)]

    def main_slots(self) -> int:
        raise NotImplementedError

    @property
    def total_slots(self) -> int:
        return self.slots

    def stored_bytes(self) -> int:
        """Bytes allocated (every row, every slot): what the static form costs, not what one row fills."""
        return sum(t.numel() * t.element_size() for t in self.tensors())

    def tensors(self) -> list[torch.Tensor]:
        return [*self.keys, *self.values]

    def row_tensors(self) -> list[torch.Tensor]:
        """Every tensor with a row dimension first (moved together by move_row)."""
        return [*self.tensors(), self.seen, self.length, self.low]

    # -- the step (fixed shapes) ----------------------------------------------------------------------------
    def begin_step(self) -> None:
        """Write slots and the filled-slot mask of the active rows, from the device counters."""
        n = self.active
        self.write_slot[:n].copy_(self._slot(n))
        self.mask[:n, 0, 0].copy_(self._filled(n))

    def end_step(self) -> None:
        """The device counters after a step (inside the step, so a CUDA graph replays it)."""
        n = self.active
        self.seen[:n] += 1
        self.length[:n] += 1

    def _slot(self, n: int) -> torch.Tensor:
        return self.length[:n].clamp(max=self.slots - 1)

    def _filled(self, n: int) -> torch.Tensor:
        return self._arange[None, : self.slots] <= self.length[:n, None]

    def _scatter(self, buffer: torch.Tensor, slot: torch.Tensor, states: torch.Tensor) -> None:
        n = states.shape[0]
        index = slot.view(n, 1, 1, 1).expand(n, states.shape[1], 1, states.shape[-1])
        buffer[:n].scatter_(2, index, states)

    def write(self, index: int, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        slot = self.write_slot[: key_states.shape[0]]
        self._scatter(self.keys[index], slot, key_states)
        self._scatter(self.values[index], slot, value_states)

    def attend(self, index: int, query: torch.Tensor, scaling: float) -> torch.Tensor:
        from . import quant_attention

        n = query.shape[0]
        if quant_attention.use_kernel(query):  # split along the slots: SDPA at batch 1 uses a few SMs only
            return quant_attention.dense_attention(query, self.keys[index][:n], self.values[index][:n],
                                                   self._count(n), scaling)
        return grouped_attention(query, self.keys[index][:n], self.values[index][:n], self.mask[:n], scaling)

    def _count(self, n: int) -> torch.Tensor:
        """Filled slots per row during a step (they are always the first ones): the mask's count."""
        return self.length[:n] + 1

    def after_step(self) -> None:
        """Between steps, on the host: its mirror of the counters, then the work they schedule (`_maintain`)."""
        for row in range(self.active):
            self.host_seen[row] += 1
            self.host_length[row] += 1
        self._maintain()

    def _maintain(self) -> None:
        """Layout changes that are due (nothing for full and sink)."""

    # -- rows ----------------------------------------------------------------------------------------------
    def load_row(self, row: int, cache: Any) -> None:
        """Copies one sequence's dynamic cache (batch 1, same policy) into `row`."""
        seen = int(cache.layers[0].seen)
        if seen >= self.window:
            raise ValueError(f"a row holds at most {self.window} tokens, this sequence has {seen}")
        for index, layer in enumerate(cache.layers):
            length, low = self._load_layer(row, index, layer)
        self.seen[row], self.length[row], self.low[row] = seen, length, low
        self.host_seen[row], self.host_length[row], self.host_low[row] = seen, length, low

    def _load_layer(self, row: int, index: int, layer: Any) -> tuple[int, int]:
        """Copies one dynamic layer into the row; (full-precision slots filled, tokens held as codes)."""
        length = layer.keys.shape[-2]
        self.keys[index][row, :, :length] = layer.keys[0]
        self.values[index][row, :, :length] = layer.values[0]
        return length, 0

    def move_row(self, source: int, target: int) -> None:
        """Row `source` becomes row `target` (the engine keeps the live rows first)."""
        for t in self.row_tensors():
            t[target].copy_(t[source])
        for mirror in (self.host_seen, self.host_length, self.host_low):
            mirror[target] = mirror[source]

    def row_positions(self, row: int, index: int = 0) -> torch.Tensor:
        """The logical positions of the tokens row `row` holds at full precision in layer `index`, in slot order
        (tests compare them with the dynamic layer's)."""
        raise NotImplementedError

    # -- transformers Cache API ----------------------------------------------------------------------------
    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.total_slots

    def get_mask_sizes(self, query_length: int, layer_idx: int = 0) -> tuple[int, int]:
        return self.total_slots, 0

    @property
    def is_compileable(self) -> bool:
        return True



def make_static_cache(policy: Any, config: Any, *, batch: int, window: int, device: Any,
                      dtype: torch.dtype) -> StaticPolicyCache:
    """The static form of `policy` for `batch` rows of at most `window` tokens each (ValueError without one)."""
    form = _form_of(policy)
    if form is None:
        raise ValueError(f"KV policy {policy} has no static form")
    return form(policy, config, batch=batch, window=window, device=device, dtype=dtype)
