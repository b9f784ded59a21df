"""Indexes: exact answers, IVF recall rising with nprobe, add and remove after build, every metric."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ai_system.search import FlatIndex, IVFFlatIndex, IVFPQIndex
from ai_system.search.data import clustered_embeddings, exact_neighbors, recall_at_k
from ai_system.search.kmeans import assign, kmeans

METRICS = ["ip", "cosine", "l2"]


@pytest.fixture(scope="module")
def data():
    return clustered_embeddings(3000, 16, 20, n_queries=40, spread=1.0, seed=1)


def brute_force(corpus: torch.Tensor, queries: torch.Tensor, k: int, metric: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Distances straight from the definitions, in float64."""
    corpus, queries = corpus.double(), queries.double()
    if metric == "l2":
        distances = torch.cdist(queries, corpus).pow(2)
        return distances.topk(k, dim=1, largest=False)
    if metric == "cosine":
        corpus = corpus / corpus.norm(dim=1, keepdim=True)
        queries = queries / queries.norm(dim=1, keepdim=True)
    return (queries @ corpus.T).topk(k, dim=1)


@pytest.mark.parametrize("metric", METRICS)
def test_flat_index_is_exact(metric):
    generator = torch.Generator().manual_seed(0)
    corpus, queries = torch.randn(500, 12, generator=generator) * 3, torch.randn(9, 12, generator=generator)
    index = FlatIndex(12, metric)
    index.add(corpus)
    hits = index.search(queries, 7)
    expected_scores, expected_ids = brute_force(corpus, queries, 7, metric)
    assert torch.equal(hits.ids, expected_ids)
    torch.testing.assert_close(hits.scores, expected_scores.float(), atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("metric", METRICS)
def test_ivf_flat_recall_rises_to_exact_with_nprobe(data, metric):
    truth = exact_neighbors(data.corpus, data.queries, 10, metric)
    index = IVFFlatIndex(data.dim, 16, metric, train_iterations=8)
    index.train(data.corpus)
    index.add(data.corpus)
    recalls = [recall_at_k(index.search(data.queries, 10, nprobe).ids, truth) for nprobe in (1, 4, 16)]
    assert recalls[0] <= recalls[1] <= recalls[2] == 1.0
    assert recalls[0] < 1.0


@pytest.fixture(scope="module")
def small():
    return clustered_embeddings(1200, 8, 10, n_queries=30, spread=1.0, seed=2)


@pytest.mark.parametrize("metric", METRICS)
def test_ivf_pq_compresses_and_still_finds_neighbours(small, metric):
    truth = exact_neighbors(small.corpus, small.queries, 10, metric)
    index = IVFPQIndex(small.dim, 4, pq_m=4, metric=metric, train_iterations=4)
    index.train(small.corpus)
    index.add(small.corpus)
    assert index.nbytes / len(index) == 4 + 8 + (4 if metric == "l2" else 0)
    assert recall_at_k(index.search(small.queries, 10, nprobe=4).ids, truth) > 0.5
    labels = assign(index._normalized(small.corpus), index.centroids, metric)
    residual = index._normalized(small.corpus) - index.centroids[labels]
    decoded = index.quantizer.decode(index.quantizer.encode(residual))
    assert (residual - decoded).pow(2).sum() < 0.5 * residual.pow(2).sum()


@pytest.mark.parametrize("kind", ["flat", "ivf_flat", "ivf_pq"])
def test_add_and_remove_after_build(data, kind):
    index = {"flat": lambda: FlatIndex(data.dim), "ivf_flat": lambda: IVFFlatIndex(data.dim, 8, train_iterations=4),
             "ivf_pq": lambda: IVFPQIndex(data.dim, 8, 4, train_iterations=2)}[kind]()
    if kind != "flat":
        index.train(data.corpus[:1000])
    first = index.add(data.corpus[:1000])
    assert first.tolist() == list(range(1000))
    later = index.add(data.corpus[1000:1010], ids=np.arange(5000, 5010))
    assert len(index) == 1010 and later.tolist() == list(range(5000, 5010))
    probe = data.corpus[1003:1004]
    nprobe = {"nprobe": 8} if kind != "flat" else {}
    assert 5003 in index.search(probe, 5, **nprobe).ids[0].tolist()
    assert index.remove([5003, 5004, 123456]) == 2
    assert len(index) == 1008
    assert 5003 not in index.search(probe, 5, **nprobe).ids[0].tolist()
    assert index.add(data.corpus[:1]).tolist() == [5010]
    with pytest.raises(ValueError, match="id 7 is already in the index"):
        index.add(data.corpus[:1], ids=[7])


def test_ivf_pads_missing_hits_when_probed_lists_are_short():
    corpus = torch.cat([torch.randn(20, 4) + 50, torch.randn(20, 4) - 50])
    index = IVFFlatIndex(4, 2, "l2", train_iterations=5)
    index.train(corpus)
    index.add(corpus)
    hits = index.search(corpus[:1], 30, nprobe=1)
    assert (hits.ids[0] == -1).sum() == 10
    assert torch.isinf(hits.scores[0, -1])


def test_kmeans_recovers_separated_clusters():
    centres = torch.tensor([[10.0, 0.0], [-10.0, 0.0], [0.0, 10.0]])
    noise = 0.1 * torch.randn(300, 2, generator=torch.Generator().manual_seed(0))
    points = centres.repeat_interleave(100, dim=0) + noise
    found = kmeans(points, 3, "l2", iterations=10)
    distance = torch.cdist(found, centres).min(dim=1).values
    assert bool((distance < 0.5).all())


def test_clustered_data_has_its_known_structure():
    data = clustered_embeddings(2000, 32, 10, n_queries=50, spread=0.3, seed=0)
    torch.testing.assert_close(data.corpus.norm(dim=1), torch.ones(2000))
    truth = exact_neighbors(data.corpus, data.queries, 5, "ip")
    same_cluster = (data.labels[truth] == data.query_labels[:, None]).float().mean()
    assert same_cluster > 0.95
    sizes = torch.bincount(data.labels, minlength=10)
    assert sizes[0] > sizes[-1]
