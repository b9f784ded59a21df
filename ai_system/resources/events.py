"""Discrete-event replay of a pod list's own times: arrivals, departures, a waiting queue.

Each job (a task, or the members of a ``gang``) arrives at its ``creation_time`` and runs for its
trace duration (``deletion_time`` minus ``scheduled_time``, or minus ``creation_time`` for pods the
trace never scheduled) from the moment it is placed. A job that does not fit waits in a FIFO queue
with backfill: whenever a task departs, waiting jobs are retried in arrival order and any that now
fits starts. A job that could not fit even on the empty cluster is rejected with its reason at once.
Departures at a time are processed before arrivals at the same time. Deterministic: no randomness
beyond the policy's own seed.

The published pod lists are samples of a much larger cluster's pods (the default list keeps about
14 GPUs busy on average over its 149 days), so a replay on a small cluster compresses the arrival
times by ``arrival_speedup`` (durations unchanged) to reach a chosen offered load; see ``speedup_for``.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import count

import numpy as np

from ai_system.resources.cluster import Cluster, NodeSpec, Placement, Task, Unplaceable
from ai_system.resources.gang import place_gang
from ai_system.resources.policies import Policy
from ai_system.resources.trace import Rejected

DEPART, ARRIVE = 0, 1


@dataclass
class ReplayResult:
    """GPU-hour utilization over the arrival window, queueing delays (s) and the jobs that never ran."""

    policy: str
    capacity_gpus: float
    span_seconds: float
    gpu_hour_utilization_pct: float
    queueing_delays: list[float] = field(default_factory=list)
    never_fit: list[Rejected] = field(default_factory=list)
    never_started: list[str] = field(default_factory=list)
    utilization_time_s: list[float] = field(default_factory=list)
    utilization_pct: list[float] = field(default_factory=list)

    def delay_percentile(self, q: float) -> float:
        return float(np.percentile(self.queueing_delays, q)) if self.queueing_delays else 0.0


def duration(task: Task) -> int:
    start = task.scheduled if task.scheduled is not None and task.scheduled >= task.creation else task.creation
    return max(0, task.deletion - start)


def may_fit(cluster: Cluster, node: int, jobs: list[list[Task]]) -> np.ndarray:
    """Which waiting jobs could now fit on ``node`` (the only node that changed): a vectorised test of
    CPU, memory and GPU counts for one-task jobs; gangs are always retried."""
    single = np.array([len(members) == 1 for members in jobs])
    first = [members[0] for members in jobs]
    cpu = np.array([task.cpu_milli for task in first])
    memory = np.array([task.memory_mib for task in first])
    milli = np.array([task.gpu_milli for task in first])
    wanted = np.array([task.num_gpu for task in first])
    enough_gpus = (cluster.gpu_free[node][None, :] >= milli[:, None]).sum(axis=1) >= wanted
    fits = (cluster.cpu_free[node] >= cpu) & (cluster.memory_free[node] >= memory) & enough_gpus
    model = cluster.nodes[node].gpu_model
    models_ok = np.array([not task.gpu_models or model in task.gpu_models for task in first])
    return ~single | (fits & models_ok)


def jobs_of(tasks: Sequence[Task]) -> list[list[Task]]:
    """Tasks grouped into jobs: one per gang name, one per task without a gang; in order of first arrival."""
    missing = [task.name for task in tasks if task.creation is None or task.deletion is None]
    if missing:
        raise ValueError(f"the replay needs creation_time and deletion_time for every task; {len(missing)} lack them "
                         f"(first: {missing[0]!r}); this pod list suits the fill experiment instead")
    groups: dict[str, list[Task]] = {}
    for task in tasks:
        groups.setdefault(task.gang or f"\0{task.name}", []).append(task)
    return sorted(groups.values(), key=lambda members: min(member.creation for member in members))


def speedup_for(tasks: Sequence[Task], capacity_gpu_milli: int, offered_load: float) -> float:
    """The arrival-time compression at which the tasks' GPU-seconds, spread over their (compressed)
    arrival window, come to ``offered_load`` of the GPU capacity. Long-running pods outlive the window,
    so the cluster fills up over the run; the utilization curve shows it."""
    if offered_load <= 0:
        raise ValueError(f"offered load must be positive (a share of GPU capacity), got {offered_load}")
    jobs_of(tasks)
    span = max(1, max(task.creation for task in tasks) - min(task.creation for task in tasks))
    gpu_seconds = sum(task.total_gpu_milli * duration(task) for task in tasks)
    return offered_load * capacity_gpu_milli * span / max(1, gpu_seconds)


def replay(nodes: Sequence[NodeSpec], tasks: Sequence[Task], policy: Policy, arrival_speedup: float = 1.0,
           samples: int = 200) -> ReplayResult:
    """Run the pod list's arrivals and departures through ``policy`` on a cluster of ``nodes``."""
    if arrival_speedup <= 0:
        raise ValueError(f"arrival_speedup must be positive, got {arrival_speedup}")
    cluster = Cluster(nodes)
    jobs = jobs_of(tasks)
    if not jobs:
        raise ValueError("the pod list has no tasks to replay")
    capacity = cluster.total_gpu_milli
    events: list[tuple[float, int, int, object]] = []
    order = count()
    for members in jobs:
        arrival = min(member.creation for member in members) / arrival_speedup
        heapq.heappush(events, (arrival, ARRIVE, next(order), members))
    result = ReplayResult(policy.name, capacity / 1000, 0.0, 0.0)
    last_arrival = max(event[0] for event in events)
    waiting: list[tuple[float, list[Task]]] = []
    times, allocated = [], []
    first = last = events[0][0]
    gpu_milli_seconds = 0.0

    def start(members: list[Task], now: float, arrived: float) -> bool:
        placements = place_gang(cluster, policy, members)
        if placements is None:
            return False
        result.queueing_delays.append(float(now - arrived))
        for placement in placements:
            heapq.heappush(events, (now + duration(placement.task), DEPART, next(order), placement))
        return True

    while events:
        now, kind, _, payload = heapq.heappop(events)
        if last < last_arrival:
            gpu_milli_seconds += cluster.allocated_gpu_milli * (min(now, last_arrival) - last)
        last = now
        if kind == DEPART:
            assert isinstance(payload, Placement)
            cluster.release(payload)
            if waiting:
                retry = may_fit(cluster, payload.node, [members for _, members in waiting])
                still_waiting = []
                for again, (arrived, members) in zip(retry, waiting, strict=True):
                    if not (again and start(members, now, arrived)):
                        still_waiting.append((arrived, members))
                waiting = still_waiting
        else:
            members = payload
            try:
                for member in members:
                    cluster.check_placeable(member)
            except Unplaceable as error:
                result.never_fit.append(Rejected(members[0].gang or members[0].name, str(error)))
            else:
                if not start(members, now, now):
                    waiting.append((now, members))
        times.append(now)
        allocated.append(cluster.allocated_gpu_milli)
    cluster.check_invariants()
    result.never_started = [members[0].gang or members[0].name for _, members in waiting]
    result.span_seconds = float(last_arrival - first)
    result.gpu_hour_utilization_pct = 100 * gpu_milli_seconds / (capacity * max(1.0, last_arrival - first))
    grid = np.linspace(first, last_arrival, samples)
    at = np.searchsorted(np.array(times), grid, side="right") - 1
    result.utilization_time_s = [float(t - first) for t in grid]
    result.utilization_pct = [100 * allocated[max(0, i)] / capacity for i in at]
    return result
