"""Placement policies behind one interface: score every feasible node at once, take the best.

A policy maps (cluster, task) to a ``Placement`` or ``None`` when no node fits now. Scores are
"lower is better" and exact (integers, or floats computed in the same order as the reference), ties
go to the lowest node index; the fill experiment shuffles node order per seed, which stands in for
the random tie-breaking of kube-scheduler. ``reference.py`` scores the same way one node at a time
in plain Python, and the tests require both to pick the same node and GPUs.

The baselines follow the FGD paper's simulator (alibaba/kubernetes-scheduler-simulator) in intent:

* ``random`` — a uniformly random feasible node (and GPU).
* ``best-fit`` — least CPU + GPU left after placement, each normalised by the largest node.
* ``dot-product`` — smallest dot product of the node's free (CPU, GPU) and the task's request,
  both normalised by the largest node (the simulator's "merge/max" Tetris variant).
* ``gpu-packing`` — shared GPUs already in use first, then used nodes, then idle nodes with fewest GPUs.
* ``gpu-clustering`` — nodes that already host only tasks of the same GPU class first.
* ``fgd`` — Fragmentation Gradient Descent: the node and GPU where F(M) grows least.
* ``fgd-pack`` (ours) — FGD with memory in the fit test of its fragmentation measure and best-fit
  packing to break FGD's ties (most of them: every placement that leaves F unchanged).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np

from ai_system.resources.cluster import MILLI, Cluster, Placement, Task, best_gpu_slots, best_gpus
from ai_system.resources.fragmentation import FragmentationModel, Workload

TIER = 10**9
# Per-request caches hold (requests × nodes) scores; at least this many requests, more on small clusters.
REQUEST_CACHE = 256
REQUEST_CACHE_CELLS = 2**21

Keys = tuple[np.ndarray, ...]


class _NodeChoices:
    """One request's score keys (first key: sentinel where the node cannot host it) and GPU slots for
    every node, valid as of cluster version ``version``."""

    def __init__(self, keys: Keys, slots: np.ndarray | None) -> None:
        self.keys = keys
        self.slots = slots
        self.version = -1


def _sentinel(dtype: np.dtype) -> float | int:
    return np.inf if np.issubdtype(dtype, np.floating) else np.iinfo(dtype).max


def lexicographic_argmin(keys: Keys) -> int | None:
    """The row whose keys are smallest in order, lowest row on ties; None when the first key is all sentinel."""
    first = keys[0]
    best = int(np.argmin(first))
    if first[best] == _sentinel(first.dtype):
        return None
    if len(keys) == 1:
        return best
    rows = np.flatnonzero(first == first[best])
    for key in keys[1:]:
        if len(rows) == 1:
            break
        tied = key[rows]
        rows = rows[tied == tied.min()]
    return int(rows[0])


class Policy(ABC):
    """Base: per-node scores, argmin. Subclasses implement ``score_nodes``.

    A node's score for a request depends on that node's state alone, so every request's scores are
    kept for all nodes and only nodes the cluster changed since (``Cluster.changed_at``, one per
    placement) are rescored: a decision costs a few O(nodes) array passes plus the scoring of the
    changed nodes, with no Python work per node.
    """

    name = "policy"
    key_dtypes: tuple[type, ...] = (np.int64,)
    picks_gpus = False

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self._cluster: Cluster | None = None
        self._by_request: OrderedDict[tuple, _NodeChoices] = OrderedDict()

    def choose(self, cluster: Cluster, task: Task) -> Placement | None:
        choices = self._node_choices(cluster, task)
        node = lexicographic_argmin(choices.keys)
        if node is None:
            return None
        chosen = (tuple(int(g) for g in choices.slots[node]) if choices.slots is not None
                  else best_gpus(cluster.gpu_free[node], task))
        return Placement(task, node, chosen)

    def scores(self, cluster: Cluster, task: Task, nodes: np.ndarray) -> tuple[Keys, np.ndarray | None]:
        """The sort keys of the feasible ``nodes`` and, where the policy picks GPUs itself, their GPU slots."""
        choices = self._node_choices(cluster, task)
        return (tuple(key[nodes] for key in choices.keys),
                choices.slots[nodes] if choices.slots is not None else None)

    @abstractmethod
    def score_nodes(self, cluster: Cluster, task: Task, nodes: np.ndarray) -> tuple[Keys, np.ndarray | None]:
        """Sort keys (lower is better, ``key_dtypes``) of the feasible ``nodes`` computed from the current
        state, and the GPU slots per node where the policy picks them (``picks_gpus``), else ``None``."""

    def bind(self, cluster: Cluster) -> None:
        """Forget every cache when the policy meets a new cluster."""
        if self._cluster is not cluster:
            self._cluster = cluster
            self._by_request.clear()

    def _node_choices(self, cluster: Cluster, task: Task) -> _NodeChoices:
        self.bind(cluster)
        request = (task.cpu_milli, task.memory_mib, task.num_gpu, task.gpu_milli, task.gpu_models)
        choices = self._by_request.pop(request, None)
        if choices is None:
            keys = tuple(np.empty(len(cluster), dtype=dtype) for dtype in self.key_dtypes)
            slots = np.zeros((len(cluster), task.num_gpu), dtype=np.int8) if self.picks_gpus else None
            choices = _NodeChoices(keys, slots)
        self._by_request[request] = choices
        while len(self._by_request) > max(REQUEST_CACHE, REQUEST_CACHE_CELLS // len(cluster)):
            self._by_request.popitem(last=False)
        if choices.version == cluster.version:
            return choices
        stale = np.flatnonzero(cluster.changed_at > choices.version)
        fit = stale[cluster.fits(task, stale)]
        choices.keys[0][stale] = _sentinel(choices.keys[0].dtype)
        if len(fit):
            keys, slots = self.score_nodes(cluster, task, fit)
            for cached, key in zip(choices.keys, keys, strict=True):
                cached[fit] = key
            if choices.slots is not None:
                choices.slots[fit] = slots
        choices.version = cluster.version
        return choices


def best_fit_key(cluster: Cluster, cpu_left: np.ndarray, gpu_left: np.ndarray) -> np.ndarray:
    """CPU and GPU left after placement, each over the largest node's, as one exact integer (lower is tighter)."""
    max_cpu, max_gpu = cluster.largest
    return cpu_left * max_gpu + gpu_left * max_cpu


