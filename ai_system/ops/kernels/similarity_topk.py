"""Fused similarity + top-k: the k best keys per query by dot product, without the score matrix.

Vector search scores every query against every key; materializing the (queries × keys) matrix for
a million keys costs 4 MB per query before ``topk`` even starts. Here each program scores a tile of
queries against one chunk of keys with ``tl.dot`` and keeps a running best list in registers. A
score and its key index are packed into one int64 (order-preserving float bits high, index low)
so one bitonic sorting network (compare-and-swap on whole tiles) moves both. Each chunk writes
only its best candidates; a final ``topk`` over (queries × chunks × candidates) picks the answer.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ai_system.ops.kernels import Kernel, interpreting, parallel_programs


def _similarity_topk_kernel(q_ptr, k_ptr, out_ptr, n_queries, n_keys, dim, chunk, n_splits,
                            sq_q, sq_d, sk_n, sk_d,
                            BLOCK_Q: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                            LOG_MERGED: tl.constexpr, PRECISION: tl.constexpr):
    split = tl.program_id(1)
    offs_q = tl.program_id(0) * BLOCK_Q + tl.arange(0, BLOCK_Q)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    q_valid = offs_q < n_queries
    best = tl.full([BLOCK_Q, BLOCK_N], -(2**62), tl.int64) * 2
    start = split * chunk
    end = tl.minimum(start + chunk, n_keys)
    for start_n in range(start, end, BLOCK_N):
        keys = start_n + offs_n
        scores = tl.zeros([BLOCK_Q, BLOCK_N], tl.float32)
        for start_d in range(0, dim, BLOCK_D):
            dims = start_d + offs_d
            q = tl.load(q_ptr + offs_q[:, None].to(tl.int64) * sq_q + dims[None, :] * sq_d,
                        mask=q_valid[:, None] & (dims[None, :] < dim), other=0.0)
            k = tl.load(k_ptr + keys[None, :].to(tl.int64) * sk_n + dims[:, None] * sk_d,
                        mask=(keys[None, :] < end) & (dims[:, None] < dim), other=0.0)
            scores = tl.dot(q, k, scores, input_precision=PRECISION)
        scores = tl.where(keys[None, :] < end, scores, -float("inf"))
        bits = scores.to(tl.int32, bitcast=True)
        ordered = tl.where(bits >= 0, bits, bits ^ 0x7FFFFFFF)
        packed = (ordered.to(tl.int64) << 32) | (keys[None, :].to(tl.int64) + tl.zeros_like(ordered).to(tl.int64))
        threshold = tl.min(best, axis=1)
        if tl.max((tl.max(packed, axis=1) > threshold).to(tl.int32), axis=0) > 0:
            merged = tl.reshape(tl.join(best, packed), (BLOCK_Q, 2 * BLOCK_N))
            for stage in tl.static_range(1, LOG_MERGED + 1):
                for step in tl.static_range(stage):
                    pairs = tl.reshape(merged, (BLOCK_Q, (2 * BLOCK_N) >> (stage - step), 2, 1 << (stage - step - 1)))
                    first, second = tl.split(tl.permute(pairs, (0, 1, 3, 2)))
                    groups = tl.arange(0, (2 * BLOCK_N) >> (stage - step))
                    descending = (((groups << (stage - step)) & (1 << stage)) == 0)[None, :, None]
                    high = tl.maximum(first, second)
                    low = tl.minimum(first, second)
                    swapped = tl.join(tl.where(descending, high, low), tl.where(descending, low, high))
                    merged = tl.reshape(tl.permute(swapped, (0, 1, 3, 2)), (BLOCK_Q, 2 * BLOCK_N))
            best, _ = tl.split(tl.permute(tl.reshape(merged, (BLOCK_Q, 2, BLOCK_N)), (0, 2, 1)))
    out = out_ptr + (offs_q[:, None].to(tl.int64) * n_splits + split) * BLOCK_N + offs_n[None, :]
    tl.store(out, best, mask=q_valid[:, None])


similarity_topk_kernel = Kernel(_similarity_topk_kernel)


def unpack_scores(packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Invert the kernel's packing: int64 → (fp32 score, int64 key index)."""
    ordered = (packed >> 32).to(torch.int32)
    bits = torch.where(ordered >= 0, ordered, ordered ^ 0x7FFFFFFF)
    return bits.view(torch.float32), packed & 0xFFFFFFFF


def similarity_topk_triton(queries: torch.Tensor, keys: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch on validated (queries, dim) and (keys, dim) tensors; returns fp32 scores and int64 indices."""
    n_queries, dim = queries.shape
    n_keys = keys.shape[0]
    block_n = max(triton.next_power_of_2(k), 32 if interpreting() else 64)
    block_q = 16 if interpreting() else 32
    block_d = min(max(16, triton.next_power_of_2(dim)), 64)
    query_tiles = triton.cdiv(n_queries, block_q)
    wanted = max(1, min(triton.cdiv(n_keys, 4 * block_n), triton.cdiv(parallel_programs(), query_tiles)))
    chunk = triton.cdiv(triton.cdiv(n_keys, wanted), block_n) * block_n
    n_splits = triton.cdiv(n_keys, chunk)
    candidates = torch.empty((n_queries, n_splits, block_n), dtype=torch.int64, device=queries.device)
    similarity_topk_kernel[(query_tiles, n_splits)](
        queries, keys, candidates, n_queries, n_keys, dim, chunk, n_splits,
        *queries.stride(), *keys.stride(), BLOCK_Q=block_q, BLOCK_N=block_n, BLOCK_D=block_d,
        LOG_MERGED=(2 * block_n).bit_length() - 1,
        PRECISION="ieee" if queries.dtype == torch.float32 else "tf32", num_warps=4 if block_n <= 128 else 8)
    top = candidates.view(n_queries, -1).topk(k, dim=1).values
    return unpack_scores(top)
