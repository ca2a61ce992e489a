"""The static form of `fp8` (kv/fp8.py): uint8 e4m3 codes and float16 scales for the window, no exact part.

A decode step quantizes the new key and value on the device and writes them at the row's filled count, then
attends over the filled slots: on CUDA with the FP8 kernel (kv/fp8_attention.py, codes and scales read once), else
by dequantizing the buffer and running SDPA (the reference path). Nothing moves between steps.
"""

from __future__ import annotations

from typing import Any

import torch

from .fp8 import FP8Policy, dequantize_fp8, quantize_fp8
from .static import StaticPolicyCache, grouped_attention


class StaticFP8(StaticPolicyCache):
    policy: FP8Policy

    def main_slots(self) -> int:
        return self.window

    def _allocate(self) -> None:
        self.slots = self.main_slots()
        codes = lambda: self._buffer(self.slots, dtype=torch.uint8)  # noqa: E731
        scale = lambda: torch.zeros(self.batch, self.kv_heads, self.slots, dtype=torch.float16,  # noqa: E731
                                    device=self.device)
        self.keys = [codes() for _ in range(self.n_layers)]  # the codes: what base's write/move_row handle
        self.values = [codes() for _ in range(self.n_layers)]
        self.k_scale = [scale() for _ in range(self.n_layers)]
        self.v_scale = [scale() for _ in range(self.n_layers)]

    def tensors(self) -> list[torch.Tensor]:
        return [*self.keys, *self.values, *self.k_scale, *self.v_scale]

    def write(self, index: int, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        from . import fp8_attention, quant_attention

        n = key_states.shape[0]
        slot = self.write_slot[:n]
        if key_states.shape[2] == 1 and quant_attention.kernels_on(key_states):
            fp8_attention.fp8_write(key_states, value_states, slot, self.keys[index], self.k_scale[index],
                                    self.values[index], self.v_scale[index])
            return
        k_codes, k_scale = quantize_fp8(key_states)
        v_codes, v_scale = quantize_fp8(value_states)
        self._scatter(self.keys[index], slot, k_codes)
        self._scatter(self.values[index], slot, v_codes)
        at = slot.view(n, 1, 1).expand(n, self.kv_heads, 1)
        self.k_scale[index][:n].scatter_(2, at, k_scale)
        self.v_scale[index][:n].scatter_(2, at, v_scale)

    def attend(self, index: int, query: torch.Tensor, scaling: float) -> torch.Tensor:
        from . import fp8_attention, quant_attention

        n = query.shape[0]
        if quant_attention.use_kernel(query):
            return fp8_attention.fp8_attention(query, self.keys[index][:n], self.k_scale[index][:n],
                                               self.values[index][:n], self.v_scale[index][:n], self._count(n),
                                               scaling)
        keys = dequantize_fp8(self.keys[index][:n], self.k_scale[index][:n], query.dtype)
        values = dequantize_fp8(self.values[index][:n], self.v_scale[index][:n], query.dtype)
        return grouped_attention(query, keys, values, self.mask[:n], scaling)

    def _load_layer(self, row: int, index: int, layer: Any) -> tuple[int, int]:
        stored = layer.tensors()
        length = layer.length
        if length:
            self.keys[index][row, :, :length] = stored["k_codes"][0]
            self.values[index][row, :, :length] = stored["v_codes"][0]
            self.k_scale[index][row, :, :length] = stored["k_scale"][0]
            self.v_scale[index][row, :, :length] = stored["v_scale"][0]
        return length, 0

    def row_positions(self, row: int, index: int = 0) -> torch.Tensor:
        return torch.arange(self.host_length[row])
