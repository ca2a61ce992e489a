"""Static-shape forms of the KV policies: buffers allocated once for a batch of rows, so that one decode step has
fixed shapes and fixed addresses (what a CUDA graph needs; docs/gpu-engine.md).

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
| `fp8` | e4m3 codes and a scale per token and head, for the window (static_fp8.py) | slot = filled count, quantized on the device | nothing |

Why the extra slot: the dynamic layers attend to what they stored plus the new token, then evict. A static
layer writes the new token first, so it needs room for the budget plus one to attend to the same keys.

Attention is the layer's own (`attend`, through longread.backends.local.attention): SDPA over the buffer with the
filled-slot mask; for `quant` and `mixed`, over the dequantized codes followed by the exact part (the reference
path), or the fused kernel of quant_attention.py on CUDA, which reads the codes and stops at the filled count.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from transformers.cache_utils import Cache, CacheLayerMixin

from .base import CacheAttention
from .full import FullPolicy
from .kivi import QuantPolicy
from .mixed import MixedPolicy
from .observe import window_scores
from .quantize import Quantized, dequantize_keys, dequantize_values, quantize_keys, quantize_values, value_group
from .sink import SinkPolicy
from .snap import SnapPolicy


def static_supported(policy: Any) -> bool:
    """Whether `policy` has a static form (plugins and subclasses do not, and run eagerly)."""
    return type(policy) in _FORMS


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


# -- full ---------------------------------------------------------------------------------------------------------
class StaticFull(StaticPolicyCache):
    def main_slots(self) -> int:
        return self.window

    def row_positions(self, row: int, index: int = 0) -> torch.Tensor:
        return torch.arange(self.host_length[row])


# -- sink ---------------------------------------------------------------------------------------------------------
class StaticSink(StaticPolicyCache):
    """The sinks in the first slots, then a ring: position p >= slots goes to sinks + (p - sinks) % ring."""

    policy: SinkPolicy

    def main_slots(self) -> int:
        return self.policy.budget + 1

    @property
    def ring(self) -> int:
        return self.slots - self.policy.sinks

    def _slot_of(self, p: torch.Tensor) -> torch.Tensor:
        sinks = self.policy.sinks
        return torch.where(p < self.slots, p, sinks + (p - sinks) % self.ring)

    def _slot(self, n: int) -> torch.Tensor:
        return self._slot_of(self.seen[:n])

    def _filled(self, n: int) -> torch.Tensor:
        return self._arange[None, : self.slots] <= self.seen[:n, None]

    def _count(self, n: int) -> torch.Tensor:
        return (self.seen[:n] + 1).clamp(max=self.slots)

    def _load_layer(self, row: int, index: int, layer: Any) -> tuple[int, int]:
        slots = self._slot_of(torch.tensor(layer.positions(), device=self.device))
        self.keys[index][row, :, slots] = layer.keys[0]
        self.values[index][row, :, slots] = layer.values[0]
        return layer.keys.shape[-2], 0

    def row_positions(self, row: int, index: int = 0) -> torch.Tensor:
        seen, sinks = self.host_seen[row], self.policy.sinks
        if seen <= self.policy.budget:
            return torch.arange(seen)
        # The ring's oldest slot is the next write's, never attended again: held are the budget's tokens.
        positions = torch.tensor(list(range(sinks)) + list(range(seen - (self.ring - 1), seen)))
        order = self._slot_of(positions.to(self.device)).cpu().argsort()
        return positions[order]


# -- snap ---------------------------------------------------------------------------------------------------------
class StaticSnap(StaticPolicyCache):
    """Filled slots [0, length) kept in position order (SnapKV's pooling runs along that order), the new token at
    slot `length`; at budget + 1 the dynamic rule's eviction, per row."""

    policy: SnapPolicy

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.wants_queries = True

    def main_slots(self) -> int:
        return self.policy.budget + 1

    def _allocate(self) -> None:
        super()._allocate()
        w = self.policy.window
        self.positions = [torch.full((self.batch, self.kv_heads, self.slots), -1, dtype=torch.int32,
                                     device=self.device) for _ in range(self.n_layers)]
        self.queries = [torch.zeros(self.batch, self.q_heads, w, self.head_dim, dtype=self.dtype, device=self.device)
                        for _ in range(self.n_layers)]

    def tensors(self) -> list[torch.Tensor]:
        return [*super().tensors(), *self.positions, *self.queries]

    def observe(self, index: int, queries: torch.Tensor) -> None:
        """A decode step's query (rows, q_heads, 1, d) into the ring slot seen % window."""
        n = queries.shape[0]
        slot = self.seen[:n] % self.policy.window
        index_ = slot.view(n, 1, 1, 1).expand(n, queries.shape[1], 1, queries.shape[-1])
        self.queries[index][:n].scatter_(2, index_, queries[..., -1:, :])

    def write(self, index: int, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().write(index, key_states, value_states)
        n = key_states.shape[0]
        slot = self.write_slot[:n].view(n, 1, 1).expand(n, self.kv_heads, 1)
        self.positions[index][:n].scatter_(2, slot, self.seen[:n].view(n, 1, 1).expand(n, self.kv_heads, 1)
                                           .to(torch.int32))

    def _load_scored(self, row: int, index: int, layer: Any) -> int:
        length = layer.keys.shape[-2]
        self.keys[index][row, :, :length] = layer.keys[0]
        self.values[index][row, :, :length] = layer.values[0]
        self.positions[index][row, :, :length] = layer.positions[0]
        self.positions[index][row, :, length:] = -1
        if layer.queries is not None:
            w = layer.queries.shape[-2]
            slots = torch.arange(layer.seen - w, layer.seen, device=self.device) % self.policy.window
            self.queries[index][row, :, slots] = layer.queries[0]
        return length

    def _load_layer(self, row: int, index: int, layer: Any) -> tuple[int, int]:
        return self._load_scored(row, index, layer), 0

    def _window_queries(self, row: int, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The row's last `window` queries in time order (the order the dynamic layer keeps) and positions."""
        seen, w = self.host_seen[row], self.policy.window
        count = min(seen, w)
        positions = torch.arange(seen - count, seen, device=self.device)
        return self.queries[index][row : row + 1, :, positions % w], positions

    def _scores(self, row: int, index: int, keys: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        queries, query_positions = self._window_queries(row, index)
        scores = window_scores(queries, query_positions, keys, positions, self.policy.pool)
        return scores.masked_fill(positions >= self.host_seen[row] - self.policy.window, float("inf"))

    def _maintain(self) -> None:
        for row in range(self.active):
            if self.host_length[row] > self.policy.budget:
                self._evict(row)

    def _evict(self, row: int) -> None:
        length = self.host_length[row]
        target = self.policy.budget - self.policy.slack
        for index in range(self.n_layers):
            keys = self.keys[index][row : row + 1, :, :length]
            positions = self.positions[index][row : row + 1, :, :length]
            keep = self._scores(row, index, keys, positions).topk(target, dim=-1).indices
            self._keep(row, index, keep, length)
        self.length[row] = target
        self.host_length[row] = target

    def _keep(self, row: int, index: int, keep: torch.Tensor, length: int) -> None:
        keep = keep.sort(dim=-1).values
        target = keep.shape[-1]
        gather = keep.unsqueeze(-1).expand(-1, -1, -1, self.head_dim)
        keys = self.keys[index][row : row + 1, :, :length].gather(-2, gather)
        values = self.values[index][row : row + 1, :, :length].gather(-2, gather)
        positions = self.positions[index][row : row + 1, :, :length].gather(-1, keep)
        self.keys[index][row, :, :target] = keys[0]
        self.values[index][row, :, :target] = values[0]
        self.positions[index][row, :, :target] = positions[0]
        self.positions[index][row, :, target:] = -1

    def row_positions(self, row: int, index: int = 0) -> torch.Tensor:
        return self.positions[index][row, :, : self.host_length[row]].cpu()


# -- quant --------------------------------------------------------------------------------------------------------
class _Codes:
    """Static codes, scales and zero points for `capacity` tokens of one layer (KIVI's layout, quantize.py)."""

    def __init__(self, owner: StaticPolicyCache, bits: int, group: int, value_group_size: int, capacity: int):
        per = 8 // bits
        b, h, d = owner.batch, owner.kv_heads, owner.head_dim
        device, meta = owner.device, torch.float16
        self.bits, self.group, self.value_group = bits, group, value_group_size
        self.clip = bits == 2
        self.capacity = capacity
        self.k_codes = torch.zeros(b, h, capacity, d // per, dtype=torch.uint8, device=device)
        self.k_scale = torch.zeros(b, h, capacity // group, d, dtype=meta, device=device)
        self.k_zero = torch.zeros(b, h, capacity // group, d, dtype=meta, device=device)
        self.v_codes = torch.zeros(b, h, capacity, d // per, dtype=torch.uint8, device=device)
        self.v_scale = torch.zeros(b, h, capacity, d // value_group_size, dtype=meta, device=device)
        self.v_zero = torch.zeros(b, h, capacity, d // value_group_size, dtype=meta, device=device)

    def tensors(self) -> list[torch.Tensor]:
        return [self.k_codes, self.k_scale, self.k_zero, self.v_codes, self.v_scale, self.v_zero]

    def load(self, row: int, store: Any) -> int:
        n = len(store) if store is not None else 0
        if n:
            g = self.group
            self.k_codes[row, :, :n] = store.keys.codes[0]
            self.k_scale[row, :, : n // g] = store.keys.scale[0]
            self.k_zero[row, :, : n // g] = store.keys.zero[0]
            self.v_codes[row, :, :n] = store.values.codes[0]
            self.v_scale[row, :, :n] = store.values.scale[0]
            self.v_zero[row, :, :n] = store.values.zero[0]
        return n

    def append(self, row: int, at: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Quantizes one block (1, h, group, d) into the row at token `at` (a multiple of the group)."""
        g = keys.shape[-2]
        k = quantize_keys(keys, self.bits, self.group, self.clip)
        v = quantize_values(values, self.bits, self.value_group, self.clip)
        self.k_codes[row, :, at : at + g] = k.codes[0]
        self.k_scale[row, :, at // self.group : (at + g) // self.group] = k.scale[0]
        self.k_zero[row, :, at // self.group : (at + g) // self.group] = k.zero[0]
        self.v_codes[row, :, at : at + g] = v.codes[0]
        self.v_scale[row, :, at : at + g] = v.scale[0]
        self.v_zero[row, :, at : at + g] = v.zero[0]

    def dequantize(self, rows: slice | int, count: int | None, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(keys, values) of rows, the first `count` tokens (all of them with None)."""
        if isinstance(rows, int):
            rows = slice(rows, rows + 1)
        n = self.capacity if count is None else count
        keys = Quantized(self.k_codes[rows, :, :n], self.k_scale[rows, :, : n // self.group],
                         self.k_zero[rows, :, : n // self.group])
        values = Quantized(self.v_codes[rows, :, :n], self.v_scale[rows, :, :n], self.v_zero[rows, :, :n])
        return (dequantize_keys(keys, self.bits, self.group, dtype),
                dequantize_values(values, self.bits, self.value_group, dtype))


class _QuantAttention:
    """The codes beside a full-precision part (quant, mixed): one code buffer per layer for the window, and
    attention over [codes][full-precision slots] with the two filled counts. The reference path dequantizes the
    whole code buffer (fixed shapes); on CUDA the fused kernel reads only the filled codes."""

    def _allocate(self) -> None:
        super()._allocate()
        p = self.policy
        capacity = math.ceil(self.window / p.group) * p.group
        groups = value_group(self.head_dim, p.value_group)
        self.codes = [_Codes(self, p.bits, p.group, groups, capacity) for _ in range(self.n_layers)]
        self.code_slots = capacity

    @property
    def total_slots(self) -> int:
        return self.code_slots + self.slots

    def tensors(self) -> list[torch.Tensor]:
        return [*super().tensors(), *(t for c in self.codes for t in c.tensors())]

    def _filled(self, n: int) -> torch.Tensor:
        codes = self._arange[None, : self.code_slots] < self.low[:n, None]
        exact = self._arange[None, : self.slots] <= self.length[:n, None]
        return torch.cat([codes, exact], dim=1)

    def attend(self, index: int, query: torch.Tensor, scaling: float) -> torch.Tensor:
        return self._attend_quantized(index, query, scaling)

    def _attend_quantized(self, index: int, query: torch.Tensor, scaling: float) -> torch.Tensor:
        from . import quant_attention

        n = query.shape[0]
        codes = self.codes[index]
        if quant_attention.use_kernel(query) and quant_attention.codes_supported(codes.bits, self.head_dim):
            return quant_attention.decode_attention(query, codes, self.low[:n], self.keys[index][:n],
                                                    self.values[index][:n], self._exact_filled(n), scaling)
        keys, values = codes.dequantize(slice(0, n), None, query.dtype)
        keys = torch.cat([keys, self.keys[index][:n]], dim=2)
        values = torch.cat([values, self.values[index][:n]], dim=2)
        return grouped_attention(query, keys, values, self.mask[:n], scaling)

    def _exact_filled(self, n: int) -> torch.Tensor:
        return self.length[:n] + 1


class StaticQuant(_QuantAttention, StaticPolicyCache):
    """Codes for the window; the exact part holds the sinks, then the residual in order, with room for one more
    block: when it is full, the block after the sinks is quantized and the rest shifts down (the dynamic rule)."""

    policy: QuantPolicy

    def main_slots(self) -> int:
        p = self.policy
        return p.sinks + p.residual + p.group


    def _load_layer(self, row: int, index: int, layer: Any) -> tuple[int, int]:
        length, _ = super()._load_layer(row, index, layer)
        return length, self.codes[index].load(row, layer.store)

    def load_row(self, row: int, cache: Any) -> None:
        if cache.layers[0].seen < self.policy.sinks:
            raise ValueError("the static quant form needs at least the sink tokens in the prompt")
        super().load_row(row, cache)

    def _maintain(self) -> None:
        for row in range(self.active):
            if self.host_length[row] == self.slots:
                self._flush(row)

    def _flush(self, row: int) -> None:
        p = self.policy
        sinks, group, at = p.sinks, p.group, self.host_low[row]
        for index in range(self.n_layers):
            keys, values = self.keys[index], self.values[index]
            self.codes[index].append(row, at, keys[row : row + 1, :, sinks : sinks + group],
                                     values[row : row + 1, :, sinks : sinks + group])
            rest = self.slots - sinks - group
            keys[row, :, sinks : sinks + rest] = keys[row, :, sinks + group :].clone()
            values[row, :, sinks : sinks + rest] = values[row, :, sinks + group :].clone()
        self.length[row] = self.slots - group
        self.low[row] = at + group
        self.host_length[row] = self.slots - group
        self.host_low[row] = at + group

    def row_positions(self, row: int, index: int = 0) -> torch.Tensor:
        sinks, seen, length = self.policy.sinks, self.host_seen[row], self.host_length[row]
        return torch.tensor(list(range(sinks)) + list(range(seen - (length - sinks), seen)))


# -- mixed --------------------------------------------------------------------------------------------------------
class StaticMixed(_QuantAttention, StaticSnap):
    """snap's full-precision set (N + 1 slots, positions, the query ring) and quant's codes for the demoted."""

    policy: MixedPolicy


    def _load_layer(self, row: int, index: int, layer: Any) -> tuple[int, int]:
        return self._load_scored(row, index, layer), self.codes[index].load(row, layer.low)

    def _evict(self, row: int) -> None:
        """MiKV's demotion, as MixedLayer.update does it: the least attended block goes into codes."""
        p = self.policy
        length, low = self.host_length[row], self.host_low[row]
        over = length - p.budget
        demote = -(-over // p.group) * p.group
        for index in range(self.n_layers):
            fp_keys = self.keys[index][row : row + 1, :, :length]
            fp_values = self.values[index][row : row + 1, :, :length]
            positions = self.positions[index][row : row + 1, :, :length]
            if low:
                low_keys, _ = self.codes[index].dequantize(row, low, self.dtype)
                keys = torch.cat([low_keys, fp_keys], dim=2)
            else:
                keys = fp_keys
            all_positions = torch.cat([positions.new_full((1, self.kv_heads, low), -1), positions], dim=-1)
            scores = self._scores(row, index, keys, all_positions)[..., low:]
            order = scores.argsort(dim=-1)
            drop, keep = order[..., :demote].sort(dim=-1).values, order[..., demote:]
            gather = drop.unsqueeze(-1).expand(-1, -1, -1, self.head_dim)
            self.codes[index].append(row, low, fp_keys.gather(-2, gather), fp_values.gather(-2, gather))
            self._keep(row, index, keep, length)
        self.length[row] = length - demote
        self.low[row] = low + demote
        self.host_length[row] = length - demote
        self.host_low[row] = low + demote


_FORMS: dict[type, type[StaticPolicyCache]] = {
    FullPolicy: StaticFull, SinkPolicy: StaticSink, SnapPolicy: StaticSnap, QuantPolicy: StaticQuant,
    MixedPolicy: StaticMixed,
}

# fp8's form lives in its own module, built on the classes above (imported here, after them, so the table is whole).
from .fp8 import FP8Policy  # noqa: E402
from .static_fp8 import StaticFP8  # noqa: E402

_FORMS[FP8Policy] = StaticFP8


def make_static_cache(policy: Any, config: Any, *, batch: int, window: int, device: Any,
                      dtype: torch.dtype) -> StaticPolicyCache:
    """The static form of `policy` for `batch` rows of at most `window` tokens each (ValueError without one)."""
    form = _FORMS.get(type(policy))
    if form is None:
        raise ValueError(f"KV policy {policy} has no static form")
    return form(policy, config, batch=batch, window=window, device=device, dtype=dtype)
