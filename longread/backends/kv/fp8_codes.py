"""The e4m3 number format of `fp8` (fp8.py): codes (uint8 views of float8) and a float16 scale per row. Shared by the
policy's layers and static form and by the decode kernels (fp8_attention.py)."""

from __future__ import annotations

import torch

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
