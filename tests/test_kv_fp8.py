"""The `fp8` KV policy (kv/fp8.py) on the CPU reference path: the e4m3 round trip's error bound, the bytes it
stores, its logits beside `full`'s, and its state through the prefix cache."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from longread.backends import kv
from longread.backends.kv.fp8 import FP8_MAX, dequantize_fp8, quantize_fp8
from longread.backends.local.generation import prefill

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                        max_position_embeddings=1024)).eval()


@given(seed=st.integers(0, 2**31 - 1), magnitude=st.floats(1e-3, 1e4), outlier=st.floats(1.0, 1e3))
@settings(max_examples=60, deadline=None)
def test_the_round_trip_error_is_at_most_a_sixteenth_of_each_value_or_of_the_rows_range(seed, magnitude, outlier):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 5, 64, generator=g) * magnitude
    x[..., 7] *= outlier  # an outlier channel: it sets the row's scale, the others keep their own precision
    codes, scale = quantize_fp8(x)
    back = dequantize_fp8(codes, scale, torch.float32)
    assert codes.dtype == torch.uint8 and scale.dtype == torch.float16 and scale.shape == x.shape[:-1]
    # e4m3: 3 mantissa bits, so half a step is 2^-4 of the value; values below the smallest normal (2^-6 of the
    # scale) round on a fixed grid of 2^-9 of the scale. The float16 scale adds its own 2^-11.
    step = scale.float().unsqueeze(-1) * 2.0**-9
    assert ((back - x).abs() <= x.abs() * (2.0**-4 + 2.0**-10) + step).all()
    assert (back.abs().amax(dim=-1) <= scale.float() * FP8_MAX * (1 + 2.0**-10)).all()


def test_zero_rows_stay_zero():
    codes, scale = quantize_fp8(torch.zeros(2, 4, 16))
    assert (scale == 0).all() and (dequantize_fp8(codes, scale, torch.float32) == 0).all()


def test_fp8_stores_half_of_bf16_plus_a_scale_per_token_and_head():
    from transformers import LlamaConfig

    config = LlamaConfig(hidden_size=4096, num_hidden_layers=2, num_attention_heads=32, num_key_value_heads=8,
                         head_dim=128)
    cache = kv.make_cache("fp8", config)
    for layer in cache.layers:
        layer.update(torch.randn(1, 8, 1000, 128, dtype=torch.bfloat16), torch.randn(1, 8, 1000, 128,
                                                                                   dtype=torch.bfloat16))
    bf16 = kv.bf16_bytes_per_token(config) * 1000
    assert cache.stored_bytes() == 2 * 2 * 8 * 1000 * (128 + 2)
    assert bf16 / cache.stored_bytes() == pytest.approx(256 / 130)


def test_fp8_logits_stay_close_to_full_and_every_token_is_kept():
    model = tiny()
    tokens = torch.randint(0, 128, (300,), generator=torch.Generator().manual_seed(1)).tolist()
    full, fp8 = kv.make_cache("full", model.config), kv.make_cache("fp8", model.config)
    a, b = prefill(model, tokens, full, chunk=64), prefill(model, tokens, fp8, chunk=64)
    assert fp8.get_seq_length() == full.get_seq_length() == 300
    assert 0 < (a - b).abs().max() < 0.05 * a.abs().max()


def test_fp8_state_survives_the_prefix_cache_round_trip():
    model = tiny()
    tokens = torch.randint(0, 128, (200,), generator=torch.Generator().manual_seed(2)).tolist()
    cache = kv.make_cache("fp8", model.config)
    prefill(model, tokens[:150], cache, chunk=32)
    restored = kv.import_state(kv.make_cache("fp8", model.config), kv.export_state(cache))
    snapshot = copy.deepcopy(cache)
    assert restored.stored_bytes() == snapshot.stored_bytes() == cache.stored_bytes()
    expected = prefill(model, tokens[150:], cache, start_position=150, chunk=32)
    for twin in (restored, snapshot):
        assert torch.equal(prefill(model, tokens[150:], twin, start_position=150, chunk=32), expected)
