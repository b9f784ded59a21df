"""The FGD paper's experiment: tasks arrive until the cluster is full, and we watch what is left.

As in the paper's simulator: the pod list is shuffled (seeded), then resampled to a target load —
tasks drawn uniformly with replacement are appended until their GPU requests reach ``target_load``
times the cluster's GPU capacity (or random tasks are dropped when the list already exceeds it) —
and the tasks arrive one by one and never leave. Node order is shuffled with the same seed, which
decides ties. At each load point (arrived GPU requests as a share of capacity) we record the
unallocated GPU share, the GPU allocation ratio and the fragmentation F(M) as a share of capacity.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ai_system.resources.cluster import Cluster, NodeSpec, Placement, Task, Unplaceable
from ai_system.resources.fragmentation import FragmentationModel, Workload
from ai_system.resources.policies import Policy
from ai_system.resources.trace import Rejected

DEFAULT_TARGET_LOAD = 1.3
DEFAULT_LOAD_POINTS = tuple(round(0.05 * i, 2) for i in range(1, 27))


@dataclass
class FillCurve:
    """Per load point: arrived GPU requests, unallocated GPU, allocation and fragmentation (% of capacity)."""

    policy: str
    seed: int
    capacity_gpus: float
    arrived_pct: list[float] = field(default_factory=list)
    unallocated_pct: list[float] = field(default_factory=list)
    allocated_pct: list[float] = field(default_factory=list)
    fragmented_pct: list[float] = field(default_factory=list)
    failed: list[Rejected] = field(default_factory=list)
    placed: int = 0
    decision_seconds: list[float] = field(default_factory=list)

    @property
    def final_allocated_pct(self) -> float:
        return self.allocated_pct[-1] if self.allocated_pct else 0.0


def arrivals(tasks: Sequence[Task], capacity_milli: int, target_load: float, rng: np.random.Generator) -> list[Task]:
    """The shuffled pod list, resampled so its GPU requests come to ``target_load`` × capacity."""
    if not tasks:
        raise ValueError("the pod list has no tasks to schedule")
    if target_load <= 0:
        raise ValueError(f"target load must be positive (a multiple of GPU capacity), got {target_load}")
    order = [tasks[i] for i in rng.permutation(len(tasks))]
    target = target_load * capacity_milli
    requested = sum(task.total_gpu_milli for task in order)
    while requested > target and order:
        requested -= order.pop(int(rng.integers(len(order)))).total_gpu_milli
    copies = 0
    while requested < target:
        task = tasks[int(rng.integers(len(tasks)))]
        if requested + task.total_gpu_milli > target:
            break
        copies += 1
        order.append(Task(f"{task.name}-resampled-{copies}", task.cpu_milli, task.memory_mib, task.num_gpu,
                          task.gpu_milli, task.gpu_models))
        requested += task.total_gpu_milli
    return order


def shuffled_cluster(nodes: Sequence[NodeSpec], rng: np.random.Generator) -> Cluster:
    return Cluster([nodes[i] for i in rng.permutation(len(nodes))])


def run_fill(nodes: Sequence[NodeSpec], tasks: Sequence[Task], make: Callable[[int], Policy], seed: int = 42,
             target_load: float = DEFAULT_TARGET_LOAD, load_points: Sequence[float] = DEFAULT_LOAD_POINTS,
             workload: Workload | None = None, check_every: int = 0) -> FillCurve:
    """One run of the experiment with the policy ``make(seed)``; deterministic for a seed.

    ``workload`` (default: the pod list's typical types) is the F(M) the curve reports for every
    policy, so fragmentation is measured the same way whatever the policy optimises.
    ``check_every`` > 0 checks the no-over-commit invariant every that many arrivals.
    """
    rng = np.random.default_rng(seed)
    cluster = shuffled_cluster(nodes, rng)
    stream = arrivals(tasks, cluster.total_gpu_milli, target_load, rng)
    policy = make(seed)
    measure = FragmentationModel(workload or Workload.from_tasks(tasks), cluster.models)
    capacity = cluster.total_gpu_milli
    curve = FillCurve(policy.name, seed, capacity / 1000)
    points = sorted(load_points)
    arrived = 0
    for count, task in enumerate(stream, start=1):
        arrived += task.total_gpu_milli
        started = time.perf_counter()
        placement = place(cluster, policy, task, curve.failed)
        curve.decision_seconds.append(time.perf_counter() - started)
        curve.placed += placement is not None
        if check_every and count % check_every == 0:
            cluster.check_invariants()
        while points and arrived >= points[0] * capacity:
            _snapshot(curve, cluster, measure, 100 * points.pop(0))
    if points:
        _snapshot(curve, cluster, measure, 100 * arrived / capacity)
    cluster.check_invariants()
    return curve


def place(cluster: Cluster, policy: Policy, task: Task, failed: list[Rejected]) -> Placement | None:
    """Choose and allocate, or record why not (never fits, or no node fits now)."""
    try:
        cluster.check_placeable(task)
    except Unplaceable as error:
        failed.append(Rejected(task.name, str(error)))
        return None
    placement = policy.choose(cluster, task)
    if placement is None:
        failed.append(Rejected(task.name, "no node has room for it now"))
        return None
    cluster.allocate(placement)
    return placement


def _snapshot(curve: FillCurve, cluster: Cluster, measure: FragmentationModel, arrived_pct: float) -> None:
    capacity = cluster.total_gpu_milli
    allocated = cluster.allocated_gpu_milli
    fragment = measure.of(cluster.cpu_free, cluster.gpu_free, cluster.model_of).sum() / measure.total_weight
    curve.arrived_pct.append(round(arrived_pct, 2))
    curve.allocated_pct.append(100 * allocated / capacity)
    curve.unallocated_pct.append(100 * (capacity - allocated) / capacity)
    curve.fragmented_pct.append(100 * float(fragment) / capacity)
