"""k-means in torch (Lloyd's iterations), the training step of the IVF lists and the PQ codebooks.

As FAISS does by default, train on at most ``max_points_per_cluster`` random points per centroid
and reseed a centroid that lost all its points with a random training point. Unlike FAISS's default
(distinct random points), the start is k-means++ (Arthur and Vassilvitskii, 2007) on a subsample of
``SEEDING_POINTS_PER_CLUSTER`` points per centroid: random starts often put two centroids in one
true cluster and none in another, and Lloyd's iterations never undo that. Points are assigned by
the metric the index searches with (through ``scan.topk_scan``), so ``cosine`` is spherical k-means
(centroids renormalized every iteration).
"""

from __future__ import annotations

import torch

from ai_system.search.metric import check_metric, keys_in_dot_form, queries_in_dot_form
from ai_system.search.scan import topk_scan

SEEDING_POINTS_PER_CLUSTER = 16


def kmeans_plus_plus(points: torch.Tensor, n_clusters: int, generator: torch.Generator) -> torch.Tensor:
    """Centroids drawn one by one with probability proportional to the squared distance to the nearest so far."""
    chosen = [int(torch.randint(points.shape[0], (1,), generator=generator))]
    nearest = (points - points[chosen[0]]).pow(2).sum(1)
    for _ in range(n_clusters - 1):
        weights = nearest.cpu().double()
        pick = int(torch.multinomial(weights, 1, generator=generator)) if weights.sum() > 0 else \
            int(torch.randint(points.shape[0], (1,), generator=generator))
        chosen.append(pick)
        nearest = torch.minimum(nearest, (points - points[pick]).pow(2).sum(1))
    return points[chosen].clone()


def assign(vectors: torch.Tensor, centroids: torch.Tensor, metric: str) -> torch.Tensor:
    """The index of the nearest centroid of each vector under ``metric``."""
    keys = keys_in_dot_form(centroids, metric)
    return topk_scan(queries_in_dot_form(vectors, metric), keys, 1)[1][:, 0]


def kmeans(vectors: torch.Tensor, n_clusters: int, metric: str = "l2", iterations: int = 20, seed: int = 0,
           max_points_per_cluster: int = 256) -> torch.Tensor:
    """``n_clusters`` centroids (float32, on ``vectors``' device) of the rows of ``vectors``."""
    check_metric(metric)
    if not 1 <= n_clusters <= vectors.shape[0]:
        raise ValueError(f"k-means needs at least as many training vectors as clusters: {vectors.shape[0]} "
                         f"vectors for {n_clusters} clusters")
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    generator = torch.Generator().manual_seed(seed)
    sample_size = min(vectors.shape[0], n_clusters * max_points_per_cluster)
    sample = vectors[torch.randperm(vectors.shape[0], generator=generator)[:sample_size].to(vectors.device)].float()
    if metric == "cosine":
        sample = torch.nn.functional.normalize(sample, dim=1)
    seeding = sample[:max(n_clusters, n_clusters * SEEDING_POINTS_PER_CLUSTER)]
    centroids = kmeans_plus_plus(seeding, n_clusters, generator)
    for _ in range(iterations):
        labels = assign(sample, centroids, metric)
        counts = torch.bincount(labels, minlength=n_clusters)
        sums = torch.zeros_like(centroids).index_add_(0, labels, sample)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled].unsqueeze(1).to(sums.dtype)
        empty = int((~filled).sum())
        if empty:
            reseed = torch.randint(sample_size, (empty,), generator=generator).to(vectors.device)
            centroids[~filled] = sample[reseed]
        if metric == "cosine":
            centroids = torch.nn.functional.normalize(centroids, dim=1)
    return centroids
