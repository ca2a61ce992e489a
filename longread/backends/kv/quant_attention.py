"""Decode attention over quantized KV that reads the codes once, without a dequantized copy (issue 14, item 4).

The reference path (kv/static.py `_attend_quantized`, and the dynamic layers) dequantizes the whole code buffer
into a bf16 tensor, then runs SDPA over it: per step that writes and reads again twice the bytes of a bf16
cache, which is why `quant:4` decoded slower than `full` although it stores 3.5x fewer bytes. Here one Triton
kernel (split along the sequence, flash-decoding style) reads each token's packed key and value codes with
their scales and zero points, dequantizes in registers, and keeps an online softmax; it stops at the row's
filled count, so a short row reads only what it holds. The exact part of the cache (sinks, residual ring, the
new token: at most a few hundred slots) is attended in PyTorch, and the two partial softmaxes are merged by
their log-sum-exp. Every shape is fixed, so the step stays capturable in a CUDA graph.

Written by hand because no library kernel takes KIVI's layout (keys per channel over token blocks, values per
token over channel groups, packed 2/4 codes a byte). The reference path stays as the fallback (CPU, no Triton,
LONGREAD_QUANT_KERNEL=0); tests/test_gpu_engine.py compares the two on the GPU.
"""

from __future__ import annotations

import os
from typing import Any

import torch

try:  # Triton ships with CUDA builds of torch; CPU installs have none
    import triton
    import triton.language as tl
except Exception:  # noqa: BLE001
    triton = None  # type: ignore[assignment]

BLOCK_N = 64
MAX_SPLITS = 64


def use_kernel(query: torch.Tensor) -> bool:
    """The fused kernel for one-token CUDA queries when Triton is there (LONGREAD_QUANT_KERNEL=0: the reference)."""
    return (triton is not None and query.is_cuda and query.shape[2] == 1
            and os.environ.get("LONGREAD_QUANT_KERNEL", "1") != "0")


