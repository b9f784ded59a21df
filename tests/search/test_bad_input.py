"""Bad input gets a ValueError naming the bad value and what was expected, before any work."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ai_system.search import FlatIndex, IVFFlatIndex


@pytest.fixture
def index():
    flat = FlatIndex(4)
    flat.add(torch.randn(10, 4))
    return flat


@pytest.mark.parametrize(("queries", "message"), [
    (torch.randn(2, 5), r"shape \(rows, 4\) for this 4-dimensional index, got \(2, 5\)"),
    (torch.randn(2, 2, 4), r"got \(2, 2, 4\)"),
    ([[1.0, math.nan, 0.0, 0.0]], "row 0 holds NaN or infinite values"),
    (np.array([[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, np.inf, 1.0]]), "row 1 holds NaN or infinite"),
    (torch.empty(0, 4), "queries is empty"),
    ([["a", "b", "c", "d"]], "queries must be numbers"),
])
def test_bad_queries(index, queries, message):
    with pytest.raises(ValueError, match=message):
        index.search(queries, 3)


@pytest.mark.parametrize("k", [0, -1, 11, 2.5, True, "3"])
def test_k_outside_the_index(index, k):
    with pytest.raises(ValueError, match=r"k must be an integer in \[1, 10\]"):
        index.search(torch.randn(1, 4), k)


def test_empty_index():
    with pytest.raises(ValueError, match="the index is empty: add vectors before searching"):
        FlatIndex(4).search(torch.randn(1, 4), 1)


def test_unknown_metric_and_bad_shapes():
    with pytest.raises(ValueError, match="metric must be one of ip, cosine, l2, got 'hamming'"):
        FlatIndex(4, "hamming")
    with pytest.raises(ValueError, match="dim must be a positive integer, got 0"):
        FlatIndex(0)
    with pytest.raises(ValueError, match=r"nprobe must be an integer in \[1, nlist = 4\], got 5"):
        IVFFlatIndex(4, 4, nprobe=5)
    with pytest.raises(ValueError, match="pq_m must be a positive divisor of the dimension 10, got 3"):
        from ai_system.search import IVFPQIndex
        IVFPQIndex(10, 4, 3)


def test_bad_vectors_and_ids_on_add(index):
    with pytest.raises(ValueError, match="vectors row 1 holds NaN"):
        index.add([[0.0] * 4, [math.nan] * 4])
    with pytest.raises(ValueError, match="got 1 ids for 2 vectors"):
        index.add(torch.randn(2, 4), ids=[100])
    with pytest.raises(ValueError, match="ids must be distinct"):
        index.add(torch.randn(2, 4), ids=[100, 100])
    with pytest.raises(ValueError, match="ids must be >= 0"):
        index.add(torch.randn(1, 4), ids=[-5])
    assert len(index) == 10


def test_untrained_ivf_refuses_add_and_tiny_training_sets():
    ivf = IVFFlatIndex(4, 8)
    with pytest.raises(ValueError, match="not trained: call train"):
        ivf.add(torch.randn(3, 4))
    with pytest.raises(ValueError, match="at least nlist = 8 vectors, got 3"):
        ivf.train(torch.randn(3, 4))
