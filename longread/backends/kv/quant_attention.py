"""Decode attention kernels of the static caches: one-token queries over each row's filled slots (issue 14 item 4,
issue 21 item 4).

The reference path (kv/static.py, and the dynamic layers) dequantizes the whole code buffer into a bf16 tensor
and runs SDPA over it: per step that writes and reads again twice the bytes of a bf16 cache, which is why
`quant:4` decoded slower than `full` although it stores 3.5x fewer bytes. SDPA over a masked static buffer at
batch 1 also runs on a few SMs only. These Triton kernels instead:
- split the filled slots block-cyclically over a fixed grid (flash-decoding): program `s` of a (row, kv head) takes
  blocks s, s + SPLITS, s + 2 SPLITS, ... up to the row's filled count, so every program has work at any fill and
  a short row in a long buffer reads only what it holds; the grid never changes, so a CUDA graph captures it;
- for `quant`, read each byte of codes once (every code of a byte goes into its own dot: channels i, i + PER, ...),
  read the key scales and zero points once per block of tokens (a block lies in one key group) and the value
  scales once per token, and never build a dequantized tile: q . (c s + z) = (q s) . c + q . z for keys, and
  p . (c s + z) = (p s) . c + p . z for values (codes are small integers, exact in bf16);
- merge the partial softmaxes of every split (and of the exact part, for `quant`/`mixed`) in one more launch
  (`_merge`), where the PyTorch merge took about fifteen small kernels per layer.

Written by hand because no library kernel takes KIVI's layout (keys per channel over token blocks, values per
token over channel groups, packed 2/4 codes a byte). The reference path stays the fallback: on the CPU, without
Triton, with LONGREAD_QUANT_KERNEL=0, for shapes the kernels do not take, and for the rest of the process once a
kernel has failed (`disable`). tests/test_gpu_engine.py and benchmarks/engine_gpu_checks.py compare the two on the
GPU; tests/test_decode_kernels.py runs them under TRITON_INTERPRET=1 on the CPU where Triton is installed.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch

try:  # Triton ships with CUDA builds of torch; CPU installs have none
    import triton
    import triton.language as tl
except Exception:  # noqa: BLE001
    triton = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

BLOCK_N = 64
MAX_SPLITS = 64
_DISABLED: list[str] = []  # why the kernels were turned off for this process (empty: on)


def interpreted() -> bool:
    """Triton's interpreter (TRITON_INTERPRET=1) runs the kernels on CPU tensors: the CPU tests use it."""
    return triton is not None and os.environ.get("TRITON_INTERPRET") == "1"


def kernels_on(tensor: torch.Tensor) -> bool:
    """The kernels for this CUDA tensor (or any, under the interpreter) when Triton is there, unless
    LONGREAD_QUANT_KERNEL=0 or a kernel failed earlier in this process (then the reference path)."""
    return (triton is not None and (tensor.is_cuda or interpreted()) and not _DISABLED
            and os.environ.get("LONGREAD_QUANT_KERNEL", "1") != "0")


def use_kernel(query: torch.Tensor) -> bool:
    """The attention kernels for one-token queries (see kernels_on)."""
    return query.shape[2] == 1 and _head_dim_ok(query.shape[-1]) and kernels_on(query)


def disable(reason: str) -> None:
    """Turns the kernels off for the rest of the process (the batcher calls it when a step failed in one)."""
    if not _DISABLED:
        log.warning("decode attention kernels turned off, the reference path runs from now on: %s", reason)
    _DISABLED.append(reason)


def enabled() -> bool:
    return triton is not None and not _DISABLED


def _head_dim_ok(d: int) -> bool:
    return d >= 16 and d & (d - 1) == 0


def codes_supported(bits: int, head_dim: int) -> bool:
    """A dot needs at least 16 along its reduced dimension: head_dim / (codes per byte) channels per dot."""
    return _head_dim_ok(head_dim) and head_dim // (8 // bits) >= 16


