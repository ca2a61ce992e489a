"""Decode attention over the FP8 (e4m3) static cache (StaticFP8, kv/fp8.py): codes and scales read once, in registers.

Each token's key and value are 8-bit floats with one scale per (token, kv head), so the scale factors out of both
dots: q . (c_n s_n) = s_n (q . c_n) for the scores, and sum_n p_n s_n c_n = (p s) . c for the output. The kernel
converts the codes to the query's dtype (exact: every e4m3 value is a bf16 value), runs the two dots, and scales a
vector of BLOCK scores or probabilities; no dequantized tile is ever written. The split and the merge are
quant_attention's (block-cyclic over a fixed grid, one merge launch).

The reference path (StaticFP8 in kv/fp8.py) dequantizes the buffer and runs SDPA; quant_attention.use_kernel decides
between them.
"""

from __future__ import annotations

import torch

from .fp8_codes import FP8_MAX
from .quant_attention import BLOCK_N, _Scratch, _gp, _iters, merge, splits_for, triton

if triton is not None:
    import triton.language as tl

    from .quant_attention import _softmax_step

    @triton.jit
    def _fp8_attention(
        q_ptr, kc_ptr, ks_ptr, vc_ptr, vs_ptr, count_ptr, m_ptr, l_ptr, acc_ptr, scaling, kv_heads,
        sq_b, sq_h, sk_b, sk_h, sk_n, ss_b, ss_h,
        D: tl.constexpr, G: tl.constexpr, GP: tl.constexpr, BLOCK: tl.constexpr, SPLITS: tl.constexpr,
        ITERS: tl.constexpr,
    ):
        pid_bh = tl.program_id(0)
        split = tl.program_id(1)
        b = pid_bh // kv_heads
        h = pid_bh % kv_heads
        rows = tl.arange(0, GP)
        dims = tl.arange(0, D)
        row_ok = rows < G
        q = tl.load(q_ptr + b * sq_b + (h * G + rows)[:, None] * sq_h + dims[None, :], mask=row_ok[:, None],
                    other=0.0)
        DT = q.dtype
        count = tl.load(count_ptr + b)
        kc_ptr = kc_ptr + b * sk_b + h * sk_h
        vc_ptr = vc_ptr + b * sk_b + h * sk_h
        ks_ptr = ks_ptr + b * ss_b + h * ss_h
        vs_ptr = vs_ptr + b * ss_b + h * ss_h
        m_i = tl.full((GP,), -1.0e30, tl.float32)
        l_i = tl.zeros((GP,), tl.float32)
        acc = tl.zeros((GP, D), tl.float32)
        for it in range(ITERS):
            start = (it * SPLITS + split) * BLOCK
            if start < count:
                n = start + tl.arange(0, BLOCK)
                ok = n < count
                k = tl.load(kc_ptr + n[:, None] * sk_n + dims[None, :], mask=ok[:, None], other=0)
                k = k.to(tl.float8e4nv, bitcast=True).to(DT)
                ks = tl.load(ks_ptr + n, mask=ok, other=0.0).to(tl.float32)
                s = tl.dot(q, tl.trans(k)) * (ks * scaling)[None, :]
                p, alpha, l_i, m_i = _softmax_step(s, ok, m_i, l_i)
                v = tl.load(vc_ptr + n[:, None] * sk_n + dims[None, :], mask=ok[:, None], other=0)
                v = v.to(tl.float8e4nv, bitcast=True).to(DT)
                vs = tl.load(vs_ptr + n, mask=ok, other=0.0).to(tl.float32)
                acc = acc * alpha[:, None] + tl.dot((p * vs[None, :]).to(DT), v)
        at = (pid_bh * SPLITS + split) * G + rows
        tl.store(m_ptr + at, m_i, mask=row_ok)
        tl.store(l_ptr + at, l_i, mask=row_ok)
        tl.store(acc_ptr + at[:, None] * D + dims[None, :], acc, mask=row_ok[:, None])


