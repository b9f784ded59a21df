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

from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np

from ai_system.resources.cluster import MILLI, Cluster, Placement, Task, best_gpu_slots, best_gpus
from ai_system.resources.fragmentation import FragmentationModel, Workload

TIER = 10**9


class Policy:
    """Base: feasibility, per-node scores, argmin. Subclasses implement ``scores``."""

    name = "policy"

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)

    def choose(self, cluster: Cluster, task: Task) -> Placement | None:
        nodes = cluster.distinct_feasible(task)
        if not len(nodes):
            return None
        keys, gpus = self.scores(cluster, task, nodes)
        best = int(np.lexsort(keys[::-1])[0]) if isinstance(keys, tuple) else int(np.argmin(keys))
        node = int(nodes[best])
        chosen = tuple(int(g) for g in gpus[best]) if gpus is not None else best_gpus(cluster.gpu_free[node], task)
        return Placement(task, node, chosen)

    def scores(self, cluster: Cluster, task: Task, nodes: np.ndarray) -> tuple[Keys, np.ndarray | None]:
        """Scores of the feasible ``nodes`` (an array, or a tuple of arrays compared in order) and, where
        the policy picks GPUs itself, the GPU slots per node (else ``None``: ``best_gpus``)."""
        raise NotImplementedError


Keys = np.ndarray | tuple[np.ndarray, ...]


def normalisers(cluster: Cluster) -> tuple[int, int]:
    """The largest node's CPU milli and GPU milli (at least one GPU), the scale of best-fit and dot-product."""
    return int(cluster.cpu_capacity.max()), max(MILLI, int(cluster.gpu_capacity.sum(axis=1).max()))


def best_fit_key(cluster: Cluster, cpu_left: np.ndarray, gpu_left: np.ndarray) -> np.ndarray:
    """CPU and GPU left after placement, each over the largest node's, as one exact integer (lower is tighter)."""
    max_cpu, max_gpu = normalisers(cluster)
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


class BestFit(Policy):
    name = "best-fit"

    def scores(self, cluster: Cluster, task: Task, nodes: np.ndarray) -> tuple[Keys, None]:
        return best_fit_key(cluster, cluster.cpu_free[nodes] - task.cpu_milli,
                            cluster.gpu_free[nodes].sum(axis=1) - task.total_gpu_milli), None


class DotProduct(Policy):
    name = "dot-product"

    def scores(self, cluster: Cluster, task: Task, nodes: np.ndarray) -> tuple[Keys, None]:
        max_cpu, max_gpu = normalisers(cluster)
        cpu = cluster.cpu_free[nodes] / max_cpu * (task.cpu_milli / max_cpu)
        gpu = cluster.gpu_free[nodes].sum(axis=1) / max_gpu * (task.total_gpu_milli / max_gpu)
        return cpu + gpu, None


class GpuPacking(Policy):
    name = "gpu-packing"

    def scores(self, cluster: Cluster, task: Task, nodes: np.ndarray) -> tuple[Keys, None]:
        if not task.num_gpu:
            return np.zeros(len(nodes), dtype=np.int64), None
        free = cluster.gpu_free[nodes]
        taken = np.take_along_axis(free, best_gpu_slots(free, task.num_gpu, task.gpu_milli), axis=1)
        idle_taken = (taken == MILLI).sum(axis=1)
        node_idle = (free == cluster.gpu_capacity[nodes]).all(axis=1)
        tier = np.where(idle_taken == 0, 0, np.where(node_idle, 2, 1))
        within = np.where(tier == 0, taken.sum(axis=1), np.where(tier == 1, idle_taken, cluster.gpu_count[nodes]))
        return tier * TIER + within, None


class GpuClustering(Policy):
    name = "gpu-clustering"

    def scores(self, cluster: Cluster, task: Task, nodes: np.ndarray) -> tuple[Keys, None]:
        if not task.num_gpu:
            return np.zeros(len(nodes), dtype=np.int64), None
        tags = cluster.tag_count[nodes, 1:]
        same = tags[:, task.affinity_tag - 1] > 0
        kinds = (tags > 0).sum(axis=1)
        tier = np.where(same, np.where(kinds == 1, 0, 1), np.where(kinds == 0, 2, 3))
        return tier * TIER + cluster.gpu_free[nodes].sum(axis=1), None


REQUEST_CACHE = 256


class _NodeChoices:
    """Per node: the best choice's sort keys and GPU slots for one request, and when they were scored."""

    def __init__(self, nodes: int, num_gpu: int) -> None:
        self.scored_at = np.full(nodes, -1, dtype=np.int64)
        self.keys: list[np.ndarray] = []
        self.slots = np.zeros((nodes, num_gpu), dtype=np.int64)


