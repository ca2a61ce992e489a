"""The decode attention kernels (kv/quant_attention.py, kv/fp8_attention.py) against their PyTorch references.

They run on CUDA, or on the CPU under Triton's interpreter: `TRITON_INTERPRET=1` with Triton installed beside the
CPU torch (`pip install --target DIR triton`, then PYTHONPATH=DIR). Without either, these tests skip (the CPU
build of torch ships no Triton); benchmarks/engine_gpu_checks.py runs the same checks on the GPU machine.
Inputs are fresh random numbers every time (never zeros), rows are filled to different counts, and the outputs
are compared by their largest difference relative to the reference's largest value."""

from __future__ import annotations

import pytest
import torch

from longread.backends.kv import quant_attention

RUNNABLE = quant_attention.triton is not None and (torch.cuda.is_available() or quant_attention.interpreted())
pytestmark = pytest.mark.skipif(not RUNNABLE, reason="needs CUDA, or Triton with TRITON_INTERPRET=1")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# The interpreter computes in float32 (it has no bf16 arithmetic); CUDA runs the serving dtype.
DTYPE, TOLERANCE = (torch.bfloat16, 2e-2) if DEVICE == "cuda" else (torch.float32, 1e-4)


def relative(reference: torch.Tensor, out: torch.Tensor) -> float:
    assert torch.isfinite(out).all()
    return ((reference - out).abs().max() / reference.abs().max()).item()


@pytest.mark.parametrize("bits, group, value_group, head_dim", [
    (4, 128, None, 64), (8, 128, None, 128), (2, 64, None, 64),  # key scales per block, value scales per token
    (4, 16, None, 64),  # key groups shorter than a block: scales per token
    (2, 64, 32, 128),  # several value groups per token
])
def test_the_codes_kernel_matches_dequantize_then_sdpa(bits, group, value_group, head_dim):
    reference, fused = quant_attention.self_check(2, 2, 8, head_dim, bits, DEVICE, dtype=DTYPE, group=group,
                                                  value_group=value_group)
    assert relative(reference, fused) < TOLERANCE


def test_the_fp8_kernel_matches_dequantize_then_sdpa():
    from longread.backends.kv import fp8_attention

    reference, kernel = fp8_attention.self_check(2, 2, 8, 64, DEVICE, dtype=DTYPE)
    assert relative(reference, kernel) < TOLERANCE


@pytest.mark.parametrize("counts", [[700, 1, 333], [64, 65, 1024]])
def test_the_dense_kernel_reads_each_rows_filled_slots_only(counts):
    import torch.nn.functional as F

    n, capacity = len(counts), 1024
    q = torch.randn(n, 8, 1, 64, device=DEVICE, dtype=DTYPE)
    keys = torch.randn(n, 2, capacity, 64, device=DEVICE, dtype=DTYPE)
    values = torch.randn(n, 2, capacity, 64, device=DEVICE, dtype=DTYPE)
    count = torch.tensor(counts, device=DEVICE)
    for row, c in enumerate(counts):  # past the count: garbage that must not be read
        keys[row, :, c:] = float("nan")
        values[row, :, c:] = float("nan")
    out = quant_attention.dense_attention(q, keys, values, count, 0.125)
    mask = torch.arange(capacity, device=DEVICE)[None] < count[:, None]
    reference = F.scaled_dot_product_attention(q.float(), keys.nan_to_num().float(), values.nan_to_num().float(),
                                               attn_mask=mask[:, None, None, :], scale=0.125,
                                               enable_gqa=True).transpose(1, 2)
    assert relative(reference, out.float()) < TOLERANCE


def test_the_merge_kernel_matches_the_pytorch_merge():
    q = torch.randn(2, 8, 1, 64, device=DEVICE, dtype=DTYPE)
    parts = [quant_attention.dense_partials(q, torch.randn(2, 2, 512, 64, device=DEVICE, dtype=DTYPE),
                                            torch.randn(2, 2, 512, 64, device=DEVICE, dtype=DTYPE),
                                            torch.tensor([512, 3], device=DEVICE), 0.125, tag=f"t{i}")
             for i in range(2)]
    merged = quant_attention.merge(parts, 8, torch.float32)
    assert relative(quant_attention.merge_reference(parts, 8, torch.float32), merged) < 1e-5


def test_the_fp8_write_kernel_writes_what_quantize_fp8_computes():
    from longread.backends.kv.fp8 import quantize_fp8
    from longread.backends.kv.fp8_attention import fp8_write

    n, heads, slots, d = 3, 2, 40, 64
    keys = torch.randn(n, heads, 1, d, device=DEVICE, dtype=DTYPE) * 7
    values = torch.randn(n, heads, 1, d, device=DEVICE, dtype=DTYPE)
    values[1] = 0  # a zero vector: scale 0, codes 0
    slot = torch.tensor([0, 17, slots - 1], device=DEVICE)
    buffers = [torch.full((n, heads, slots, d), 7, dtype=torch.uint8, device=DEVICE),
               torch.full((n, heads, slots), 3.0, dtype=torch.float16, device=DEVICE)]
    k_codes, k_scale = (b.clone() for b in buffers)
    v_codes, v_scale = (b.clone() for b in buffers)
    fp8_write(keys, values, slot, k_codes, k_scale, v_codes, v_scale)
    for written, scales, states in ((k_codes, k_scale, keys), (v_codes, v_scale, values)):
        codes, scale = quantize_fp8(states)
        carried = _carried_across_a_binade(states, codes, scale) if DEVICE == "cpu" else torch.zeros_like(codes).bool()
        assert carried.float().mean() < 0.1
        for row in range(n):
            s = int(slot[row])
            assert torch.equal(scales[row, :, s], scale[row, :, 0])
            same = written[row, :, s] == codes[row, :, 0]
            assert (same | carried[row, :, 0]).all()
            others = [i for i in range(slots) if i != s]
            assert (written[row, :, others] == 7).all() and (scales[row, :, others] == 3.0).all()


def _carried_across_a_binade(states, codes, scale):
    """Where round-to-nearest carried the mantissa into the next exponent (the code's mantissa bits are 0 and the
    value is smaller than the code's): Triton's interpreter does not carry there (its float downcast drops the
    carry), the hardware conversion does. Only these codes may differ under the interpreter."""
    from longread.backends.kv.fp8 import FP8

    y = states.float() / torch.where(scale > 0, scale.float(), 1.0).unsqueeze(-1)
    value = codes.view(FP8).float()
    return ((codes & 7) == 0) & (y.abs() < value.abs())
