"""The quantized part of the static forms that keep codes (`quant`, kivi.py; `mixed`, mixed.py): one code buffer per
layer for the window in KIVI's layout (quantize.py), and attention over the codes followed by the exact part."""

from __future__ import annotations

import math
from typing import Any

import torch

from .quantize import Quantized, dequantize_keys, dequantize_values, quantize_keys, quantize_values, value_group
from .static import StaticPolicyCache, grouped_attention


class StaticCodes:
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


class QuantizedAttention:
    """The codes beside a full-precision part (quant, mixed): one code buffer per layer for the window, and
    attention over [codes][full-precision slots] with the two filled counts. The reference path dequantizes the
    whole code buffer (fixed shapes); on CUDA the fused kernel reads only the filled codes."""

    def _allocate(self) -> None:
        super()._allocate()
        p = self.policy
        capacity = math.ceil(self.window / p.group) * p.group
        groups = value_group(self.head_dim, p.value_group)
        self.codes = [StaticCodes(self, p.bits, p.group, groups, capacity) for _ in range(self.n_layers)]
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