class RandomFit(Policy):
    name = "random"

    def choose(self, cluster: Cluster, task: Task) -> Placement | None:
        nodes = cluster.feasible(task)
        if not len(nodes):
            return None
        node = int(nodes[self.rng.integers(len(nodes))])
        fitting = np.flatnonzero(cluster.gpu_free[node] >= task.gpu_milli) if task.num_gpu else np.array([], int)
        gpus = self.rng.choice(fitting, size=task.num_gpu, replace=False) if task.num_gpu else []
        return Placement(task, node, tuple(sorted(int(g) for g in gpus)))

    def score_nodes(self, cluster: Cluster, task: Task, nodes: np.ndarray) -> tuple[Keys, None]:
        """A random order (what an extender's prioritize call sees); ``choose`` draws its node directly."""
        return (self.rng.permutation(len(nodes)).astype(np.int64),), None


class BestFit(Policy):
    name = "best-fit"

    def score_nodes(self, cluster: Cluster, task: Task, nodes: np.ndarray) -> tuple[Keys, None]:
        return (best_fit_key(cluster, cluster.cpu_free[nodes] - task.cpu_milli,
                             cluster.gpu_free[nodes].sum(axis=1) - task.total_gpu_milli),), None


class DotProduct(Policy):
    name = "dot-product"
    key_dtypes = (np.float64,)

    def score_nodes(self, cluster: Cluster, task: Task, nodes: np.ndarray) -> tuple[Keys, None]:
        max_cpu, max_gpu = cluster.largest
        cpu = cluster.cpu_free[nodes] / max_cpu * (task.cpu_milli / max_cpu)
        gpu = cluster.gpu_free[nodes].sum(axis=1) / max_gpu * (task.total_gpu_milli / max_gpu)
        return (cpu + gpu,), None


