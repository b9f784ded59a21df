"""The cluster model: nodes, tasks, and allocation state that never over-commits.

Free resources live in numpy arrays (one row per node, one column per GPU slot) so policies can score
every node at once. GPUs are shared in milli-GPU (1000 = one whole GPU); a task asks for ``num_gpu``
GPUs with ``gpu_milli`` of each, so ``num_gpu=1, gpu_milli=470`` is 47% of one GPU and
``num_gpu=8, gpu_milli=1000`` is eight whole GPUs on one node. Nodes with fewer GPUs than the widest
node have padding slots that stay at 0 free, so they never fit anything and add nothing to sums.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

MILLI = 1000

# Memory per GPU model (MiB) from the vendors' datasheets; the trace's G1/G2/G3 are anonymised models.
GPU_MEMORY_MIB: dict[str, int | None] = {
    "P4": 7680, "T4": 16384, "P100": 16384, "V100M16": 16384, "V100M32": 32768, "A10": 24576,
    "A100": 81920, "G1": None, "G2": None, "G3": None,
}


@dataclass(frozen=True)
class NodeSpec:
    """One machine: CPU in milli-cores, memory in MiB, ``gpus`` GPUs of one ``gpu_model`` ("" for none)."""

    name: str
    cpu_milli: int
    memory_mib: int
    gpus: int = 0
    gpu_model: str = ""

    @property
    def gpu_memory_mib(self) -> int | None:
        return GPU_MEMORY_MIB.get(self.gpu_model)


@dataclass(frozen=True)
class Task:
    """One pod's request. ``gpu_models`` is the set of allowed models, empty for any.

    ``creation``/``deletion``/``scheduled`` are trace times in seconds (None where the pod list has
    no times); ``gang`` names the multi-pod job the task belongs to ("" for a job of one pod).
    """

    name: str
    cpu_milli: int
    memory_mib: int
    num_gpu: int = 0
    gpu_milli: int = 0
    gpu_models: frozenset[str] = field(default_factory=frozenset)
    creation: int | None = None
    deletion: int | None = None
    scheduled: int | None = None
    gang: str = ""

    def __post_init__(self) -> None:
        for name in ("cpu_milli", "memory_mib", "num_gpu", "gpu_milli"):
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or value < 0:
                raise ValueError(f"task {self.name!r}: {name}={value!r}, expected a non-negative integer")
        if self.gpu_milli > MILLI:
            raise ValueError(f"task {self.name!r}: gpu_milli={self.gpu_milli}, expected at most {MILLI} per GPU")
        if (self.num_gpu == 0) != (self.gpu_milli == 0):
            raise ValueError(f"task {self.name!r}: num_gpu={self.num_gpu} with gpu_milli={self.gpu_milli}; "
                             "expected both zero (CPU task) or both positive")

    @property
    def total_gpu_milli(self) -> int:
        return self.num_gpu * self.gpu_milli

    @property
    def affinity_tag(self) -> int:
        """GPU Clustering's task class: 0 no GPU, 1..8 whole GPUs, 9 a shared fraction of one GPU."""
        if self.num_gpu == 0:
            return 0
        return self.num_gpu if self.gpu_milli == MILLI else SHARE_TAG


SHARE_TAG = 9


@dataclass(frozen=True)
class Placement:
    """Where a task runs: a node row and the GPU slots it holds, with the amounts it took."""

    task: Task
    node: int
    gpus: tuple[int, ...]


class Unplaceable(ValueError):
    """A task this cluster can never run (unknown GPU model, larger than every node)."""


class OvercommitError(RuntimeError):
    """An allocation or release would leave a resource below zero or above capacity."""


