"""Group-wise asymmetric integer quantization of keys and values, packed into bytes.

Keys are quantized per channel and values per token, the layout KIVI (Liu et al. 2024, "KIVI: A Tuning-Free
Asymmetric 2bit Quantization for KV Cache") found to work: key outliers live in fixed channels, so a scale per
channel over a block of tokens keeps them from blowing up every other channel's step; value errors mix across
channels in the attention output, so a scale per token is enough. KVQuant (Hooper et al. 2024) reached the same
per-channel-keys conclusion.

We write the packing by hand because transformers' own QuantizedCache needs optimum-quanto or hqq and quantizes
both tensors along one axis; this file needs only torch and stores exactly what we count.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

SUPPORTED_BITS = (2, 4, 8)
# Scales and zero points are kept in float16, as KIVI does: 2 bytes each, and every K/V magnitude a model produces
# fits its range.
META_DTYPE = torch.float16


def _per_byte(bits: int) -> int:
    if bits not in SUPPORTED_BITS:
        raise ValueError(f"quantization supports {SUPPORTED_BITS} bits, got {bits}")
    return 8 // bits


def pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """uint8 codes (< 2**bits) along the last dim -> bytes holding 8 // bits codes each."""
    per = _per_byte(bits)
    if per == 1:
        return codes.to(torch.uint8)
    grouped = codes.to(torch.uint8).unflatten(-1, (-1, per))
    packed = grouped[..., 0].clone()
    for i in range(1, per):
        packed |= grouped[..., i] << (bits * i)
    return packed


def unpack(packed: torch.Tensor, bits: int) -> torch.Tensor:
    """The inverse of pack: bytes -> uint8 codes along the last dim."""
    per = _per_byte(bits)
    if per == 1:
        return packed
    shifts = _shifts(bits, packed.device)
    return ((packed.unsqueeze(-1) >> shifts) & ((1 << bits) - 1)).flatten(-2)


_SHIFTS: dict[tuple[int, torch.device], torch.Tensor] = {}


def _shifts(bits: int, device: torch.device) -> torch.Tensor:
    """Bit offsets of the codes in a byte, made once per device (one kernel less per unpack)."""
    key = (bits, device)
    if key not in _SHIFTS:
        _SHIFTS[key] = torch.arange(0, 8, bits, device=device, dtype=torch.uint8)
    return _SHIFTS[key]


@dataclass
class Quantized:
    """Packed codes plus the float16 scale and zero point of each group (broadcastable against the codes)."""

    codes: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor


# Shrink factors of a group's [min, max] range tried by the clipping search (1.0 = plain min-max).
CLIP_RATIOS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6)