class FragmentationGradient(Policy):
    """FGD: the placement (node and GPUs) that increases the cluster's F(M) least.

    Each node's profile (GPUs and free milli at or above each threshold) and F are cached and only
    the node that changed is recomputed; a candidate's profile is its node's, shifted by the GPUs it
    takes, so scoring costs (candidates × thresholds + candidates × types), not × GPUs. A node's best
    choice for a given request is a function of that node alone, so it is kept per request and
    recomputed only for nodes that changed since (a placement changes one node).
    """

    name = "fgd"
    memory_aware = False

    def __init__(self, workload: Workload, seed: int = 0) -> None:
        super().__init__(seed)
        self.workload = workload
        self._model: FragmentationModel | None = None
        self._cluster: Cluster | None = None
        self._version = -1
        self._count = self._usable = self._before = np.zeros(0, dtype=np.int64)
        self._tick = 0
        self._changed_at = np.zeros(0, dtype=np.int64)
        self._by_request: OrderedDict[tuple, _NodeChoices] = OrderedDict()

    def fragmentation_model(self, cluster: Cluster) -> FragmentationModel:
        if self._model is None or self._cluster is not cluster:
            self._model = FragmentationModel(self.workload, cluster.models)
            self._cluster, self._version = cluster, -1
        return self._model

    def _fragmentation(self, cluster: Cluster, rows: np.ndarray | slice, count: np.ndarray, usable: np.ndarray,
                       gpu_total: np.ndarray, cpu_free: np.ndarray, memory_free: np.ndarray) -> np.ndarray:
        return self.fragmentation_model(cluster).from_profile(
            count, usable, gpu_total, cpu_free, cluster.model_of[rows], memory_free if self.memory_aware else None)

    def node_state(self, cluster: Cluster) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every node's profile (count, usable) and F now, recomputing only the node changed since the last call."""
        model = self.fragmentation_model(cluster)
        if cluster.version == self._version + 1 and cluster.changed_node >= 0:
            rows = slice(cluster.changed_node, cluster.changed_node + 1)
        elif cluster.version != self._version:
            rows = slice(None)
            self._count, self._usable = model.profile(cluster.gpu_free)
            self._before = np.zeros(len(cluster), dtype=np.int64)
            self._changed_at = np.zeros(len(cluster), dtype=np.int64)
            self._by_request.clear()
        else:
            return self._count, self._usable, self._before
        self._tick += 1
        self._changed_at[rows] = self._tick
        self._count[rows], self._usable[rows] = model.profile(cluster.gpu_free[rows])
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

    def scores(self, cluster: Cluster, task: Task, nodes: np.ndarray) -> tuple[Keys, np.ndarray]:
        self.node_state(cluster)
        request = (task.cpu_milli, task.memory_mib, task.num_gpu, task.gpu_milli, task.gpu_models)
        choices = self._by_request.pop(request, None) or _NodeChoices(len(cluster), task.num_gpu)
        self._by_request[request] = choices
        while len(self._by_request) > REQUEST_CACHE:
            self._by_request.popitem(last=False)
        stale = nodes[choices.scored_at[nodes] < self._changed_at[nodes]]
        if len(stale):
            keys, slots = self.score_nodes(cluster, task, stale)
            choices.keys = choices.keys or [np.zeros(len(cluster), dtype=key.dtype) for key in keys]
            for cached, key in zip(choices.keys, keys, strict=True):
                cached[stale] = key
            choices.slots[stale] = slots
            choices.scored_at[stale] = self._tick
        return tuple(cached[nodes] for cached in choices.keys), choices.slots[nodes]

    def score_nodes(self, cluster: Cluster, task: Task, nodes: np.ndarray) -> tuple[tuple[np.ndarray, ...],
                                                                                    np.ndarray]:
        """Each node's best choice (sort keys and GPU slots), computed from the current state."""
        count, usable, before = self.node_state(cluster)
        model = self.fragmentation_model(cluster)
        rows, slots = self.candidates(cluster, task, nodes)
        node_rows = nodes[rows]
        count, usable = count[node_rows], usable[node_rows]
        for j in range(task.num_gpu):
            old = cluster.gpu_free[node_rows, slots[:, j]]
            count, usable = model.shift(count, usable, old, old - task.gpu_milli)
        cpu_left = cluster.cpu_free[node_rows] - task.cpu_milli
        gpu_left = cluster.gpu_free[node_rows].sum(axis=1) - task.total_gpu_milli
        after = self._fragmentation(cluster, node_rows, count, usable, gpu_left, cpu_left,
                                    cluster.memory_free[node_rows] - task.memory_mib)
        keys = self.candidate_keys(cluster, after - before[node_rows], cpu_left, gpu_left)
        order = np.lexsort(keys[::-1])
        _, first = np.unique(rows[order], return_index=True)
        pick = order[first]
        return tuple(key[pick] for key in keys), slots[pick]

    def candidate_keys(self, cluster: Cluster, growth: np.ndarray, cpu_left: np.ndarray,
                       gpu_left: np.ndarray) -> tuple[np.ndarray, ...]:
        """Sort keys of each candidate, compared in order: FGD uses the growth of F alone."""
        return (growth,)


class FragmentationGradientPacking(FragmentationGradient):
    """Ours: FGD whose fit test also checks memory, with best-fit packing to break its ties."""

    name = "fgd-pack"
    memory_aware = True

    def candidate_keys(self, cluster: Cluster, growth: np.ndarray, cpu_left: np.ndarray,
                       gpu_left: np.ndarray) -> tuple[np.ndarray, ...]:
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
