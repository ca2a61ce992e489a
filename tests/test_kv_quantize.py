"""Group-wise KV quantization: packing, round-trip error bounds per bit width, and byte accounting by hand."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from longread.backends.kv import QuantPolicy
from longread.backends.kv.quantize import (
    QuantizedBlocks,
    dequantize_keys,
    dequantize_values,
    pack,
    quantize_groups,
    quantize_keys,
    quantize_values,
    unpack,
    value_group,
)

FP16_EPS = 2.0**-11  # relative rounding of float16, in which scales and zero points are kept


@given(bits=st.sampled_from([2, 4, 8]), rows=st.integers(1, 5), seed=st.integers(0, 2**16))
@settings(max_examples=40, deadline=None)
def test_pack_then_unpack_gives_the_codes_back(bits, rows, seed):
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 2**bits, (rows, 3, 16), generator=g, dtype=torch.uint8)
    packed = pack(codes, bits)
    assert packed.shape[-1] == 16 * bits // 8  # 8 // bits codes per byte
    assert torch.equal(unpack(packed, bits), codes)


def _bound(x: torch.Tensor, dim: int, bits: int) -> torch.Tensor:
    """Half a quantization step, plus what float16 rounding of the scale and zero point can add."""
    low, high = x.amin(dim=dim, keepdim=True), x.amax(dim=dim, keepdim=True)
    step = (high - low) / (2**bits - 1)
    return step / 2 + FP16_EPS * (2 * low.abs() + 2 * (high - low)) + 1e-6


@pytest.mark.parametrize("bits", [2, 4, 8])
@given(seed=st.integers(0, 2**16), scale=st.floats(0.01, 50.0), blocks=st.integers(1, 3))
@settings(max_examples=25, deadline=None)
def test_key_round_trip_error_is_within_half_a_step_per_channel(bits, seed, scale, blocks):
    g = torch.Generator().manual_seed(seed)
    group = 8
    keys = torch.randn(1, 2, blocks * group, 16, generator=g) * scale
    keys[..., 3] += 40 * scale  # an outlier channel, as real keys have: per-channel scales keep it contained
    restored = dequantize_keys(quantize_keys(keys, bits, group), bits, group, torch.float32)
    per_block = keys.reshape(1, 2, blocks, group, 16)
    bound = _bound(per_block, dim=3, bits=bits).expand_as(per_block).reshape(keys.shape)
    assert torch.all((restored - keys).abs() <= bound)


@pytest.mark.parametrize("bits", [2, 4, 8])
@given(seed=st.integers(0, 2**16), scale=st.floats(0.01, 50.0))
@settings(max_examples=25, deadline=None)
def test_value_round_trip_error_is_within_half_a_step_per_token(bits, seed, scale):
    g = torch.Generator().manual_seed(seed)
    values = torch.randn(1, 2, 5, 16, generator=g) * scale
    restored = dequantize_values(quantize_values(values, bits, 8), bits, 8, torch.float32)
    grouped = values.reshape(1, 2, 5, 2, 8)
    bound = _bound(grouped, dim=4, bits=bits).expand_as(grouped).reshape(values.shape)
    assert torch.all((restored - values).abs() <= bound)


def test_more_bits_means_smaller_error():
    g = torch.Generator().manual_seed(0)
    keys = torch.randn(1, 2, 32, 16, generator=g)
    errors = [(dequantize_keys(quantize_keys(keys, b, 32), b, 32, torch.float32) - keys).abs().mean() for b in (2, 4, 8)]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.01 * keys.abs().mean()


@given(seed=st.integers(0, 2**16), bits=st.sampled_from([2, 4]), dim=st.sampled_from([2, 3]))
@settings(max_examples=30, deadline=None)
def test_the_clipping_search_never_costs_squared_error(seed, bits, dim):
    """Plain min-max is one of the candidates, so no group may come out worse; on heavy-tailed data (real K/V
    have outliers) the search must find a better range somewhere."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, 32, 16, generator=g) / torch.rand(2, 3, 32, 16, generator=g).clamp_min(0.05)

    def squared_error(clip: bool) -> torch.Tensor:
        codes, scale, zero = quantize_groups(x, bits, dim, clip=clip)
        return (codes.float() * scale.float() + zero.float() - x).square().sum(dim=dim)

    plain, clipped = squared_error(False), squared_error(True)
    assert torch.all(clipped <= plain * (1 + 1e-6))
    assert clipped.sum() < plain.sum()


