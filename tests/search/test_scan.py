"""The blocked CPU scan against the op's plain reference: same indices and scores, for every path it takes."""

from __future__ import annotations

import pytest
import torch

from ai_system.ops import reference
from ai_system.search import scan
from ai_system.search.scan import merge_topk, topk_scan

TOLERANCES = {torch.float32: 1e-5, torch.float64: 1e-12}


@pytest.mark.parametrize(("n_queries", "n_keys", "k", "key_block"), [
    (1, 1, 1, 4096),        # one key
    (5, 100, 3, 4096),      # narrow tile: plain topk
    (7, 64, 64, 4096),      # k = every key
    (3, 4096 * 2 + 7, 50, 4096),  # several key blocks, ragged last one
    (1100, 3000, 10, 1024),  # several query blocks, group-maximum filter
    (9, 2048, 1, 1024),     # k = 1 takes max
])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
def test_blocked_scan_equals_matmul_then_topk(n_queries, n_keys, k, key_block, dtype):
    generator = torch.Generator().manual_seed(n_keys)
    queries = torch.randn(n_queries, 24, generator=generator, dtype=dtype)
    keys = torch.randn(n_keys, 24, generator=generator, dtype=dtype)
    scores, indices = topk_scan(queries, keys, k, key_block)
    expected = (queries @ keys.T).topk(k, dim=1)
    assert torch.equal(indices, expected.indices)
    torch.testing.assert_close(scores, expected.values, atol=TOLERANCES[dtype], rtol=TOLERANCES[dtype])
    if dtype == torch.float32:
        ref_scores, ref_indices = reference.similarity_topk(queries, keys, k)
        assert torch.equal(indices, ref_indices)


def test_group_filter_keeps_every_best_key_when_they_share_a_group():
    """The k best in one strided group: the filter must still return all of them."""
    tile = torch.zeros(2, scan.GROUPS * 128)
    stride = tile.shape[1] // scan.GROUPS
    tile[:, [3 + stride * j for j in range(5)]] = torch.arange(5, 0, -1).float()
    scores, indices = scan._tile_topk(tile, 5)
    assert indices[0].tolist() == [3 + stride * j for j in range(5)]
    assert scores[0].tolist() == [5, 4, 3, 2, 1]


def test_merge_keeps_the_best_of_both():
    scores, indices = merge_topk(torch.tensor([[5.0, 1.0]]), torch.tensor([[0, 1]]),
                                 torch.tensor([[3.0, 2.0]]), torch.tensor([[7, 8]]), 3)
    assert scores.tolist() == [[5.0, 3.0, 2.0]] and indices.tolist() == [[0, 7, 8]]