class Cluster:
    """Free CPU, memory and per-GPU milli of every node, with allocate/release that check capacity."""

    def __init__(self, nodes: Sequence[NodeSpec]) -> None:
        if not nodes:
            raise ValueError("a cluster needs at least one node, got an empty node list")
        names = [node.name for node in nodes]
        if len(set(names)) != len(names):
            duplicate = next(name for name in names if names.count(name) > 1)
            raise ValueError(f"node names must be unique, {duplicate!r} appears twice")
        self.nodes = tuple(nodes)
        self.index = {name: i for i, name in enumerate(names)}
        self.models = sorted({node.gpu_model for node in nodes if node.gpus})
        model_ids = {model: i for i, model in enumerate(self.models)}
        self.model_of = np.array([model_ids.get(node.gpu_model, -1) if node.gpus else -1 for node in nodes])
        self.cpu_capacity = np.array([node.cpu_milli for node in nodes], dtype=np.int64)
        self.memory_capacity = np.array([node.memory_mib for node in nodes], dtype=np.int64)
        self.gpu_count = np.array([node.gpus for node in nodes], dtype=np.int64)
        self.slots = max(1, int(self.gpu_count.max()))
        self.gpu_capacity = np.where(np.arange(self.slots)[None, :] < self.gpu_count[:, None], MILLI, 0)
        # (CPU milli, GPU milli) of the largest node: the scale of best-fit and dot-product.
        self.largest = (int(self.cpu_capacity.max()), max(MILLI, int(self.gpu_capacity.sum(axis=1).max())))
        self.cpu_free = self.cpu_capacity.copy()
        self.memory_free = self.memory_capacity.copy()
        self.gpu_free = self.gpu_capacity.astype(np.int64)
        self.tag_count = np.zeros((len(nodes), SHARE_TAG + 1), dtype=np.int64)
        self.running = np.zeros(len(nodes), dtype=np.int64)
        shapes = [(node.cpu_milli, node.memory_mib, node.gpus, node.gpu_model if node.gpus else "") for node in nodes]
        shape_ids = {shape: i for i, shape in enumerate(dict.fromkeys(shapes))}
        self.shape_of = np.array([shape_ids[shape] for shape in shapes])
        self.version = 0
        self.changed_at = np.zeros(len(nodes), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.nodes)

    @property
    def total_gpu_milli(self) -> int:
        return int(self.gpu_capacity.sum())

    @property
    def allocated_gpu_milli(self) -> int:
        return int(self.gpu_capacity.sum() - self.gpu_free.sum())

    def model_mask(self, task: Task, rows: np.ndarray | slice = slice(None)) -> np.ndarray:
        """Which of the ``rows`` accept the task's GPU model (all of them when it names none)."""
        model_of = self.model_of[rows]
        if not task.gpu_models:
            return np.ones(len(model_of), dtype=bool)
        allowed = [self.models.index(model) for model in task.gpu_models if model in self.models]
        return np.isin(model_of, allowed)

    def fits(self, task: Task, rows: np.ndarray | slice = slice(None)) -> np.ndarray:
        """Which of the ``rows`` can host the task now (a mask over ``rows``)."""
        fits = (self.cpu_free[rows] >= task.cpu_milli) & (self.memory_free[rows] >= task.memory_mib)
        if task.gpu_models:
            fits &= self.model_mask(task, rows)
        if task.num_gpu:
            fits &= (self.gpu_free[rows] >= task.gpu_milli).sum(axis=1) >= task.num_gpu
        return fits

    def feasible(self, task: Task) -> np.ndarray:
        """Indices of the nodes that can host the task now, in node order."""
        return np.flatnonzero(self.fits(task))

    def check_placeable(self, task: Task) -> None:
        """Raise ``Unplaceable`` with the reason when no node of this cluster could ever host the task."""
        if task.gpu_models and not task.gpu_models & set(self.models):
            raise Unplaceable(f"task {task.name!r} asks for unknown GPU model(s) {sorted(task.gpu_models)}; "
                              f"this cluster has {self.models}")
        empty = (self.cpu_capacity >= task.cpu_milli) & (self.memory_capacity >= task.memory_mib)
        if task.gpu_models:
            empty &= self.model_mask(task)
        if task.num_gpu:
            empty &= self.gpu_count >= task.num_gpu
        if not empty.any():
            models = "/".join(sorted(task.gpu_models)) or "any model"
            raise Unplaceable(
                f"task {task.name!r} needs cpu_milli={task.cpu_milli}, memory_mib={task.memory_mib}, "
                f"{task.num_gpu} GPU(s) of {models} on one node; no node of this cluster is that large")

    def allocate(self, placement: Placement) -> None:
        task, node, gpus = placement.task, placement.node, list(placement.gpus)
        if len(gpus) != task.num_gpu or len(set(gpus)) != len(gpus):
            raise OvercommitError(f"task {task.name!r} wants {task.num_gpu} distinct GPUs, placement gives {gpus}")
        if (self.cpu_free[node] < task.cpu_milli or self.memory_free[node] < task.memory_mib
                or (gpus and (self.gpu_free[node, gpus] < task.gpu_milli).any())):
            raise OvercommitError(f"task {task.name!r} does not fit node {self.nodes[node].name!r} GPUs {gpus}: "
                                  f"free cpu {self.cpu_free[node]}, memory {self.memory_free[node]}, "
                                  f"gpu milli {self.gpu_free[node, gpus].tolist()}")
        self.cpu_free[node] -= task.cpu_milli
        self.memory_free[node] -= task.memory_mib
        self.gpu_free[node, gpus] -= task.gpu_milli
        self.tag_count[node, task.affinity_tag] += 1
        self.running[node] += 1
        self._touch(node)

    def release(self, placement: Placement) -> None:
        task, node, gpus = placement.task, placement.node, list(placement.gpus)
        if (self.cpu_free[node] + task.cpu_milli > self.cpu_capacity[node]
                or self.memory_free[node] + task.memory_mib > self.memory_capacity[node]
                or (gpus and (self.gpu_free[node, gpus] + task.gpu_milli > self.gpu_capacity[node, gpus]).any())
                or self.tag_count[node, task.affinity_tag] == 0):
            raise OvercommitError(f"releasing task {task.name!r} from node {self.nodes[node].name!r} would exceed "
                                  "its capacity: it was not allocated there")
        self.cpu_free[node] += task.cpu_milli
        self.memory_free[node] += task.memory_mib
        self.gpu_free[node, gpus] += task.gpu_milli
        self.tag_count[node, task.affinity_tag] -= 1
        self.running[node] -= 1
        self._touch(node)

    def _touch(self, node: int) -> None:
        """Stamp the node with a new version: policies rescore only nodes changed since they last looked."""
        self.version += 1
        self.changed_at[node] = self.version

    def check_invariants(self) -> None:
        """Every free amount within [0, capacity]: the no-over-commit invariant, checked in O(nodes × GPUs)."""
        for name, free, capacity in (("cpu_milli", self.cpu_free, self.cpu_capacity),
                                     ("memory_mib", self.memory_free, self.memory_capacity),
                                     ("gpu_milli", self.gpu_free, self.gpu_capacity)):
            bad = np.argwhere((free < 0) | (free > capacity))
            if len(bad):
                node = int(bad[0][0])
                raise OvercommitError(f"node {self.nodes[node].name!r} has {name} free outside [0, capacity]: "
                                      f"{free[node].tolist()} of {capacity[node].tolist()}")


