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

import torch

from .base import KVLayer, KVPolicy

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0
SCALE_DTYPE = torch.float16


def quantize_fp8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (..., d) -> (uint8 codes (..., d), float16 scale (...,)) with x ~= fp8(codes) * scale per row.

    The scale is rounded to float16 before the codes are computed (so dequantizing with the stored scale is what
    the error bound is about); a row of zeros gets scale 0 and codes 0."""
    xf = x.float()
    scale = (xf.abs().amax(dim=-1) / FP8_MAX).to(SCALE_DTYPE)
    safe = torch.where(scale > 0, scale.float(), torch.ones_like(scale, dtype=torch.float32))
    codes = (xf / safe.unsqueeze(-1)).clamp(-FP8_MAX, FP8_MAX).to(FP8).view(torch.uint8)
    return codes, scale


def dequantize_fp8(codes: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """uint8 codes (..., d) and scale (...,) -> values (..., d) in `dtype` (computed in float32)."""
    return (codes.view(FP8).float() * scale.float().unsqueeze(-1)).to(dtype)


@dataclass(frozen=True)
class FP8Policy(KVPolicy):
    """No token dropped, each stored in 8 bits: the memory of `quant:8` with float rather than integer codes."""

    @property
    def name(self) -> str:  # type: ignore[override]
        return "fp8"

    def new_layer(self) -> "FP8Layer":
        return FP8Layer(self)


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
