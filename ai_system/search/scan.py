"""Exact top-k by dot product over any number of keys, in bounded memory: the scan every index runs.

Where the op would launch its Triton kernel (CUDA tensors, or the interpreter in the parity tests),
each block of keys goes through ``ops.similarity_topk``, which never writes the score matrix. On
the CPU the op's plain reference (matmul, then ``topk`` over the whole row) spends most of its time
in ``topk`` and in memory traffic for the score matrix, so the scan here blocks the work instead:

1. queries and keys are cut into blocks whose score tile fits in cache; one ``torch.mm`` into a
   preallocated tile scores a block (MKL/OpenBLAS sgemm, no allocation per block);
2. the tile's columns are split into ``GROUPS`` strided groups and reduced by ``amax`` (vectorized
   along the contiguous rows); the k groups with the highest maxima hold the k best scores, since
   each of the k best lies in a group whose maximum is at least the k-th best score;
3. ``topk`` runs over those k·GROUPS candidates only, and the block's best merge into the running
   best list.

The answer equals the reference's (``ops.reference.similarity_topk``; ``tests/search/test_scan.py``
checks it, ties aside). Any float dtype works on the CPU, float64 too: that is the ground truth.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ai_system import ops
from ai_system.ops.dispatch import interpreting

GROUPS = 16
MIN_GROUP_STRIDE = 64
QUERY_BLOCK = 1024
KEY_BLOCK = 4096
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
KERNEL_KEY_BLOCK = 1 << 22
"""Keys per kernel call on the GPU: its candidate buffer is already bounded, so this only caps k > 1024's
fallback to the reference, which does write a (queries × block) score matrix."""


def merge_topk(scores: torch.Tensor, indices: torch.Tensor, more_scores: torch.Tensor, more_indices: torch.Tensor,
               k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The best ``k`` per row of two (rows, ·) candidate lists, best first."""
    all_scores = torch.cat([scores, more_scores], dim=1)
    best, position = all_scores.topk(min(k, all_scores.shape[1]), dim=1)
    return best, torch.cat([indices, more_indices], dim=1).gather(1, position)


def _tile_topk(tile: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top ``k`` of each row of a score tile, through the group-maximum filter where it pays."""
    rows, width = tile.shape
    stride = width // GROUPS
    if k == 1:
        best, index = tile.max(dim=1)
        return best.unsqueeze(1), index.unsqueeze(1)
    if width % GROUPS or stride < MIN_GROUP_STRIDE or stride < 4 * k:
        return tile.topk(k, dim=1)
    group_max = tile.view(rows, GROUPS, stride).amax(dim=1)
    groups = group_max.topk(k, dim=1).indices
    offsets = torch.arange(0, width, stride, device=tile.device)
    candidates = (groups.unsqueeze(2) + offsets).view(rows, -1)
    best, position = tile.gather(1, candidates).topk(k, dim=1)
    return best, candidates.gather(1, position)


def _scan_blocks(queries: torch.Tensor, keys: torch.Tensor, k: int, key_block: int,
                 block_topk: Callable[[torch.Tensor, torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``block_topk`` over ``keys`` block by block and keep the running best ``k``."""
    best, best_index = block_topk(queries, keys[:key_block], min(k, keys.shape[0]))
    for start in range(key_block, keys.shape[0], key_block):
        block = keys[start:start + key_block]
        block_best, block_index = block_topk(queries, block, min(k, block.shape[0]))
        best, best_index = merge_topk(best, best_index, block_best, block_index + start, k)
    return best, best_index


def _blocked_scan(queries: torch.Tensor, keys: torch.Tensor, k: int, key_block: int
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    n_queries = queries.shape[0]
    tile = queries.new_empty(min(QUERY_BLOCK, n_queries), min(key_block, keys.shape[0]))

    def block_topk(block_queries: torch.Tensor, block_keys: torch.Tensor, block_k: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        scores = torch.mm(block_queries, block_keys.T, out=tile[:block_queries.shape[0], :block_keys.shape[0]])
        return _tile_topk(scores, block_k)

    parts = [_scan_blocks(queries[start:start + QUERY_BLOCK], keys, k, key_block, block_topk)
             for start in range(0, n_queries, QUERY_BLOCK)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def topk_scan(queries: torch.Tensor, keys: torch.Tensor, k: int, key_block: int = KEY_BLOCK
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` keys of highest ``query · key`` per query: (scores, row indices into ``keys``), best first.

    ``queries`` (n, d) and ``keys`` (m, d) share device and dtype, and ``1 <= k <= m`` (the indexes
    check this first). Scores are fp32 from the kernel, in the input dtype from the blocked scan.
    """
    kernel_possible = queries.device.type != "cpu" or interpreting()
    if kernel_possible and queries.dtype in KERNEL_DTYPES and ops.use_triton(queries, keys):
        return _scan_blocks(queries, keys, k, KERNEL_KEY_BLOCK, ops.similarity_topk)
    return _blocked_scan(queries.contiguous(), keys, k, key_block)