def carve_nodes(nodes: Sequence[NodeSpec], count: int, seed: int = 0) -> list[NodeSpec]:
    """``count`` nodes with the node list's mix of shapes (CPU, memory, GPUs, model), largest remainder first.

    Each shape gets its proportional share; which nodes of a shape are taken is a seeded draw.
    """
    if not 0 < count <= len(nodes):
        raise ValueError(f"cannot carve {count} nodes out of a list of {len(nodes)}")
    by_shape: dict[tuple, list[NodeSpec]] = {}
    for node in nodes:
        by_shape.setdefault((node.cpu_milli, node.memory_mib, node.gpus, node.gpu_model), []).append(node)
    shares = {shape: count * len(group) / len(nodes) for shape, group in by_shape.items()}
    taken = {shape: int(share) for shape, share in shares.items()}
    by_remainder = sorted(shares, key=lambda shape: (-(shares[shape] - taken[shape]), -len(by_shape[shape]),
                                                     str(shape)))
    for shape in by_remainder[:count - sum(taken.values())]:
        taken[shape] += 1
    rng = np.random.default_rng(seed)
    carved = []
    for shape, group in by_shape.items():
        carved += [group[i] for i in sorted(rng.choice(len(group), size=taken[shape], replace=False))]
    return carved


def best_gpu_slots(free: np.ndarray, num_gpu: int, gpu_milli: int) -> np.ndarray:
    """For each row of ``free[K, slots]``, the ``num_gpu`` slots a task takes: those with the least free milli
    that still fit, lowest slot first on ties. Whole GPUs take the first fully free ones; a share packs onto
    the fullest GPU that fits. Rows where fewer than ``num_gpu`` fit get meaningless slots: filter first."""
    fitting = np.where(free >= gpu_milli, free, np.iinfo(np.int64).max)
    return np.argsort(fitting, axis=1, kind="stable")[:, :num_gpu]


def best_gpus(free: np.ndarray, task: Task) -> tuple[int, ...]:
    """``best_gpu_slots`` for one node's free milli."""
    return tuple(int(g) for g in best_gpu_slots(free[None, :], task.num_gpu, task.gpu_milli)[0])
