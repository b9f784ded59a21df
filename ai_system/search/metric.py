"""How each similarity metric becomes one dot product, so every index scans with one top-k.

Inner product needs nothing; cosine is the inner product of unit vectors; squared L2 ranks like
``q·x - |x|²/2`` (``|q - x|² = |q|² - 2 q·x + |x|²`` and ``|q|²`` is the same for every key), which
is the dot product of ``[q, 1]`` with ``[x, -|x|²/2]``. Keys are stored in that *dot form* once, at
``add``; queries are put in it at search. Scores come back as FAISS reports them: similarities for
``ip`` and ``cosine`` (higher is nearer), squared distances for ``l2`` (lower is nearer).
"""

from __future__ import annotations

import torch

METRICS = ("ip", "cosine", "l2")


def check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    return metric


def dot_dim(dim: int, metric: str) -> int:
    """Width of a vector of ``dim`` in dot form: one more for L2's norm column."""
    return dim + 1 if metric == "l2" else dim


def keys_in_dot_form(vectors: torch.Tensor, metric: str) -> torch.Tensor:
    if metric == "cosine":
        return torch.nn.functional.normalize(vectors, dim=1)
    if metric == "l2":
        return torch.cat([vectors, -0.5 * vectors.pow(2).sum(1, keepdim=True)], dim=1)
    return vectors


def queries_in_dot_form(queries: torch.Tensor, metric: str) -> torch.Tensor:
    if metric == "cosine":
        return torch.nn.functional.normalize(queries, dim=1)
    if metric == "l2":
        return torch.cat([queries, queries.new_ones(queries.shape[0], 1)], dim=1)
    return queries


def reported_scores(dot_scores: torch.Tensor, queries: torch.Tensor, metric: str) -> torch.Tensor:
    """Dot-form scores as the metric reports them: squared distances for L2, similarities otherwise."""
    if metric == "l2":
        return (queries.to(dot_scores.dtype).pow(2).sum(1, keepdim=True) - 2 * dot_scores).clamp_min(0)
    return dot_scores
