"""GPU fragmentation as FGD defines it (Weng et al., "Beware of Fragmentation", USENIX ATC'23, §4).

The target workload M is the set of typical task types m (CPU, GPUs × milli-GPU each, allowed
models) with popularity p_m: the most frequent types of a pod list covering 95% of its tasks, as in
the paper's simulator. For a node n, the fragment seen by type m is the free GPU milli that m
cannot use:

* all of the node's free GPU milli when m asks for no GPU, cannot use the node's model, or does not
  fit (too little CPU, too few GPUs with ``gpu_milli`` free);
* otherwise the free milli of the GPUs with less than ``gpu_milli`` free.

F_n(M) = Σ_m p_m · F_n(m). Popularity is kept as integer task counts, so fragmentation is an exact
integer (milli-GPU × tasks) and the vectorised and reference scorers agree bit for bit; divide by
``Workload.total`` for milli-GPU. FGD places a task where F grows least (its "gradient").

Rewritten as F_n = W·G_n − Σ_m w_m·[m fits n]·S_n(x_m), with G_n the node's free GPU milli and
S_n(x) the free milli on its GPUs with at least x free, every node (or candidate state) is scored
with array operations over (states × GPUs × distinct thresholds).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ai_system.resources.cluster import Task

POPULARITY_THRESHOLD = 0.95


@dataclass(frozen=True)
class TaskType:
    cpu_milli: int
    num_gpu: int
    gpu_milli: int
    gpu_models: frozenset[str]
    memory_mib: int = 0


@dataclass(frozen=True)
class Workload:
    """Typical task types and their integer weights (task counts), most popular first."""

    types: tuple[TaskType, ...]
    weights: tuple[int, ...]

    @property
    def total(self) -> int:
        return sum(self.weights)

    @classmethod
    def from_tasks(cls, tasks: Sequence[Task], threshold: float = POPULARITY_THRESHOLD,
                   with_memory: bool = False) -> Workload:
        """The most popular types covering ``threshold`` of the tasks (ties broken by the type's fields).

        The paper's types are (CPU, GPUs, milli-GPU, models); ``with_memory`` adds memory to the key.
        """
        if not tasks:
            raise ValueError("a target workload needs at least one task, got none")
        if not 0 < threshold <= 1:
            raise ValueError(f"popularity threshold must be in (0, 1], got {threshold}")
        counts = Counter(TaskType(t.cpu_milli, t.num_gpu, t.gpu_milli, t.gpu_models,
                                  t.memory_mib if with_memory else 0) for t in tasks)
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0].cpu_milli, item[0].gpu_milli,
                                                          item[0].num_gpu, item[0].memory_mib,
                                                          sorted(item[0].gpu_models)))
        kept, covered = [], 0
        for kind, count in ranked:
            if covered >= threshold * len(tasks):
                break
            kept.append((kind, count))
            covered += count
        return cls(tuple(kind for kind, _ in kept), tuple(count for _, count in kept))


class FragmentationModel:
    """Vectorised F_n(M) for a workload on a cluster's GPU models."""

    def __init__(self, workload: Workload, models: Sequence[str]) -> None:
        self.workload = workload
        self.total_weight = workload.total
        pairs = zip(workload.types, workload.weights, strict=True)
        gpu_types = [(kind, weight) for kind, weight in pairs if kind.num_gpu]
        self.thresholds = np.array(sorted({kind.gpu_milli for kind, _ in gpu_types}), dtype=np.int64)
        self.type_threshold = np.array([np.searchsorted(self.thresholds, kind.gpu_milli) for kind, _ in gpu_types],
                                       dtype=np.int64)
        self.type_cpu = np.array([kind.cpu_milli for kind, _ in gpu_types], dtype=np.int64)
        self.type_memory = np.array([kind.memory_mib for kind, _ in gpu_types], dtype=np.int64)
        self.type_num = np.array([kind.num_gpu for kind, _ in gpu_types], dtype=np.int64)
        self.type_weight = np.array([weight for _, weight in gpu_types], dtype=np.float64)
        # accessible[model_id + 1, type]: row 0 is "no GPU model" (CPU-only nodes).
        self.accessible = np.array(
            [[not kind.gpu_models or model in kind.gpu_models for kind, _ in gpu_types]
             for model in ["", *models]], dtype=bool).reshape(len(models) + 1, len(gpu_types))
        self.accessible[0] = False

    def profile(self, gpu_free: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per state and distinct threshold x: how many GPUs have at least x free, and their free milli.

        Free milli is kept in float64 so F is a BLAS product; every value is an integer below 2**53, exact.
        """
        at_least = gpu_free[:, :, None] >= self.thresholds[None, None, :]
        return at_least.sum(axis=1), (gpu_free[:, :, None] * at_least).sum(axis=1).astype(np.float64)

    def shift(self, count: np.ndarray, usable: np.ndarray, old: np.ndarray,
              new: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The profile after one GPU per state goes from ``old`` to ``new`` free milli (new arrays)."""
        x = self.thresholds[None, :]
        leaving = (x > new[:, None]) & (x <= old[:, None])
        still = x <= new[:, None]
        return count - leaving, usable - np.where(still, (old - new)[:, None], 0) - np.where(leaving, old[:, None], 0)

    def from_profile(self, count: np.ndarray, usable: np.ndarray, gpu_total: np.ndarray, cpu_free: np.ndarray,
                     model_of: np.ndarray, memory_free: np.ndarray | None = None) -> np.ndarray:
        """F for each state from its profile, free GPU total, free CPU and model (-1 for none) → int64[K].

        With ``memory_free[K]`` a type also needs its memory to fit (our extension; the paper's F ignores it).
        """
        if not len(self.type_weight):
            return self.total_weight * gpu_total.astype(np.int64)
        fits = (self.accessible[model_of + 1]
                & (cpu_free[:, None] >= self.type_cpu[None, :])
                & (count[:, self.type_threshold] >= self.type_num[None, :]))
        if memory_free is not None:
            fits &= memory_free[:, None] >= self.type_memory[None, :]
        usable_by_type = np.where(fits, usable[:, self.type_threshold], 0.0) @ self.type_weight
        return self.total_weight * gpu_total.astype(np.int64) - usable_by_type.astype(np.int64)

    def of(self, cpu_free: np.ndarray, gpu_free: np.ndarray, model_of: np.ndarray,
           memory_free: np.ndarray | None = None) -> np.ndarray:
        """F for each state: ``cpu_free[K]``, ``gpu_free[K, slots]``, ``model_of[K]`` (-1 for none) → int64[K]."""
        count, usable = self.profile(gpu_free)
        return self.from_profile(count, usable, gpu_free.sum(axis=1), cpu_free, model_of, memory_free)


def reference_node_fragmentation(workload: Workload, cpu_free: int, gpu_free: Sequence[int], model: str,
                                 memory_free: int | None = None) -> int:
    """F_n(M) for one node by the paper's definition, one type at a time (the plain reference)."""
    free_total = sum(gpu_free)
    fragment = 0
    for kind, weight in zip(workload.types, workload.weights, strict=True):
        accessible = bool(model) and (not kind.gpu_models or model in kind.gpu_models)
        fits = (kind.num_gpu > 0 and accessible and cpu_free >= kind.cpu_milli
                and (memory_free is None or memory_free >= kind.memory_mib)
                and sum(1 for free in gpu_free if free >= kind.gpu_milli) >= kind.num_gpu)
        unusable = sum(free for free in gpu_free if free < kind.gpu_milli) if fits else free_total
        fragment += weight * unusable
    return fragment
