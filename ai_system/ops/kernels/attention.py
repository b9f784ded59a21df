"""Attention forward, flash-attention style, plus a split-K decode variant over a KV cache.

Written as matmul, softmax, matmul, attention stores the (seq × keys) score matrix, reads it back
for the softmax and again for the product with V. The prefill kernel keeps one tile of scores in registers and folds it
into a running softmax (running max ``m``, running denominator ``l``, rescaled accumulator), so
memory traffic is just Q, K, V and the output (Dao et al., FlashAttention, 2022).

Decoding has one query per sequence, so the prefill grid (query tiles × heads) leaves most of a GPU
idle when the batch is small and the cache is long. The decode kernel splits the cache into chunks
processed in parallel, each writing a partial (m, l, acc); a second small kernel merges them
(the "flash-decoding" split-K scheme). Grouped-query attention maps query head h to KV head
h // (q_heads / kv_heads) without copying K or V. With ``lengths``, both kernels load keys and
values only below a row's length: a masked score is dropped, but a NaN or inf loaded into V would
still turn ``0 * v`` into NaN, so the slots past it must never be read.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ai_system.ops.kernels import Kernel, interpreting, parallel_programs

LOG2_E = 1.4426950408889634


def _flash_attention_kernel(q_ptr, k_ptr, v_ptr, mask_ptr, lengths_ptr, out_ptr, seq_len, n_keys, q_heads, groups,
                            qk_scale,
                            sq_b, sq_h, sq_s, sq_d, sk_b, sk_h, sk_s, sk_d, sv_b, sv_h, sv_s, sv_d,
                            sm_b, sm_h, sm_s, sm_k, so_b, so_h, so_s, so_d, head_dim,
                            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                            CAUSAL: tl.constexpr, HAS_MASK: tl.constexpr, HAS_LENGTHS: tl.constexpr,
                            PRECISION: tl.constexpr):
    start_m = tl.program_id(0) * BLOCK_M
    batch = (tl.program_id(1) // q_heads).to(tl.int64)
    head = (tl.program_id(1) % q_heads).to(tl.int64)
    kv_head = head // groups
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    q_valid = (offs_m[:, None] < seq_len) & (offs_d[None, :] < head_dim)
    q = tl.load(q_ptr + batch * sq_b + head * sq_h + offs_m[:, None] * sq_s + offs_d[None, :] * sq_d,
                mask=q_valid, other=0.0)
    k_base = k_ptr + batch * sk_b + kv_head * sk_h
    v_base = v_ptr + batch * sv_b + kv_head * sv_h
    m_i = tl.full([BLOCK_M], -float("inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    kv_len = n_keys
    if HAS_LENGTHS:
        kv_len = tl.minimum(tl.load(lengths_ptr + batch).to(tl.int32), n_keys)
    end_n = kv_len
    if CAUSAL:
        end_n = tl.minimum(kv_len, start_m + BLOCK_M)
    for start_n in range(0, end_n, BLOCK_N):
        keys = start_n + offs_n
        filled = keys < kv_len
        k = tl.load(k_base + keys[None, :] * sk_s + offs_d[:, None] * sk_d,
                    mask=filled[None, :] & (offs_d[:, None] < head_dim), other=0.0)
        scores = tl.dot(q, k, input_precision=PRECISION) * qk_scale
        allowed = filled[None, :] & (offs_m[:, None] >= 0)
        if CAUSAL:
            allowed = allowed & (keys[None, :] <= offs_m[:, None])
        if HAS_MASK:
            mask = tl.load(mask_ptr + batch * sm_b + head * sm_h + offs_m[:, None] * sm_s + keys[None, :] * sm_k,
                           mask=(offs_m[:, None] < seq_len) & filled[None, :], other=0)
            allowed = allowed & (mask != 0)
        scores = tl.where(allowed, scores, -float("inf"))
        m_new = tl.maximum(m_i, tl.max(scores, axis=1))
        m_safe = tl.where(m_new == -float("inf"), 0.0, m_new)
        p = tl.exp2(scores - m_safe[:, None])
        alpha = tl.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = tl.load(v_base + keys[:, None] * sv_s + offs_d[None, :] * sv_d,
                    mask=filled[:, None] & (offs_d[None, :] < head_dim), other=0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        m_i = m_new
    out = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
    tl.store(out_ptr + batch * so_b + head * so_h + offs_m[:, None] * so_s + offs_d[None, :] * so_d,
             out.to(out_ptr.dtype.element_ty), mask=q_valid)


def _decode_partial_kernel(q_ptr, k_ptr, v_ptr, mask_ptr, lengths_ptr, m_ptr, l_ptr, acc_ptr,
                           n_keys, q_heads, groups, qk_scale, chunk, n_splits,
                           sq_b, sq_h, sq_d, sk_b, sk_h, sk_s, sk_d, sv_b, sv_h, sv_s, sv_d,
                           sm_b, sm_h, sm_k, head_dim,
                           BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, HAS_MASK: tl.constexpr,
                           HAS_LENGTHS: tl.constexpr):
    row = tl.program_id(0)
    split = tl.program_id(1)
    batch = (row // q_heads).to(tl.int64)
    head = (row % q_heads).to(tl.int64)
    kv_head = head // groups
    kv_len = n_keys
    if HAS_LENGTHS:
        kv_len = tl.minimum(tl.load(lengths_ptr + batch).to(tl.int32), n_keys)
    start = split * chunk
    end = tl.minimum(start + chunk, kv_len)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    d_valid = offs_d < head_dim
    q = tl.load(q_ptr + batch * sq_b + head * sq_h + offs_d * sq_d, mask=d_valid, other=0.0).to(tl.float32)
    k_base = k_ptr + batch * sk_b + kv_head * sk_h
    v_base = v_ptr + batch * sv_b + kv_head * sv_h
    m_i = tl.full((), -float("inf"), tl.float32)
    l_i = tl.zeros((), tl.float32)
    acc = tl.zeros([BLOCK_D], tl.float32)
    for start_n in range(start, end, BLOCK_N):
        keys = start_n + offs_n
        in_range = keys < end
        tile = in_range[:, None] & d_valid[None, :]
        k = tl.load(k_base + keys[:, None] * sk_s + offs_d[None, :] * sk_d, mask=tile, other=0.0).to(tl.float32)
        scores = tl.sum(k * q[None, :], axis=1) * qk_scale
        allowed = in_range
        if HAS_MASK:
            allowed = allowed & (tl.load(mask_ptr + batch * sm_b + head * sm_h + keys * sm_k,
                                         mask=in_range, other=0) != 0)
        scores = tl.where(allowed, scores, -float("inf"))
        m_new = tl.maximum(m_i, tl.max(scores, axis=0))
        m_safe = tl.where(m_new == -float("inf"), 0.0, m_new)
        p = tl.exp2(scores - m_safe)
        alpha = tl.exp2(m_i - m_safe)
        v = tl.load(v_base + keys[:, None] * sv_s + offs_d[None, :] * sv_d, mask=tile, other=0.0).to(tl.float32)
        l_i = l_i * alpha + tl.sum(p, axis=0)
        acc = acc * alpha + tl.sum(p[:, None] * v, axis=0)
        m_i = m_new
    slot = row.to(tl.int64) * n_splits + split
    tl.store(m_ptr + slot, m_i)
    tl.store(l_ptr + slot, l_i)
    tl.store(acc_ptr + slot * BLOCK_D + offs_d, acc)


def _decode_combine_kernel(m_ptr, l_ptr, acc_ptr, out_ptr, q_heads, n_splits, so_b, so_h, so_d, head_dim,
                           BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    splits = tl.arange(0, BLOCK_S)
    offs_d = tl.arange(0, BLOCK_D)
    valid = splits < n_splits
    m = tl.load(m_ptr + row * n_splits + splits, mask=valid, other=-float("inf"))
    l_part = tl.load(l_ptr + row * n_splits + splits, mask=valid, other=0.0)
    acc = tl.load(acc_ptr + (row * n_splits + splits[:, None]) * BLOCK_D + offs_d[None, :],
                  mask=valid[:, None], other=0.0)
    m_max = tl.max(m, axis=0)
    m_safe = tl.where(m_max == -float("inf"), 0.0, m_max)
    weight = tl.exp2(m - m_safe)
    total = tl.sum(l_part * weight, axis=0)
    out = tl.sum(acc * weight[:, None], axis=0) / tl.where(total == 0.0, 1.0, total)
    batch = row // q_heads
    head = row % q_heads
    tl.store(out_ptr + batch * so_b + head * so_h + offs_d * so_d, out.to(out_ptr.dtype.element_ty),
             mask=offs_d < head_dim)


flash_attention_kernel = Kernel(_flash_attention_kernel)
decode_partial_kernel = Kernel(_decode_partial_kernel)
decode_combine_kernel = Kernel(_decode_combine_kernel)


def _mask_strides(mask: torch.Tensor | None, shape: tuple[int, int, int, int]) -> tuple[torch.Tensor | None, list[int]]:
    """A uint8 view of a boolean mask broadcast to ``shape``: broadcast dims get stride 0, nothing is copied."""
    if mask is None:
        return None, [0, 0, 0, 0]
    expanded = mask.expand(shape)
    return expanded.view(torch.uint8), list(expanded.stride())


def _tile_sizes(head_dim: int, dtype: torch.dtype) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, warps, pipeline stages): 128×64 tiles, three stages, as in Triton's
    fused-attention tutorial for Hopper; two stages for fp32, whose tiles are twice the bytes, so
    shared memory stays within an A100's; small tiles under the interpreter, where only count matters."""
    if interpreting():
        return 32, 32, 4, 1
    return 128, 64, 8 if head_dim > 64 else 4, 2 if dtype == torch.float32 else 3