if triton is not None:

    @triton.jit
    def _codes_attention(
        q_ptr, kc_ptr, ks_ptr, kz_ptr, vc_ptr, vs_ptr, vz_ptr, low_ptr, m_ptr, l_ptr, acc_ptr,
        scaling, kv_heads,
        sq_b, sq_h, skc_b, skc_h, skc_n, sks_b, sks_h, sks_n, svc_b, svc_h, svc_n, svs_b, svs_h, svs_n,
        so_b, so_h, so_s,
        BITS: tl.constexpr, GROUP: tl.constexpr, VGROUP: tl.constexpr, D: tl.constexpr, G: tl.constexpr,
        GP: tl.constexpr, BLOCK: tl.constexpr, CHUNK: tl.constexpr,
    ):
        pid_bh = tl.program_id(0)
        split = tl.program_id(1)
        b = pid_bh // kv_heads
        h = pid_bh % kv_heads
        PER: tl.constexpr = 8 // BITS
        MASK: tl.constexpr = (1 << BITS) - 1
        rows = tl.arange(0, GP)
        dims = tl.arange(0, D)
        row_ok = rows < G
        q = tl.load(q_ptr + b * sq_b + (h * G + rows)[:, None] * sq_h + dims[None, :], mask=row_ok[:, None],
                    other=0.0)
        low = tl.load(low_ptr + b)
        start = split * CHUNK
        end = tl.minimum(start + CHUNK, low)
        m_i = tl.full((GP,), -1.0e30, tl.float32)  # finite: a fully masked block must not give inf - inf
        l_i = tl.zeros((GP,), tl.float32)
        acc = tl.zeros((GP, D), tl.float32)
        byte = dims // PER
        shift = ((dims % PER) * BITS).to(tl.uint8)
        # A fixed trip count (the split's share of the capacity) with the loads masked past the filled count:
        # blocks past it read no memory.
        for lo in range(0, CHUNK, BLOCK):
            n = start + lo + tl.arange(0, BLOCK)
            ok = n < end
            kc = tl.load(kc_ptr + b * skc_b + h * skc_h + n[:, None] * skc_n + byte[None, :], mask=ok[:, None],
                         other=0)
            kq = ((kc >> shift[None, :]) & MASK).to(tl.float32)
            blk = n // GROUP
            ks = tl.load(ks_ptr + b * sks_b + h * sks_h + blk[:, None] * sks_n + dims[None, :], mask=ok[:, None],
                         other=0.0).to(tl.float32)
            kz = tl.load(kz_ptr + b * sks_b + h * sks_h + blk[:, None] * sks_n + dims[None, :], mask=ok[:, None],
                         other=0.0).to(tl.float32)
            k = (kq * ks + kz).to(q.dtype)  # (BLOCK, D), dequantized in registers
            s = tl.dot(q, tl.trans(k)) * scaling  # (GP, BLOCK), fp32 accumulation
            s = tl.where(ok[None, :], s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, axis=1))
            alpha = tl.exp(m_i - m_new)
            p = tl.exp(s - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, axis=1)
            vc = tl.load(vc_ptr + b * svc_b + h * svc_h + n[:, None] * svc_n + byte[None, :], mask=ok[:, None],
                         other=0)
            vq = ((vc >> shift[None, :]) & MASK).to(tl.float32)
            vg = dims // VGROUP
            vs = tl.load(vs_ptr + b * svs_b + h * svs_h + n[:, None] * svs_n + vg[None, :], mask=ok[:, None],
                         other=0.0).to(tl.float32)
            vz = tl.load(vz_ptr + b * svs_b + h * svs_h + n[:, None] * svs_n + vg[None, :], mask=ok[:, None],
                         other=0.0).to(tl.float32)
            v = (vq * vs + vz).to(q.dtype)  # (BLOCK, D)
            acc = acc * alpha[:, None] + tl.dot(p.to(q.dtype), v)
            m_i = m_new
        base = b * so_b + h * so_h + split * so_s
        tl.store(m_ptr + base // D + rows, m_i, mask=row_ok)
        tl.store(l_ptr + base // D + rows, l_i, mask=row_ok)
        tl.store(acc_ptr + base + rows[:, None] * D + dims[None, :], acc, mask=row_ok[:, None])


    @triton.jit
    def _dense_attention(
        q_ptr, k_ptr, v_ptr, count_ptr, m_ptr, l_ptr, acc_ptr, scaling, kv_heads,
        sq_b, sq_h, sk_b, sk_h, sk_n, sv_b, sv_h, sv_n, so_b, so_h, so_s,
        D: tl.constexpr, G: tl.constexpr, GP: tl.constexpr, BLOCK: tl.constexpr, CHUNK: tl.constexpr,
    ):
        """The same split softmax over a 16-bit buffer's first `count` slots (full, sink, snap, the exact part)."""
        pid_bh = tl.program_id(0)
        split = tl.program_id(1)
        b = pid_bh // kv_heads
        h = pid_bh % kv_heads
        rows = tl.arange(0, GP)
        dims = tl.arange(0, D)
        row_ok = rows < G
        q = tl.load(q_ptr + b * sq_b + (h * G + rows)[:, None] * sq_h + dims[None, :], mask=row_ok[:, None],
                    other=0.0)
        count = tl.load(count_ptr + b)
        start = split * CHUNK
        end = tl.minimum(start + CHUNK, count)
        m_i = tl.full((GP,), -1.0e30, tl.float32)
        l_i = tl.zeros((GP,), tl.float32)
        acc = tl.zeros((GP, D), tl.float32)
        for lo in range(0, CHUNK, BLOCK):
            n = start + lo + tl.arange(0, BLOCK)
            ok = n < end
            k = tl.load(k_ptr + b * sk_b + h * sk_h + n[:, None] * sk_n + dims[None, :], mask=ok[:, None], other=0.0)
            s = tl.dot(q, tl.trans(k)) * scaling  # (GP, BLOCK), fp32 accumulation
            s = tl.where(ok[None, :], s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, axis=1))
            alpha = tl.exp(m_i - m_new)
            p = tl.exp(s - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, axis=1)
            v = tl.load(v_ptr + b * sv_b + h * sv_h + n[:, None] * sv_n + dims[None, :], mask=ok[:, None], other=0.0)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
            m_i = m_new
        base = b * so_b + h * so_h + split * so_s
        tl.store(m_ptr + base // D + rows, m_i, mask=row_ok)
        tl.store(l_ptr + base // D + rows, l_i, mask=row_ok)
        tl.store(acc_ptr + base + rows[:, None] * D + dims[None, :], acc, mask=row_ok[:, None])


class _Scratch:
    """Per-shape output buffers of the kernel (fixed addresses for CUDA graphs)."""

    buffers: dict[tuple, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def get(cls, n: int, kv_heads: int, splits: int, group: int, d: int, device: Any, tag: str = "codes"):
        key = (tag, n, kv_heads, splits, group, d, str(device))
        found = cls.buffers.get(key)
        if found is None:
            acc = torch.empty(n, kv_heads, splits, group, d, dtype=torch.float32, device=device)
            m = torch.empty(n, kv_heads, splits, group, dtype=torch.float32, device=device)
            found = cls.buffers[key] = (m, torch.empty_like(m), acc)
        return found


def codes_partials(query: torch.Tensor, codes: Any, low: torch.Tensor, scaling: float):
    """(m, l, acc) of the softmax over each row's first `low` code tokens, per split:
    (n, kv_heads, splits, group) twice and (n, kv_heads, splits, group, d)."""
    n, q_heads, _, d = query.shape
    kv_heads = codes.k_codes.shape[1]
    group = q_heads // kv_heads
    splits, chunk = _splits(codes.capacity)
    m, l, acc = _Scratch.get(n, kv_heads, splits, group, d, query.device)
    q = query[:, :, 0, :]
    kc, ks, kz = codes.k_codes[:n], codes.k_scale[:n], codes.k_zero[:n]
    vc, vs, vz = codes.v_codes[:n], codes.v_scale[:n], codes.v_zero[:n]
    gp = max(16, triton.next_power_of_2(group))
    _codes_attention[(n * kv_heads, splits)](
        q, kc, ks, kz, vc, vs, vz, low, m, l, acc,
        float(scaling), kv_heads,
        q.stride(0), q.stride(1), kc.stride(0), kc.stride(1), kc.stride(2), ks.stride(0), ks.stride(1),
        ks.stride(2), vc.stride(0), vc.stride(1), vc.stride(2), vs.stride(0), vs.stride(1), vs.stride(2),
        acc.stride(0), acc.stride(1), acc.stride(2),
        BITS=codes.bits, GROUP=codes.group, VGROUP=codes.value_group, D=d, G=group, GP=gp, BLOCK=BLOCK_N,
        CHUNK=chunk, num_warps=4,
    )
    return m, l, acc


def _splits(capacity: int) -> tuple[int, int]:
    splits = max(1, min(MAX_SPLITS, -(-capacity // BLOCK_N)))
    chunk = -(-capacity // splits)
    return splits, -(-chunk // BLOCK_N) * BLOCK_N


def dense_partials(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, count: torch.Tensor,
                   scaling: float, tag: str = "dense"):
    """(m, l, acc) of the softmax over each row's first `count` slots of 16-bit keys/values (n, kv, S, d)."""
    n, q_heads, _, d = query.shape
    kv_heads, capacity = keys.shape[1], keys.shape[2]
    group = q_heads // kv_heads
    splits, chunk = _splits(capacity)
    m, l, acc = _Scratch.get(n, kv_heads, splits, group, d, query.device, tag)
    q = query[:, :, 0, :]
    _dense_attention[(n * kv_heads, splits)](
        q, keys, values, count, m, l, acc, float(scaling), kv_heads,
        q.stride(0), q.stride(1), keys.stride(0), keys.stride(1), keys.stride(2), values.stride(0),
        values.stride(1), values.stride(2), acc.stride(0), acc.stride(1), acc.stride(2),
        D=d, G=group, GP=max(16, triton.next_power_of_2(group)), BLOCK=BLOCK_N, CHUNK=chunk, num_warps=4,
    )
    return m, l, acc


def merge(parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], q_heads: int, dtype: torch.dtype
          ) -> torch.Tensor:
    """Split softmaxes (m, l, acc), each (n, kv, splits, group[, d]), merged by their maxima: (n, 1, q_heads, d)."""
    m_all = torch.stack([m.amax(dim=2) for m, _, _ in parts]).amax(dim=0)  # (n, kv, group)
    total, out = 0.0, 0.0
    for m, l, acc in parts:
        w = torch.exp(m - m_all[:, :, None])  # empty splits: exp(-1e30 - m) = 0
        total = total + (l * w).sum(dim=2)
        out = out + (acc * w[..., None]).sum(dim=2)
    out = out / total[..., None]
    n, kv, group, d = out.shape
    return out.reshape(n, 1, q_heads, d).to(dtype)


def dense_attention(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, count: torch.Tensor,
                    scaling: float) -> torch.Tensor:
    """Attention of one-token queries (n, q_heads, 1, d) over each row's first `count` slots: (n, 1, q_heads, d)."""
    return merge([dense_partials(query, keys, values, count, scaling)], query.shape[1], query.dtype)


def decode_attention(query: torch.Tensor, codes: Any, low: torch.Tensor, exact_keys: torch.Tensor,
                     exact_values: torch.Tensor, exact_filled: torch.Tensor, scaling: float) -> torch.Tensor:
    """Attention of one-token queries (n, q_heads, 1, d) over [first `low` codes][first `exact_filled` exact
    slots] per row; (n, 1, q_heads, d) in the query's dtype."""
    parts = [codes_partials(query, codes, low, scaling),
             dense_partials(query, exact_keys, exact_values, exact_filled, scaling, tag="exact")]
    return merge(parts, query.shape[1], query.dtype)


def self_check(b: int, kv_heads: int, q_heads: int, d: int, bits: int, device: Any, tokens: int = 700,
               dtype: torch.dtype = torch.bfloat16) -> tuple[torch.Tensor, torch.Tensor]:
    """(reference, fused) attention outputs over random codes of rows filled to different counts (tests)."""
    import torch.nn.functional as F

    from .quantize import dequantize_keys, dequantize_values, quantize_keys, quantize_values, Quantized

    group, vgroup, capacity, slots = 128, min(128, d), 1024, 48

    class Codes:
        pass

    codes = Codes()
    keys = torch.randn(b, kv_heads, capacity, d, device=device)
    values = torch.randn(b, kv_heads, capacity, d, device=device)
    k, v = quantize_keys(keys, bits, group), quantize_values(values, bits, vgroup)
    codes.k_codes, codes.k_scale, codes.k_zero = k.codes, k.scale, k.zero
    codes.v_codes, codes.v_scale, codes.v_zero = v.codes, v.scale, v.zero
    codes.bits, codes.group, codes.value_group, codes.capacity = bits, group, vgroup, capacity
    low = torch.tensor([tokens // group * group, (tokens // 2) // group * group][:b] + [group] * max(0, b - 2),
                       device=device)
    exact_k = torch.randn(b, kv_heads, slots, d, device=device, dtype=dtype)
    exact_v = torch.randn(b, kv_heads, slots, d, device=device, dtype=dtype)
    filled = torch.tensor([slots - 3, 10][:b] + [5] * max(0, b - 2), device=device)
    query = torch.randn(b, q_heads, 1, d, device=device, dtype=dtype)
    scaling = d ** -0.5
    fused = decode_attention(query, codes, low, exact_k, exact_v, filled, scaling)
    full_k = torch.cat([dequantize_keys(Quantized(k.codes, k.scale, k.zero), bits, group, dtype), exact_k], dim=2)
    full_v = torch.cat([dequantize_values(Quantized(v.codes, v.scale, v.zero), bits, vgroup, dtype), exact_v], dim=2)
    arange = torch.arange(capacity + slots, device=device)
    mask = torch.where(arange[None] < capacity, arange[None] < low[:, None], arange[None] - capacity < filled[:, None])
    reference = F.scaled_dot_product_attention(query, full_k, full_v, attn_mask=mask[:, None, None, :],
                                               scale=scaling, enable_gqa=True).transpose(1, 2)
    return reference.float(), fused.float()