class GpuPacking(Policy):
    name = "gpu-packing"

    def score_nodes(self, cluster: Cluster, task: Task, nodes: np.ndarray) -> tuple[Keys, None]:
        if not task.num_gpu:
            return (np.zeros(len(nodes), dtype=np.int64),), None
        free = cluster.gpu_free[nodes]
        taken = np.take_along_axis(free, best_gpu_slots(free, task.num_gpu, task.gpu_milli), axis=1)
        idle_taken = (taken == MILLI).sum(axis=1)
        node_idle = (free == cluster.gpu_capacity[nodes]).all(axis=1)
        tier = np.where(idle_taken == 0, 0, np.where(node_idle, 2, 1))
        within = np.where(tier == 0, taken.sum(axis=1), np.where(tier == 1, idle_taken, cluster.gpu_count[nodes]))
        return (tier * TIER + within,), None


class GpuClustering(Policy):
    name = "gpu-clustering"

    def score_nodes(self, cluster: Cluster, task: Task, nodes: np.ndarray) -> tuple[Keys, None]:
        if not task.num_gpu:
            return (np.zeros(len(nodes), dtype=np.int64),), None
        tags = cluster.tag_count[nodes, 1:]
        same = tags[:, task.affinity_tag - 1] > 0
        kinds = (tags > 0).sum(axis=1)
        tier = np.where(same, np.where(kinds == 1, 0, 1), np.where(kinds == 0, 2, 3))
        return (tier * TIER + cluster.gpu_free[nodes].sum(axis=1),), None