if triton is not None:

    @triton.jit
    def _quantize_into(x_ptr, codes_ptr, scale_ptr, dims, FMAX: tl.constexpr):
        x = tl.load(x_ptr + dims).to(tl.float32)
        scale = (tl.math.div_rn(tl.max(tl.abs(x), axis=0), FMAX)).to(tl.float16)
        safe = tl.where(scale.to(tl.float32) > 0, scale.to(tl.float32), 1.0)
        codes = tl.minimum(tl.maximum(tl.math.div_rn(x, safe), -FMAX), FMAX).to(tl.float8e4nv,
                                                                                fp_downcast_rounding="rtne")
        tl.store(codes_ptr + dims, codes.to(tl.uint8, bitcast=True))
        tl.store(scale_ptr, scale)

    @triton.jit
    def _fp8_write(k_ptr, v_ptr, slot_ptr, kc_ptr, ks_ptr, vc_ptr, vs_ptr, kv_heads,
                   sx_b, sx_h, sv_b, sv_h, sc_b, sc_h, sc_n, ss_b, ss_h, D: tl.constexpr, FMAX: tl.constexpr):
        """Quantizes one (row, kv head)'s new key and value and writes them at the row's slot."""
        pid = tl.program_id(0)
        b = pid // kv_heads
        h = pid % kv_heads
        dims = tl.arange(0, D)
        slot = tl.load(slot_ptr + b)
        at = b * sc_b + h * sc_h + slot * sc_n
        scale_at = b * ss_b + h * ss_h + slot
        _quantize_into(k_ptr + b * sx_b + h * sx_h, kc_ptr + at, ks_ptr + scale_at, dims, FMAX)
        _quantize_into(v_ptr + b * sv_b + h * sv_h, vc_ptr + at, vs_ptr + scale_at, dims, FMAX)


def fp8_write(keys: torch.Tensor, values: torch.Tensor, slot: torch.Tensor, k_codes: torch.Tensor,
              k_scale: torch.Tensor, v_codes: torch.Tensor, v_scale: torch.Tensor) -> None:
    """kv/fp8.quantize_fp8 of one token's keys and values (n, kv, 1, d), written at `slot` of each row, in one
    launch (the PyTorch path takes about eight kernels for each of the two)."""
    n, kv_heads, _, d = keys.shape
    assert keys.stride(-1) == values.stride(-1) == 1 and k_codes.stride() == v_codes.stride()
    _fp8_write[(n * kv_heads,)](
        keys, values, slot, k_codes, k_scale, v_codes, v_scale, kv_heads,
        keys.stride(0), keys.stride(1), values.stride(0), values.stride(1),
        k_codes.stride(0), k_codes.stride(1), k_codes.stride(2), k_scale.stride(0), k_scale.stride(1),
        D=d, FMAX=FP8_MAX, num_warps=1,
    )


def fp8_attention(query: torch.Tensor, k_codes: torch.Tensor, k_scale: torch.Tensor, v_codes: torch.Tensor,
                  v_scale: torch.Tensor, count: torch.Tensor, scaling: float) -> torch.Tensor:
    """Attention of one-token queries (n, q_heads, 1, d) over each row's first `count` slots of uint8 e4m3 codes
    (n, kv, S, d) with float16 scales (n, kv, S): (n, 1, q_heads, d) in the query's dtype."""
    n, q_heads, _, d = query.shape
    kv_heads, capacity = k_codes.shape[1], k_codes.shape[2]
    group = q_heads // kv_heads
    splits = splits_for(capacity)
    m, l, acc = _Scratch.get(n, kv_heads, splits, group, d, query.device, "fp8")
    q = query[:, :, 0, :]
    assert k_codes.stride() == v_codes.stride() and k_scale.stride() == v_scale.stride()
    _fp8_attention[(n * kv_heads, splits)](
        q, k_codes, k_scale, v_codes, v_scale, count, m, l, acc, float(scaling), kv_heads,
        q.stride(0), q.stride(1), k_codes.stride(0), k_codes.stride(1), k_codes.stride(2), k_scale.stride(0),
        k_scale.stride(1),
        D=d, G=group, GP=_gp(group), BLOCK=BLOCK_N, SPLITS=splits, ITERS=_iters(capacity, splits), num_warps=4,
    )
    return merge([(m, l, acc)], q_heads, query.dtype)


def self_check(b: int, kv_heads: int, q_heads: int, d: int, device, dtype: torch.dtype = torch.bfloat16,
               capacity: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """(reference, kernel) attention over random FP8 codes of rows filled to different counts (tests)."""
    import torch.nn.functional as F

    from .fp8_codes import dequantize_fp8, quantize_fp8

    keys = torch.randn(b, kv_heads, capacity, d, device=device) * 3 + 1
    values = torch.randn(b, kv_heads, capacity, d, device=device)
    kc, ks = quantize_fp8(keys)
    vc, vs = quantize_fp8(values)
    count = torch.tensor([capacity - 77, 300][:b] + [5] * max(0, b - 2), device=device)
    query = torch.randn(b, q_heads, 1, d, device=device, dtype=dtype)
    scaling = d ** -0.5
    kernel = fp8_attention(query, kc, ks, vc, vs, count, scaling)
    mask = torch.arange(capacity, device=device)[None] < count[:, None]
    reference = F.scaled_dot_product_attention(
        query.float(), dequantize_fp8(kc, ks, dtype).float(), dequantize_fp8(vc, vs, dtype).float(),
        attn_mask=mask[:, None, None, :], scale=scaling, enable_gqa=True).transpose(1, 2)
    return reference.float(), kernel.float()