def test_only_two_bit_blocks_search_their_clipping_range_by_default():
    assert [QuantizedBlocks(b, 8, 8).clip for b in (2, 4, 8)] == [True, False, False]
    assert QuantPolicy(2).group == 64 and QuantPolicy(4).group == 128 and QuantPolicy(8).group == 128


def test_a_constant_group_is_stored_exactly():
    keys = torch.full((1, 1, 4, 8), 1.5)
    restored = dequantize_keys(quantize_keys(keys, 2, 4), 2, 4, torch.float32)
    assert torch.equal(restored, keys)


def test_value_group_divides_the_head_dim():
    assert value_group(64, 128) == 64
    assert value_group(128, 128) == 128
    assert value_group(96, 64) == 48
    assert value_group(80, 128) == 80


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_quant_layer_bytes_match_a_hand_count(bits):
    """30 tokens through a layer with 4 sinks, blocks of 8 and a residual of 4: 16 quantized, 14 exact."""
    b, heads, d, group, residual, sinks = 1, 2, 16, 8, 4, 4
    layer = QuantPolicy(bits, group=group, value_group=8, residual=residual, sinks=sinks).new_layer()
    g = torch.Generator().manual_seed(1)
    for n in (7, 1, 13, 1, 8):  # 30 tokens in uneven pieces
        k = torch.randn(b, heads, n, d, generator=g)
        layer.update(k, torch.randn(b, heads, n, d, generator=g))
    quantized = (30 - sinks - residual) // group * group  # 16: whole blocks only, sinks and residual kept exact
    full = 30 - quantized  # 14
    assert quantized == 16 and layer.get_seq_length() == 30 and layer.seen == 30
    codes = 2 * heads * quantized * d * bits // 8  # keys and values, packed
    key_meta = heads * (quantized // group) * d * 2 * 2  # fp16 scale + zero per (block, channel)
    value_meta = heads * quantized * (d // 8) * 2 * 2  # fp16 scale + zero per (token, channel group)
    exact_bytes = 2 * heads * full * d * 4  # float32 keys and values
    assert layer.stored_bytes() == codes + key_meta + value_meta + exact_bytes


@pytest.mark.parametrize("first_piece", [1, 3, 4, 9])
def test_quant_layer_keeps_the_first_tokens_exact_and_returns_every_token(first_piece):
    """The 4 sinks are the first 4 tokens fed, however the input is cut, and survive every flush untouched."""
    layer = QuantPolicy(2, group=8, value_group=8, residual=4, sinks=4).new_layer()
    g = torch.Generator().manual_seed(2)
    keys = torch.randn(1, 2, 60, 16, generator=g)
    values = torch.randn(1, 2, 60, 16, generator=g)
    cuts = [0, first_piece, first_piece + 2, 30, 31, 60]
    for lo, hi in zip(cuts, cuts[1:]):
        out_k, out_v = layer.update(keys[:, :, lo:hi], values[:, :, lo:hi])
        assert out_k.shape[-2] == hi == layer.get_seq_length()
    assert len(layer.store) == 48  # (60 - 4 sinks - 4 residual) // 8 * 8
    assert torch.equal(layer.keys[:, :, :4], keys[:, :, :4]) and torch.equal(layer.values[:, :, :4], values[:, :, :4])
    assert torch.equal(layer.keys[:, :, 4:], keys[:, :, 52:])  # the exact residual: the most recent tokens
    # What attention saw on the last call (before its flush): the 16 tokens quantized by then (2-bit: close, not
    # equal), then the sinks and every later token exact, the 29 new ones included.
    assert torch.equal(out_k[:, :, 16:], torch.cat([keys[:, :, :4], keys[:, :, 20:]], dim=-2))
    assert not torch.equal(out_k[:, :, :16], keys[:, :, 4:20])
    assert (out_k[:, :, :16] - keys[:, :, 4:20]).abs().max() < keys.abs().max()


def test_quantized_blocks_refuse_a_partial_key_block():
    store = QuantizedBlocks(4, 8, 8)
    with pytest.raises(ValueError, match="multiple of 8"):
        store.append(torch.randn(1, 1, 5, 16), torch.randn(1, 1, 5, 16))


def test_bad_bit_widths_are_refused():
    with pytest.raises(ValueError):
        QuantPolicy(3)