class FragmentationGradient(Policy):
    """FGD: the placement (node and GPUs) that increases the cluster's F(M) least.

    Each node's profile (GPUs and free milli at or above each threshold) and F are kept and only the
    nodes changed since are recomputed; a candidate's profile is its node's, shifted by the GPUs it
    takes, so scoring costs (candidates × thresholds + candidates × types), not × GPUs.
    """

    name = "fgd"
    picks_gpus = True
    memory_aware = False

    def __init__(self, workload: Workload, seed: int = 0) -> None:
        super().__init__(seed)
        self.workload = workload
        self._model: FragmentationModel | None = None
        self._version = -1
        self._count = self._usable = self._before = np.zeros(0, dtype=np.int64)

    def bind(self, cluster: Cluster) -> None:
        if self._cluster is not cluster:
            self._model = FragmentationModel(self.workload, cluster.models)
            self._version = -1
        super().bind(cluster)

    def _fragmentation(self, cluster: Cluster, rows: np.ndarray | slice, count: np.ndarray, usable: np.ndarray,
                       gpu_total: np.ndarray, cpu_free: np.ndarray, memory_free: np.ndarray) -> np.ndarray:
        return self._model.from_profile(count, usable, gpu_total, cpu_free, cluster.model_of[rows],
                                        memory_free if self.memory_aware else None)

    def node_state(self, cluster: Cluster) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every node's profile (count, usable) and F now, recomputing only the nodes changed since the last call."""
        self.bind(cluster)
        if self._version == cluster.version:
            return self._count, self._usable, self._before
        if self._version < 0:
            rows: np.ndarray | slice = slice(None)
            self._count, self._usable = self._model.profile(cluster.gpu_free)
            self._before = np.zeros(len(cluster), dtype=np.int64)
        else:
            rows = np.flatnonzero(cluster.changed_at > self._version)
        self._count[rows], self._usable[rows] = self._model.profile(cluster.gpu_free[rows])
        self._before[rows] = self._fragmentation(cluster, rows, self._count[rows], self._usable[rows],
                                                 cluster.gpu_free[rows].sum(axis=1), cluster.cpu_free[rows],
                                                 cluster.memory_free[rows])
        self._version = cluster.version
        return self._count, self._usable, self._before

    def candidates(self, cluster: Cluster, task: Task, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every distinct choice as (row into ``nodes``, GPU slots[K, num_gpu]): for a share of one GPU,
        each distinct free amount that fits (its lowest slot); otherwise ``best_gpu_slots`` per node."""
        free = cluster.gpu_free[nodes]
        if task.num_gpu == 1 and task.gpu_milli < MILLI:
            rows, slots = np.nonzero(free >= task.gpu_milli)
            _, first = np.unique(rows * (MILLI + 1) + free[rows, slots], return_index=True)
            return rows[first], slots[first, None]
        return np.arange(len(nodes)), best_gpu_slots(free, task.num_gpu, task.gpu_milli)

    def score_nodes(self, cluster: Cluster, task: Task, nodes: np.ndarray) -> tuple[Keys, np.ndarray]:
        """Each node's best choice (sort keys and GPU slots): every candidate's growth of F, least first."""
        count, usable, before = self.node_state(cluster)
        rows, slots = self.candidates(cluster, task, nodes)
        node_rows = nodes[rows]
        count, usable = count[node_rows], usable[node_rows]
        for j in range(task.num_gpu):
            old = cluster.gpu_free[node_rows, slots[:, j]]
            count, usable = self._model.shift(count, usable, old, old - task.gpu_milli)
        cpu_left = cluster.cpu_free[node_rows] - task.cpu_milli
        gpu_left = cluster.gpu_free[node_rows].sum(axis=1) - task.total_gpu_milli
        after = self._fragmentation(cluster, node_rows, count, usable, gpu_left, cpu_left,
                                    cluster.memory_free[node_rows] - task.memory_mib)
        keys = self.candidate_keys(cluster, task, node_rows, after - before[node_rows], cpu_left, gpu_left)
        order = np.lexsort(keys[::-1])
        _, first = np.unique(rows[order], return_index=True)
        pick = order[first]
        return tuple(key[pick] for key in keys), slots[pick]

    def candidate_keys(self, cluster: Cluster, task: Task, node_rows: np.ndarray, growth: np.ndarray,
                       cpu_left: np.ndarray, gpu_left: np.ndarray) -> Keys:
        """Sort keys of each candidate, compared in order: FGD uses the growth of F alone."""
        return (growth,)


class FragmentationGradientPacking(FragmentationGradient):
    """Ours: FGD whose fit test also checks memory, with best-fit packing to break its ties."""

    name = "fgd-pack"
    memory_aware = True
    key_dtypes = (np.int64, np.int64)

    def candidate_keys(self, cluster: Cluster, task: Task, node_rows: np.ndarray, growth: np.ndarray,
                       cpu_left: np.ndarray, gpu_left: np.ndarray) -> Keys:
        return growth, best_fit_key(cluster, cpu_left, gpu_left)


POLICIES: dict[str, Callable[..., Policy]] = {
    "random": RandomFit, "best-fit": BestFit, "dot-product": DotProduct, "gpu-packing": GpuPacking,
    "gpu-clustering": GpuClustering, "fgd": FragmentationGradient, "fgd-pack": FragmentationGradientPacking,
}
WORKLOAD_POLICIES = {"fgd": FragmentationGradient, "fgd-pack": FragmentationGradientPacking}


def make_policy(name: str, typical_tasks: Sequence[Task] = (), seed: int = 0) -> Policy:
    """A policy by name; the FGD family derives its target workload from ``typical_tasks`` (a pod list)."""
    if name not in POLICIES:
        raise ValueError(f"unknown policy {name!r}, expected one of {sorted(POLICIES)}")
    if name in WORKLOAD_POLICIES:
        kind = WORKLOAD_POLICIES[name]
        return kind(Workload.from_tasks(typical_tasks, with_memory=kind.memory_aware), seed=seed)
    return POLICIES[name](seed=seed)