def quantize_groups(
    x: torch.Tensor, bits: int, dim: int, clip: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric round-to-nearest over `dim`: (uint8 codes, scale, zero) with x ~= codes * scale + zero.

    Scale and zero are rounded to float16 *before* the codes are computed, so the round-trip error is at most half
    a step plus what float16 rounding of the two numbers adds (the tests check that bound). With `clip`, each
    group's range is shrunk around its middle by the factor of CLIP_RATIOS with the least squared error: at 2 bits
    min-max spends its 4 levels on the extremes, and clipping them costs less than the rounding it saves (AWQ,
    Lin et al. 2024, searches a clipping range for its weight groups the same way). On SmolLM2 this took
    `quant:2`'s perplexity delta over 8192 tokens from +4.2 to +2.3; at 4 bits it brought nothing measurable.
    """
    levels = (1 << bits) - 1
    xf = x.float()
    low = xf.amin(dim=dim, keepdim=True)
    high = xf.amax(dim=dim, keepdim=True)
    best = _round(xf, low, high, levels)  # CLIP_RATIOS[0]: plain min-max
    if not clip:
        return best
    best_error = _squared_error(best, xf, dim)
    middle, half = (low + high) / 2, (high - low) / 2
    for ratio in CLIP_RATIOS[1:]:
        candidate = _round(xf, middle - half * ratio, middle + half * ratio, levels)
        error = _squared_error(candidate, xf, dim)
        better = error < best_error
        best_error = torch.where(better, error, best_error)
        best = tuple(torch.where(better, new, old) for new, old in zip(candidate, best))  # type: ignore[assignment]
    return best


def _squared_error(quantized: tuple[torch.Tensor, torch.Tensor, torch.Tensor], xf: torch.Tensor, dim: int):
    codes, scale, zero = quantized
    return (codes.float() * scale.float() + zero.float() - xf).square().sum(dim=dim, keepdim=True)


def _round(xf: torch.Tensor, low: torch.Tensor, high: torch.Tensor, levels: int):
    zero = low.to(META_DTYPE)
    scale = ((high - zero.float()) / levels).to(META_DTYPE)
    # A constant group has scale 0; any positive scale then codes it exactly as the zero point.
    safe = torch.where(scale.float() > 0, scale.float(), torch.ones_like(scale, dtype=torch.float32))
    codes = torch.clamp(torch.round((xf - zero.float()) / safe), 0, levels).to(torch.uint8)
    return codes, scale, zero


def quantize_keys(keys: torch.Tensor, bits: int, group: int, clip: bool = False) -> Quantized:
    """Keys (b, h, n*group, d), per channel over blocks of `group` tokens: one scale per (block, channel)."""
    b, h, t, d = keys.shape
    if t % group:
        raise ValueError(f"key blocks need a multiple of {group} tokens, got {t}")
    codes, scale, zero = quantize_groups(keys.reshape(b, h, t // group, group, d), bits, dim=3, clip=clip)
    return Quantized(pack(codes.reshape(b, h, t, d), bits), scale.squeeze(3), zero.squeeze(3))


def quantize_values(values: torch.Tensor, bits: int, group: int, clip: bool = False) -> Quantized:
    """Values (b, h, t, d), per token over groups of `group` channels: one scale per (token, channel group)."""
    b, h, t, d = values.shape
    codes, scale, zero = quantize_groups(values.reshape(b, h, t, d // group, group), bits, dim=4, clip=clip)
    return Quantized(pack(codes.reshape(b, h, t, d), bits), scale.squeeze(4), zero.squeeze(4))


def dequantize_keys(
    q: Quantized, bits: int, group: int, dtype: torch.dtype, out: torch.Tensor | None = None
) -> torch.Tensor:
    """Keys (b, h, t, d) back in `dtype`; with `out` (any (b, h, t, d) view, e.g. a slice of a bigger buffer),
    written there directly, which spares the copy a torch.cat would make."""
    codes = unpack(q.codes, bits)
    b, h, t, d = codes.shape
    out = codes.new_empty(b, h, t, d, dtype=dtype) if out is None else out
    blocks = codes.view(b, h, t // group, group, d)
    _affine(blocks, q.scale.unsqueeze(3), q.zero.unsqueeze(3), out.view(b, h, t // group, group, d))
    return out


def dequantize_values(
    q: Quantized, bits: int, group: int, dtype: torch.dtype, out: torch.Tensor | None = None
) -> torch.Tensor:
    codes = unpack(q.codes, bits)
    b, h, t, d = codes.shape
    out = codes.new_empty(b, h, t, d, dtype=dtype) if out is None else out
    groups = codes.view(b, h, t, d // group, group)
    _affine(groups, q.scale.unsqueeze(4), q.zero.unsqueeze(4), out.view(b, h, t, d // group, group))
    return out


def _affine(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, out: torch.Tensor) -> None:
    """out = codes * scale + zero in one kernel that reads the uint8 codes as they are (a converted copy of the
    codes would be one more full-size pass per tensor per step). For a 16-bit `out` the float16 scale and zero go
    in unconverted too: a decode step at batch 1 on a GPU is bound by kernel launches (docs/architecture.md), and rounding
    through float16 stays below the output's own 16-bit rounding. A float32 `out` (CPU models) gets float32
    scale and zero, hence an exact float32 computation; they are 1/G of the codes' size."""
    if out.dtype not in (torch.float16, torch.bfloat16):
        scale, zero = scale.to(out.dtype), zero.to(out.dtype)
    torch.addcmul(zero, codes, scale, out=out)


def value_group(head_dim: int, wanted: int) -> int:
    """The largest divisor of head_dim that is at most `wanted` (values are grouped along the head dim)."""
    for g in range(min(wanted, head_dim), 0, -1):
        if head_dim % g == 0:
            return g
    return 1


class QuantizedBlocks:
    """An append-only store of K/V blocks, keys per channel and values per token (KIVI's layout).

    Blocks come in multiples of `group` tokens. Everything stored is a tensor attribute, so `tensors()` is the
    exact memory it holds: packed codes, float16 scales and zero points. `clip` (default: at 2 bits) searches
    each group's clipping range (quantize_groups).
    """

    def __init__(self, bits: int, group: int, value_group_size: int, clip: bool | None = None):
        _per_byte(bits)
        self.clip = bits == 2 if clip is None else clip
        self.bits = bits
        self.group = group
        self.value_group = value_group_size
        self.keys: Quantized | None = None
        self.values: Quantized | None = None

    def __len__(self) -> int:
        return 0 if self.keys is None else self.keys.codes.shape[-2]

    def append(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        k = quantize_keys(keys, self.bits, self.group, self.clip)
        v = quantize_values(values, self.bits, self.value_group, self.clip)
        if self.keys is None:
            self.keys, self.values = k, v
            return
        assert self.values is not None
        self.keys = Quantized(*(torch.cat([a, b], dim=-2) for a, b in zip(_fields(self.keys), _fields(k))))
        self.values = Quantized(*(torch.cat([a, b], dim=-2) for a, b in zip(_fields(self.values), _fields(v))))

    def dequantize(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.keys is not None and self.values is not None
        return (
            dequantize_keys(self.keys, self.bits, self.group, dtype),
            dequantize_values(self.values, self.bits, self.value_group, dtype),
        )

    def dequantize_with(self, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[dequantized store, keys] and [.., values] along the sequence, built in one buffer each (no torch.cat
        of a dequantized copy: at long contexts the extra full-size pass costs as much as the dequantization)."""
        assert self.keys is not None and self.values is not None
        n = len(self)
        b, h, t, d = keys.shape
        out_k = keys.new_empty(b, h, n + t, d)
        out_v = values.new_empty(b, h, n + t, values.shape[-1])
        dequantize_keys(self.keys, self.bits, self.group, keys.dtype, out=out_k[:, :, :n])
        dequantize_values(self.values, self.bits, self.value_group, values.dtype, out=out_v[:, :, :n])
        out_k[:, :, n:].copy_(keys)
        out_v[:, :, n:].copy_(values)
        return out_k, out_v

    def tensors(self) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for name, q in (("k", self.keys), ("v", self.values)):
            if q is not None:
                out.update({f"{name}_codes": q.codes, f"{name}_scale": q.scale, f"{name}_zero": q.zero})
        return out

    def load(self, tensors: dict[str, torch.Tensor]) -> None:
        if "k_codes" in tensors:
            self.keys = Quantized(tensors["k_codes"], tensors["k_scale"], tensors["k_zero"])
            self.values = Quantized(tensors["v_codes"], tensors["v_scale"], tensors["v_zero"])


def _fields(q: Quantized) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return q.codes, q.scale, q.zero