if triton is not None:

    @triton.jit
    def _softmax_step(s, ok, m_i, l_i):
        s = tl.where(ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.exp(m_i - m_new)
        p = tl.exp(s - m_new[:, None])
        return p, alpha, l_i * alpha + tl.sum(p, axis=1), m_new

    @triton.jit
    def _dense_attention(
        q_ptr, k_ptr, v_ptr, count_ptr, m_ptr, l_ptr, acc_ptr, scaling, kv_heads,
        sq_b, sq_h, sk_b, sk_h, sk_n, sv_b, sv_h, sv_n,
        D: tl.constexpr, G: tl.constexpr, GP: tl.constexpr, BLOCK: tl.constexpr, SPLITS: tl.constexpr,
        ITERS: tl.constexpr,
    ):
        """Partial softmax of split `program_id(1)` over a 16-bit buffer's first `count` slots."""
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
        m_i = tl.full((GP,), -1.0e30, tl.float32)  # finite: a split with no block must not give inf - inf
        l_i = tl.zeros((GP,), tl.float32)
        acc = tl.zeros((GP, D), tl.float32)
        # A fixed trip count (the grid and the loop are the same whatever the fill, as graphs need); blocks past
        # the filled count are skipped, so they read nothing and compute nothing.
        for it in range(ITERS):
            start = (it * SPLITS + split) * BLOCK
            if start < count:
                n = start + tl.arange(0, BLOCK)
                ok = n < count
                k = tl.load(k_ptr + b * sk_b + h * sk_h + n[:, None] * sk_n + dims[None, :], mask=ok[:, None],
                            other=0.0)
                s = tl.dot(q, tl.trans(k)) * scaling  # (GP, BLOCK), fp32 accumulation
                p, alpha, l_i, m_i = _softmax_step(s, ok, m_i, l_i)
                v = tl.load(v_ptr + b * sv_b + h * sv_h + n[:, None] * sv_n + dims[None, :], mask=ok[:, None],
                            other=0.0)
                acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        at = (pid_bh * SPLITS + split) * G + rows
        tl.store(m_ptr + at, m_i, mask=row_ok)
        tl.store(l_ptr + at, l_i, mask=row_ok)
        tl.store(acc_ptr + at[:, None] * D + dims[None, :], acc, mask=row_ok[:, None])

    @triton.jit
    def _code_part(bytes_, PART: tl.constexpr, BITS: tl.constexpr):
        return (bytes_ >> (PART * BITS)) & ((1 << BITS) - 1)

    @triton.jit
    def _key_scores(q_ptr, ks_ptr, kz_ptr, kbytes, n, ok, qrow, row_ok, jdims, sks_n, start,
                    PART: tl.constexpr, PER: tl.constexpr, BITS: tl.constexpr, GROUP: tl.constexpr,
                    KROW: tl.constexpr, DT: tl.constexpr):
        """Part PART's contribution (channels j * PER + PART) to the scores (GP, BLOCK), and to the key bias."""
        channel = jdims * PER + PART
        q = tl.load(q_ptr + qrow[:, None] + channel[None, :], mask=row_ok[:, None], other=0.0).to(tl.float32)
        codes = _code_part(kbytes, PART, BITS).to(DT)  # (BLOCK, DP), exact small integers
        if KROW:  # the block lies in one key group: one scale and zero point per channel
            blk = start // GROUP
            ks = tl.load(ks_ptr + blk * sks_n + channel).to(tl.float32)
            kz = tl.load(kz_ptr + blk * sks_n + channel).to(tl.float32)
            s = tl.dot((q * ks[None, :]).to(DT), tl.trans(codes))
            bias = tl.sum(q * kz[None, :], axis=1)
        else:
            grp = n // GROUP
            ks = tl.load(ks_ptr + grp[:, None] * sks_n + channel[None, :], mask=ok[:, None], other=0.0)
            kz = tl.load(kz_ptr + grp[:, None] * sks_n + channel[None, :], mask=ok[:, None], other=0.0)
            k = (codes.to(tl.float32) * ks.to(tl.float32) + kz.to(tl.float32)).to(DT)
            s = tl.dot(q.to(DT), tl.trans(k))
            bias = tl.zeros((q.shape[0],), tl.float32)
        return s, bias

    @triton.jit
    def _value_part(acc, p, alpha, vbytes, vs_row, vz_row, vs_ptr, vz_ptr, n, ok, jdims, svs_n,
                    PART: tl.constexpr, PER: tl.constexpr, BITS: tl.constexpr, VGROUP: tl.constexpr,
                    VROW: tl.constexpr, DT: tl.constexpr):
        codes = _code_part(vbytes, PART, BITS).to(DT)  # (BLOCK, DP)
        if VROW:  # one value group per token: p . (c s + z) = (p s) . c + p . z
            pv = (p * vs_row[None, :]).to(DT)
            corr = tl.sum(p * vz_row[None, :], axis=1)
            return acc * alpha[:, None] + tl.dot(pv, codes) + corr[:, None]
        channel = jdims * PER + PART
        vs = tl.load(vs_ptr + n[:, None] * svs_n + (channel // VGROUP)[None, :], mask=ok[:, None], other=0.0)
        vz = tl.load(vz_ptr + n[:, None] * svs_n + (channel // VGROUP)[None, :], mask=ok[:, None], other=0.0)
        v = (codes.to(tl.float32) * vs.to(tl.float32) + vz.to(tl.float32)).to(DT)
        return acc * alpha[:, None] + tl.dot(p.to(DT), v)

    @triton.jit
    def _codes_attention(
        q_ptr, kc_ptr, ks_ptr, kz_ptr, vc_ptr, vs_ptr, vz_ptr, low_ptr, m_ptr, l_ptr, acc_ptr,
        scaling, kv_heads,
        sq_b, sq_h, skc_b, skc_h, skc_n, sks_b, sks_h, sks_n, svc_b, svc_h, svc_n, svs_b, svs_h, svs_n,
        BITS: tl.constexpr, GROUP: tl.constexpr, VGROUP: tl.constexpr, D: tl.constexpr, G: tl.constexpr,
        GP: tl.constexpr, BLOCK: tl.constexpr, SPLITS: tl.constexpr, ITERS: tl.constexpr, KROW: tl.constexpr,
        VROW: tl.constexpr,
    ):
        """Partial softmax of split `program_id(1)` over a row's first `low` tokens of packed codes."""
        pid_bh = tl.program_id(0)
        split = tl.program_id(1)
        b = pid_bh // kv_heads
        h = pid_bh % kv_heads
        PER: tl.constexpr = 8 // BITS
        DP: tl.constexpr = D // PER
        DT = q_ptr.dtype.element_ty
        rows = tl.arange(0, GP)
        jdims = tl.arange(0, DP)
        row_ok = rows < G
        qrow = b * sq_b + (h * G + rows) * sq_h
        ks_ptr = ks_ptr + b * sks_b + h * sks_h
        kz_ptr = kz_ptr + b * sks_b + h * sks_h
        vs_ptr = vs_ptr + b * svs_b + h * svs_h
        vz_ptr = vz_ptr + b * svs_b + h * svs_h
        low = tl.load(low_ptr + b)
        m_i = tl.full((GP,), -1.0e30, tl.float32)
        l_i = tl.zeros((GP,), tl.float32)
        acc0 = tl.zeros((GP, DP), tl.float32)
        acc1 = tl.zeros((GP, DP), tl.float32)
        acc2 = tl.zeros((GP, DP), tl.float32)
        acc3 = tl.zeros((GP, DP), tl.float32)
        for it in range(ITERS):
            start = (it * SPLITS + split) * BLOCK
            if start < low:
                n = start + tl.arange(0, BLOCK)
                ok = n < low
                kbytes = tl.load(kc_ptr + b * skc_b + h * skc_h + n[:, None] * skc_n + jdims[None, :], mask=ok[:, None],
                                 other=0)
                s, bias = _key_scores(q_ptr, ks_ptr, kz_ptr, kbytes, n, ok, qrow, row_ok, jdims, sks_n, start,
                                      0, PER, BITS, GROUP, KROW, DT)
                if PER >= 2:
                    s1, b1 = _key_scores(q_ptr, ks_ptr, kz_ptr, kbytes, n, ok, qrow, row_ok, jdims, sks_n, start,
                                         1, PER, BITS, GROUP, KROW, DT)
                    s += s1
                    bias += b1
                if PER == 4:
                    s2, b2 = _key_scores(q_ptr, ks_ptr, kz_ptr, kbytes, n, ok, qrow, row_ok, jdims, sks_n, start,
                                         2, PER, BITS, GROUP, KROW, DT)
                    s3, b3 = _key_scores(q_ptr, ks_ptr, kz_ptr, kbytes, n, ok, qrow, row_ok, jdims, sks_n, start,
                                         3, PER, BITS, GROUP, KROW, DT)
                    s += s2 + s3
                    bias += b2 + b3
                p, alpha, l_i, m_i = _softmax_step((s + bias[:, None]) * scaling, ok, m_i, l_i)
                vbytes = tl.load(vc_ptr + b * svc_b + h * svc_h + n[:, None] * svc_n + jdims[None, :], mask=ok[:, None],
                                 other=0)
                vs_row = tl.load(vs_ptr + n * svs_n, mask=ok, other=0.0).to(tl.float32)
                vz_row = tl.load(vz_ptr + n * svs_n, mask=ok, other=0.0).to(tl.float32)
                acc0 = _value_part(acc0, p, alpha, vbytes, vs_row, vz_row, vs_ptr, vz_ptr, n, ok, jdims, svs_n,
                                   0, PER, BITS, VGROUP, VROW, DT)
                if PER >= 2:
                    acc1 = _value_part(acc1, p, alpha, vbytes, vs_row, vz_row, vs_ptr, vz_ptr, n, ok, jdims, svs_n,
                                       1, PER, BITS, VGROUP, VROW, DT)
                if PER == 4:
                    acc2 = _value_part(acc2, p, alpha, vbytes, vs_row, vz_row, vs_ptr, vz_ptr, n, ok, jdims, svs_n,
                                       2, PER, BITS, VGROUP, VROW, DT)
                    acc3 = _value_part(acc3, p, alpha, vbytes, vs_row, vz_row, vs_ptr, vz_ptr, n, ok, jdims, svs_n,
                                       3, PER, BITS, VGROUP, VROW, DT)
        at = (pid_bh * SPLITS + split) * G + rows
        tl.store(m_ptr + at, m_i, mask=row_ok)
        tl.store(l_ptr + at, l_i, mask=row_ok)
        out = acc_ptr + at[:, None] * D + jdims[None, :] * PER
        tl.store(out, acc0, mask=row_ok[:, None])
        if PER >= 2:
            tl.store(out + 1, acc1, mask=row_ok[:, None])
        if PER == 4:
            tl.store(out + 2, acc2, mask=row_ok[:, None])
            tl.store(out + 3, acc3, mask=row_ok[:, None])

    @triton.jit
    def _merge_part(m_ptr, l_ptr, acc_ptr, pid_bh, rows, row_ok, dims, m_all, total, out,
                    S: tl.constexpr, G: tl.constexpr, D: tl.constexpr):
        for s in range(S):
            at = (pid_bh * S + s) * G + rows
            w = tl.exp(tl.load(m_ptr + at, mask=row_ok, other=-1.0e30) - m_all)
            total += tl.load(l_ptr + at, mask=row_ok, other=0.0) * w
            out += tl.load(acc_ptr + at[:, None] * D + dims[None, :], mask=row_ok[:, None], other=0.0) * w[:, None]
        return total, out

    @triton.jit
    def _merge(
        m1_ptr, l1_ptr, a1_ptr, m2_ptr, l2_ptr, a2_ptr, out_ptr, kv_heads, so_b, so_h,
        S1: tl.constexpr, S2: tl.constexpr, D: tl.constexpr, G: tl.constexpr, GP: tl.constexpr,
    ):
        """The partial softmaxes of one (row, kv head), S1 splits and S2 more (0: none), into its G output heads."""
        pid_bh = tl.program_id(0)
        b = pid_bh // kv_heads
        h = pid_bh % kv_heads
        rows = tl.arange(0, GP)
        dims = tl.arange(0, D)
        row_ok = rows < G
        m_all = tl.full((GP,), -1.0e30, tl.float32)
        for s in range(S1):
            m_all = tl.maximum(m_all, tl.load(m1_ptr + (pid_bh * S1 + s) * G + rows, mask=row_ok, other=-1.0e30))
        for s in range(S2):
            m_all = tl.maximum(m_all, tl.load(m2_ptr + (pid_bh * S2 + s) * G + rows, mask=row_ok, other=-1.0e30))
        total = tl.zeros((GP,), tl.float32)
        out = tl.zeros((GP, D), tl.float32)
        total, out = _merge_part(m1_ptr, l1_ptr, a1_ptr, pid_bh, rows, row_ok, dims, m_all, total, out, S1, G, D)
        total, out = _merge_part(m2_ptr, l2_ptr, a2_ptr, pid_bh, rows, row_ok, dims, m_all, total, out, S2, G, D)
        out = out / tl.where(row_ok, total, 1.0)[:, None]
        tl.store(out_ptr + b * so_b + (h * G + rows)[:, None] * so_h + dims[None, :],
                 out.to(out_ptr.dtype.element_ty), mask=row_ok[:, None])


class _Scratch:
    """Per-shape buffers of the partial softmaxes (fixed addresses, as CUDA graphs need)."""

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

    @classmethod
    def clear(cls) -> None:
        """Drops every buffer (a static engine that is freed calls it: the next capture allocates afresh)."""
        cls.buffers = {}


def splits_for(capacity: int) -> int:
    """Programs per (row, kv head): enough to fill the GPU at batch 1, at most one per block of the buffer."""
    return max(1, min(MAX_SPLITS, -(-capacity // BLOCK_N)))


def _iters(capacity: int, splits: int) -> int:
    return -(-capacity // (BLOCK_N * splits))


def _gp(group: int) -> int:
    return max(16, triton.next_power_of_2(group))


def codes_partials(query: torch.Tensor, codes: Any, low: torch.Tensor, scaling: float):
    """(m, l, acc) of the softmax over each row's first `low` code tokens, per split:
    (n, kv_heads, splits, group) twice and (n, kv_heads, splits, group, d)."""
    n, q_heads, _, d = query.shape
    kv_heads = codes.k_codes.shape[1]
    group = q_heads // kv_heads
    splits = splits_for(codes.capacity)
    m, l, acc = _Scratch.get(n, kv_heads, splits, group, d, query.device)
    q = query[:, :, 0, :]
    kc, ks, kz = codes.k_codes[:n], codes.k_scale[:n], codes.k_zero[:n]
    vc, vs, vz = codes.v_codes[:n], codes.v_scale[:n], codes.v_zero[:n]
    _codes_attention[(n * kv_heads, splits)](
        q, kc, ks, kz, vc, vs, vz, low, m, l, acc,
        float(scaling), kv_heads,
        q.stride(0), q.stride(1), kc.stride(0), kc.stride(1), kc.stride(2), ks.stride(0), ks.stride(1),
        ks.stride(2), vc.stride(0), vc.stride(1), vc.stride(2), vs.stride(0), vs.stride(1), vs.stride(2),
        BITS=codes.bits, GROUP=codes.group, VGROUP=codes.value_group, D=d, G=group, GP=_gp(group), BLOCK=BLOCK_N,
        SPLITS=splits, ITERS=_iters(codes.capacity, splits), KROW=codes.group % BLOCK_N == 0,
        VROW=codes.value_group == d, num_warps=4,
    )
    return m, l, acc


def dense_partials(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, count: torch.Tensor,
                   scaling: float, tag: str = "dense"):
    """(m, l, acc) of the softmax over each row's first `count` slots of 16-bit keys/values (n, kv, S, d)."""
    n, q_heads, _, d = query.shape
    kv_heads, capacity = keys.shape[1], keys.shape[2]
    group = q_heads // kv_heads
    splits = splits_for(capacity)
    m, l, acc = _Scratch.get(n, kv_heads, splits, group, d, query.device, tag)
    q = query[:, :, 0, :]
    _dense_attention[(n * kv_heads, splits)](
        q, keys, values, count, m, l, acc, float(scaling), kv_heads,
        q.stride(0), q.stride(1), keys.stride(0), keys.stride(1), keys.stride(2), values.stride(0),
        values.stride(1), values.stride(2),
        D=d, G=group, GP=_gp(group), BLOCK=BLOCK_N, SPLITS=splits, ITERS=_iters(capacity, splits), num_warps=4,
    )
    return m, l, acc


def merge(parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], q_heads: int, dtype: torch.dtype
          ) -> torch.Tensor:
    """Split softmaxes (m, l, acc), each (n, kv, splits, group[, d]), merged by their maxima in one launch:
    (n, 1, q_heads, d) in `dtype`."""
    (m1, l1, a1), *rest = parts
    m2, l2, a2 = rest[0] if rest else (m1, l1, a1)
    n, kv_heads, s1, group, d = a1.shape
    out = torch.empty(n, 1, q_heads, d, dtype=dtype, device=a1.device)
    _merge[(n * kv_heads,)](
        m1, l1, a1, m2, l2, a2, out, kv_heads, out.stride(0), out.stride(2),
        S1=s1, S2=a2.shape[2] if rest else 0, D=d, G=group, GP=_gp(group), num_warps=4,
    )
    return out


def merge_reference(parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], q_heads: int,
                    dtype: torch.dtype) -> torch.Tensor:
    """What `_merge` computes, in PyTorch (the tests compare the two)."""
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
               dtype: torch.dtype = torch.bfloat16, group: int = 128, value_group: int | None = None,
               capacity: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """(reference, fused) attention outputs over random codes of rows filled to different counts (tests)."""
    import torch.nn.functional as F

    from .quantize import dequantize_keys, dequantize_values, quantize_keys, quantize_values, Quantized

    vgroup, slots = value_group or min(128, d), 48

    class Codes:
        pass

    codes = Codes()
    # Keys with outlier channels and a large common offset: what the zero-point term must carry exactly.
    keys = torch.randn(b, kv_heads, capacity, d, device=device) * (1 + 4 * (torch.arange(d, device=device) % 7 == 0))
    keys = keys + 3.0
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
    reference = F.scaled_dot_product_attention(query.float(), full_k.float(), full_v.float(),
                                               attn_mask=mask[:, None, None, :], scale=scaling,
                                               enable_gqa=True).transpose(1, 2)
    return reference.float(), fused.float()
