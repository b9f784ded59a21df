"""Plain-Python reference scorers: one node at a time, one GPU at a time, from the definitions.

The vectorised policies in ``policies.py`` must choose exactly what these choose (same node, same
GPUs) on any cluster state; ``tests/resources/test_policy_parity.py`` checks that. Slow on purpose:
every feasibility test, GPU choice and score is written out the way the paper states it.
"""

from __future__ import annotations

from ai_system.resources.cluster import MILLI, SHARE_TAG, Cluster, Placement, Task
from ai_system.resources.fragmentation import Workload, reference_node_fragmentation

TIER = 10**9


def node_fits(cluster: Cluster, node: int, task: Task) -> bool:
    spec = cluster.nodes[node]
    if task.gpu_models and (not spec.gpus or spec.gpu_model not in task.gpu_models):
        return False
    if cluster.cpu_free[node] < task.cpu_milli or cluster.memory_free[node] < task.memory_mib:
        return False
    return sum(1 for free in cluster.gpu_free[node] if free >= task.gpu_milli) >= task.num_gpu if task.num_gpu else True


def least_free_gpus(free: list[int], task: Task) -> tuple[int, ...]:
    """The fitting GPUs with the least free milli, lowest slot first on ties."""
    fitting = sorted((value, slot) for slot, value in enumerate(free) if value >= task.gpu_milli)
    return tuple(slot for _, slot in fitting[:task.num_gpu])


def _largest(cluster: Cluster) -> tuple[int, int]:
    max_cpu = max(node.cpu_milli for node in cluster.nodes)
    return max_cpu, max(MILLI, max(node.gpus for node in cluster.nodes) * MILLI)


def _best_fit(cluster: Cluster, node: int, task: Task) -> tuple[int, ...]:
    max_cpu, max_gpu = _largest(cluster)
    cpu_left = int(cluster.cpu_free[node]) - task.cpu_milli
    gpu_left = sum(int(v) for v in cluster.gpu_free[node]) - task.num_gpu * task.gpu_milli
    return (cpu_left * max_gpu + gpu_left * max_cpu,)


def _dot_product(cluster: Cluster, node: int, task: Task) -> tuple[float, ...]:
    max_cpu, max_gpu = _largest(cluster)
    gpu_free = sum(int(v) for v in cluster.gpu_free[node])
    return (int(cluster.cpu_free[node]) / max_cpu * (task.cpu_milli / max_cpu)
            + gpu_free / max_gpu * (task.num_gpu * task.gpu_milli / max_gpu),)


def _gpu_packing(cluster: Cluster, node: int, task: Task) -> tuple[int, ...]:
    if not task.num_gpu:
        return (0,)
    free = [int(v) for v in cluster.gpu_free[node]][:cluster.nodes[node].gpus]
    taken = [free[slot] for slot in least_free_gpus(free, task)]
    idle_taken = sum(1 for value in taken if value == MILLI)
    if idle_taken == 0:
        return (sum(taken),)
    if all(value == MILLI for value in free):
        return (2 * TIER + len(free),)
    return (TIER + idle_taken,)


def _gpu_clustering(cluster: Cluster, node: int, task: Task) -> tuple[int, ...]:
    if not task.num_gpu:
        return (0,)
    hosted = {tag for tag in range(1, SHARE_TAG + 1) if cluster.tag_count[node, tag] > 0}
    if task.affinity_tag in hosted:
        tier = 0 if len(hosted) == 1 else 1
    else:
        tier = 2 if not hosted else 3
    return (tier * TIER + sum(int(v) for v in cluster.gpu_free[node]),)


def _fgd_choices(cluster: Cluster, node: int, task: Task, workload: Workload,
                 with_memory: bool) -> list[tuple[tuple[int, ...], int]]:
    """(GPU slots, growth of F) for every way FGD may place the task on this node."""
    spec = cluster.nodes[node]
    free = [int(v) for v in cluster.gpu_free[node]]
    cpu, memory = int(cluster.cpu_free[node]), int(cluster.memory_free[node])
    model = spec.gpu_model if spec.gpus else ""

    def fragmentation(cpu_free: int, memory_free: int, gpu_free: list[int]) -> int:
        return reference_node_fragmentation(workload, cpu_free, gpu_free, model,
                                            memory_free if with_memory else None)

    before = fragmentation(cpu, memory, free)
    if task.num_gpu == 1 and task.gpu_milli < MILLI:
        options = [(slot,) for slot, value in enumerate(free) if value >= task.gpu_milli]
    else:
        options = [least_free_gpus(free, task)]
    choices = []
    for slots in options:
        after = list(free)
        for slot in slots:
            after[slot] -= task.gpu_milli
        choices.append((slots, fragmentation(cpu - task.cpu_milli, memory - task.memory_mib, after) - before))
    return choices


def reference_choose(policy: str, cluster: Cluster, task: Task, workload: Workload | None = None) -> Placement | None:
    """What ``policy`` (any deterministic one of ``POLICIES``) places, computed node by node."""
    best: tuple | None = None
    for node in range(len(cluster)):
        if not node_fits(cluster, node, task):
            continue
        free = [int(v) for v in cluster.gpu_free[node]]
        if policy in ("fgd", "fgd-pack"):
            for slots, growth in _fgd_choices(cluster, node, task, workload, with_memory=policy == "fgd-pack"):
                if policy == "fgd":
                    key = (growth,)
                else:
                    max_cpu, max_gpu = _largest(cluster)
                    cpu_left = int(cluster.cpu_free[node]) - task.cpu_milli
                    gpu_left = sum(free) - task.num_gpu * task.gpu_milli
                    key = (growth, cpu_left * max_gpu + gpu_left * max_cpu)
                # Ties on one node go to the GPU with less free milli, then the lower slot.
                candidate = (key, node, tuple(free[slot] for slot in slots), slots)
                if best is None or candidate < best:
                    best = candidate
            continue
        score = {"best-fit": _best_fit, "dot-product": _dot_product, "gpu-packing": _gpu_packing,
                 "gpu-clustering": _gpu_clustering}[policy](cluster, node, task)
        if best is None or (score, node) < best[:2]:
            best = (score, node, (), least_free_gpus(free, task))
    return None if best is None else Placement(task, best[1], best[3])
