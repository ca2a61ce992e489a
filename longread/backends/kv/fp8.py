"""`fp8`: every key and value stored as an 8-bit float (e4m3), with one float16 scale per token and kv head.

FP8 e4m3 (the OCP 8-bit float: 4 exponent bits, 3 mantissa bits, largest finite value 448) halves the bytes of
a bf16 cache and keeps a relative error of at most 2^-4 per element, whatever the element's magnitude: unlike the
integer codes of `quant:BITS`, a float code has its own exponent, so an outlier channel does not coarsen the
others and nothing has to stay exact. Serving engines store KV this way (vLLM's `--kv-cache-dtype fp8`, with one
scale per tensor from a calibration run, 1.0 by default). We keep one scale per (token, kv head), amax / 448: it
needs no calibration, no token can saturate another's codes, and it costs 2 bytes per `head_dim` codes (1.6% at
a head dim of 128), so `fp8` stores 1.97x fewer bytes than bf16.

The codes are kept as uint8 (a view of `torch.float8_e4m3fn`: scatter and indexing are not implemented for the
float8 dtype on every device). The reference path dequantizes the whole layer every forward (as `quant` does on
the CPU); the static form's decode kernel on CUDA (kv/fp8_attention.py) reads the codes and scales once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .base import KVLayer, KVPolicy
from .fp8_codes import FP8, FP8_MAX, SCALE_DTYPE, dequantize_fp8, quantize_fp8
from .static import StaticPolicyCache, grouped_attention

__all__ = ["FP8", "FP8_MAX", "SCALE_DTYPE", "FP8Layer", "FP8Policy", "StaticFP8", "dequantize_fp8", "quantize_fp8"]


@dataclass(frozen=True)
class FP8Policy(KVPolicy):
    """No token dropped, each stored in 8 bits: the memory of `quant:8` with float rather than integer codes."""

    @property
    def name(self) -> str:  # type: ignore[override]
        return "fp8"

    def new_layer(self) -> "FP8Layer":
        return FP8Layer(self)

    def static_form(self) -> type[StaticPolicyCache]:
        return StaticFP8


class FP8Layer(KVLayer):
    """Codes and scales in buffers grown with room to spare (as FullLayer, so a decode step writes one token);
    `update` returns every stored token dequantized, the new ones included (the static form attends to the same
    quantized values)."""

    GROW_MIN = 256
    GROW_FRACTION = 8

    def __init__(self, policy: FP8Policy) -> None:
        super().__init__(policy)
        self.length = 0
        self._buffers: dict[str, torch.Tensor] = {}

    def get_seq_length(self) -> int:
        return self.length

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        new = key_states.shape[-2]
        self.seen += new
        k_codes, k_scale = quantize_fp8(key_states)
        v_codes, v_scale = quantize_fp8(value_states)
        needed = self.length + new
        if not self._buffers or needed > self._buffers["k_codes"].shape[-2]:
            self._grow(needed, k_codes, k_scale)
        at = slice(self.length, needed)
        self._buffers["k_codes"][..., at, :] = k_codes
        self._buffers["v_codes"][..., at, :] = v_codes
        self._buffers["k_scale"][..., at] = k_scale
        self._buffers["v_scale"][..., at] = v_scale
        self.length = needed
        t = self.tensors()
        return (dequantize_fp8(t["k_codes"], t["k_scale"], key_states.dtype),
                dequantize_fp8(t["v_codes"], t["v_scale"], value_states.dtype))

    def _grow(self, needed: int, codes: torch.Tensor, scale: torch.Tensor) -> None:
        capacity = needed + max(self.GROW_MIN, needed // self.GROW_FRACTION)
        lead = codes.shape[:-2]
        grown = {
            "k_codes": codes.new_empty((*lead, capacity, codes.shape[-1])),
            "v_codes": codes.new_empty((*lead, capacity, codes.shape[-1])),
            "k_scale": scale.new_empty((*lead, capacity)),
            "v_scale": scale.new_empty((*lead, capacity)),
        }
        for name, old in self._buffers.items():
            if name.endswith("codes"):
                grown[name][..., : self.length, :] = old[..., : self.length, :]
            else:
                grown[name][..., : self.length] = old[..., : self.length]
        self._buffers = grown

    def tensors(self) -> dict[str, torch.Tensor]:
        """The filled part (views); the spare room is not counted in stored_bytes."""
        if not self._buffers:
            return {}
        n = self.length
        return {name: (b[..., :n, :] if name.endswith("codes") else b[..., :n]) for name, b in self._buffers.items()}

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        codes = tensors["k_codes"]
        self.device = codes.device
        self.is_initialized = True
        self._buffers = {name: t.contiguous() for name, t in tensors.items()}
        self.length = codes.shape[-2]

    def __deepcopy__(self, memo: dict) -> "FP8Layer":
        """A compact copy (the filled part only): the prefix cache stores snapshots, which never grow."""
        twin = object.__new__(type(self))
        memo[id(self)] = twin
        twin.__dict__.update({k: v for k, v in self.__dict__.items() if k != "_buffers"})
        twin._buffers = {name: t.clone() for name, t in self.tensors().items()}
        return twin


# -- the static form (kv/static.py) -------------------------------------------------------------------------------
class StaticFP8(StaticPolicyCache):
    """uint8 e4m3 codes and float16 scales for the window, no exact part. A decode step quantizes the new key and
    value on the device and writes them at the row's filled count, then attends over the filled slots: on CUDA
    with the FP8 kernel (fp8_attention.py, codes and scales read once), else by dequantizing the buffer and
    running SDPA (the reference path). Nothing moves between steps."""

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
