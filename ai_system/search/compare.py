"""Our indexes and FAISS's, built and searched on identical vectors and queries with the same threads.

For each family (exact, IVF with full vectors, IVF with product quantization) both engines are
built with the same ``nlist``, ``pq_m`` and k-means iterations, then swept over the same ``nprobe``
values. Each operating point is one batch of all queries, timed ``repeats`` times (QPS = queries /
median time); recall@k is against the float64 exact answer. As ann-benchmarks does, an engine's
QPS at a recall target is its fastest point that reaches the target.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch

from ai_system.ops import reference
from ai_system.search.data import Dataset, recall_at_k
from ai_system.search.faiss_peer import FAISS_NAMES, build_faiss, faiss_bytes_per_vector, faiss_search
from ai_system.search.flat import FlatIndex
from ai_system.search.index import VectorIndex
from ai_system.search.ivf import IVFFlatIndex, IVFPQIndex
from ai_system.search.metric import keys_in_dot_form, queries_in_dot_form

FAMILIES = ("flat", "ivf_flat", "ivf_pq")


@dataclass(frozen=True)
class OperatingPoint:
    nprobe: int | None
    recall: float
    qps: float
    qps_samples: list[float]


@dataclass
class EngineRun:
    """One engine's index of one family: build cost, size, and its recall–QPS points."""

    engine: str
    family: str
    build_s: float
    bytes_per_vector: float
    points: list[OperatingPoint] = field(default_factory=list)

    @property
    def label(self) -> str:
        if self.engine == "torch":
            return "torch matmul + topk"
        return f"{self.engine} {FAISS_NAMES[self.family] if self.engine == 'faiss' else self.family}"

    @property
    def best_recall(self) -> float:
        return max(point.recall for point in self.points)

    def qps_at_recall(self, target: float) -> OperatingPoint | None:
        reached = [point for point in self.points if point.recall >= target]
        return max(reached, key=lambda point: point.qps) if reached else None

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "label": self.label}


@dataclass(frozen=True)
class SweepConfig:
    k: int = 10
    nlist: int = 256
    nprobes: Sequence[int] = (1, 2, 4, 8, 16, 32, 64)
    pq_m: int = 16
    iterations: int = 20
    repeats: int = 3
    seed: int = 0


def timed_qps(search: Callable[[], object], n_queries: int, repeats: int) -> list[float]:
    """QPS of ``repeats`` timed runs of one batched search (after one untimed warm-up)."""
    search()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        search()
        samples.append(n_queries / (time.perf_counter() - start))
    return samples


def build_ours(family: str, dataset: Dataset, config: SweepConfig) -> VectorIndex:
    dim, metric = dataset.dim, dataset.metric
    if family == "flat":
        index: VectorIndex = FlatIndex(dim, metric)
    elif family == "ivf_flat":
        index = IVFFlatIndex(dim, config.nlist, metric, seed=config.seed, train_iterations=config.iterations)
    else:
        index = IVFPQIndex(dim, config.nlist, config.pq_m, metric, seed=config.seed,
                           train_iterations=config.iterations)
    if isinstance(index, IVFFlatIndex | IVFPQIndex):
        index.train(dataset.corpus)
    index.add(dataset.corpus)
    return index


def _point(search: Callable[[], tuple[torch.Tensor, torch.Tensor]], truth: torch.Tensor, nprobe: int | None,
           repeats: int) -> OperatingPoint:
    recall = recall_at_k(search()[1], truth)
    samples = timed_qps(search, truth.shape[0], repeats)
    return OperatingPoint(nprobe, recall, statistics.median(samples), samples)


def plain_torch_run(dataset: Dataset, truth: torch.Tensor, config: SweepConfig) -> EngineRun:
    """Exact search as plain torch does it: one matmul over every key, then ``topk`` (the op's reference)."""
    queries = queries_in_dot_form(dataset.queries, dataset.metric)
    keys = keys_in_dot_form(dataset.corpus, dataset.metric)
    run = EngineRun("torch", "flat", 0.0, keys.nbytes / keys.shape[0])
    run.points.append(_point(lambda: reference.similarity_topk(queries, keys, config.k), truth, None, config.repeats))
    return run


def sweep(family: str, dataset: Dataset, truth: torch.Tensor, config: SweepConfig) -> list[EngineRun]:
    """Ours then FAISS for one family (and plain torch for exact search); the nprobe sweep stops at nlist."""
    nprobes: list[int | None] = [None] if family == "flat" else [p for p in config.nprobes if p <= config.nlist]
    runs = []
    start = time.perf_counter()
    ours = build_ours(family, dataset, config)
    run = EngineRun("ours", family, time.perf_counter() - start, ours.nbytes / len(ours))
    for nprobe in nprobes:
        def search(nprobe: int | None = nprobe) -> tuple[torch.Tensor, torch.Tensor]:
            return ours.search(dataset.queries, config.k, nprobe) if nprobe else ours.search(dataset.queries, config.k)
        run.points.append(_point(search, truth, nprobe, config.repeats))
    runs.append(run)
    start = time.perf_counter()
    peer = build_faiss(family, dataset.corpus, dataset.metric, config.nlist, config.pq_m, config.iterations,
                       config.seed)
    run = EngineRun("faiss", family, time.perf_counter() - start, faiss_bytes_per_vector(peer, family))
    for nprobe in nprobes:
        def peer_search(nprobe: int | None = nprobe) -> tuple[torch.Tensor, torch.Tensor]:
            return faiss_search(peer, dataset.queries, config.k, dataset.metric, nprobe)
        run.points.append(_point(peer_search, truth, nprobe, config.repeats))
    runs.append(run)
    if family == "flat":
        runs.append(plain_torch_run(dataset, truth, config))
    return runs