def attention_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                     causal: bool, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Launch the prefill kernel on validated inputs; returns (batch, q_heads, seq, dim).

    ``lengths`` (batch,), when given, stops each row's key loop at its filled cache prefix.

    The output is laid out (batch, seq, heads, dim) in memory, so the caller's
    ``transpose(1, 2).reshape(batch, seq, -1)`` is free.
    """
    batch, q_heads, seq_len, head_dim = q.shape
    n_keys = k.shape[2]
    out = torch.empty((batch, seq_len, q_heads, head_dim), dtype=q.dtype, device=q.device).transpose(1, 2)
    mask_u8, mask_strides = _mask_strides(mask, (batch, q_heads, seq_len, n_keys))
    block_m, block_n, warps, stages = _tile_sizes(head_dim, q.dtype)
    grid = (triton.cdiv(seq_len, block_m), batch * q_heads)
    flash_attention_kernel[grid](
        q, k, v, mask_u8, lengths, out, seq_len, n_keys, q_heads, q_heads // k.shape[1], LOG2_E / math.sqrt(head_dim),
        *q.stride(), *k.stride(), *v.stride(), *mask_strides, *out.stride(), head_dim,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=max(16, triton.next_power_of_2(head_dim)),
        CAUSAL=causal, HAS_MASK=mask is not None, HAS_LENGTHS=lengths is not None,
        PRECISION="ieee" if q.dtype == torch.float32 else "tf32", num_warps=warps, num_stages=stages)
    return out


def decode_splits(rows: int, n_keys: int, block_n: int) -> tuple[int, int]:
    """(chunk, n_splits): split the cache so rows × splits roughly fills the GPU; chunks are whole key tiles."""
    target_programs = parallel_programs()
    wanted = max(1, min(triton.cdiv(n_keys, block_n), triton.cdiv(target_programs, rows)))
    chunk = triton.cdiv(triton.cdiv(n_keys, wanted), block_n) * block_n
    return chunk, triton.cdiv(n_keys, chunk)


def decode_attention_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                            lengths: torch.Tensor | None) -> torch.Tensor:
    """Launch split-K decode on validated inputs: q (batch, q_heads, 1, dim), cache (batch, kv_heads, L, dim)."""
    batch, q_heads, _, head_dim = q.shape
    n_keys = k.shape[2]
    rows = batch * q_heads
    block_n = 32 if interpreting() else 64
    block_d = triton.next_power_of_2(head_dim)
    chunk, n_splits = decode_splits(rows, n_keys, block_n)
    m = torch.empty((rows, n_splits), dtype=torch.float32, device=q.device)
    l_part = torch.empty_like(m)
    acc = torch.empty((rows, n_splits, block_d), dtype=torch.float32, device=q.device)
    mask_u8, mask_strides = _mask_strides(mask, (batch, q_heads, 1, n_keys))
    del mask_strides[2]
    decode_partial_kernel[(rows, n_splits)](
        q, k, v, mask_u8, lengths, m, l_part, acc, n_keys, q_heads, q_heads // k.shape[1],
        LOG2_E / math.sqrt(head_dim), chunk, n_splits,
        q.stride(0), q.stride(1), q.stride(3), *k.stride(), *v.stride(), *mask_strides, head_dim,
        BLOCK_N=block_n, BLOCK_D=block_d, HAS_MASK=mask is not None, HAS_LENGTHS=lengths is not None,
        num_warps=4)
    out = torch.empty((batch, 1, q_heads, head_dim), dtype=q.dtype, device=q.device).transpose(1, 2)
    decode_combine_kernel[(rows,)](m, l_part, acc, out, q_heads, n_splits, out.stride(0), out.stride(1),
                                   out.stride(3), head_dim, BLOCK_S=triton.next_power_of_2(n_splits),
                                   BLOCK_D=block_d, num_warps=4)
    return out
