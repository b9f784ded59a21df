"""Gang placement for multi-pod jobs: all members or none, on one node when one can hold them all.

A job of whole-GPU (or CPU-only) members of one GPU-model constraint is first offered to the
policy as one combined task, so it lands on a single node (the NVLink case) where one fits; otherwise
members are placed one by one and, if any cannot be placed, everything placed so far is released.
A task of the trace that asks for several GPUs is already a one-node request: a gang of one.
"""

from __future__ import annotations

from collections.abc import Sequence

from ai_system.resources.cluster import MILLI, Cluster, Placement, Task
from ai_system.resources.policies import Policy


def combined(members: Sequence[Task]) -> Task | None:
    """The gang as one request when it can be one: whole GPUs or none, and one set of allowed models."""
    if any(0 < member.gpu_milli < MILLI for member in members) or len({m.gpu_models for m in members}) != 1:
        return None
    gpus = sum(member.num_gpu for member in members)
    return Task(name=members[0].gang or members[0].name, cpu_milli=sum(m.cpu_milli for m in members),
                memory_mib=sum(m.memory_mib for m in members), num_gpu=gpus, gpu_milli=MILLI if gpus else 0,
                gpu_models=members[0].gpu_models)


def place_gang(cluster: Cluster, policy: Policy, members: Sequence[Task]) -> list[Placement] | None:
    """Allocate every member (one node preferred) and return the placements, or allocate nothing."""
    if not members:
        raise ValueError("a gang needs at least one member, got none")
    whole = combined(members) if len(members) > 1 else None
    together = policy.choose(cluster, whole) if whole is not None else None
    if together is not None:
        slots = list(together.gpus)
        placements = []
        for member in members:
            placements.append(Placement(member, together.node, tuple(slots[:member.num_gpu])))
            slots = slots[member.num_gpu:]
        for placement in placements:
            cluster.allocate(placement)
        return placements
    placed: list[Placement] = []
    for member in members:
        placement = policy.choose(cluster, member)
        if placement is None:
            for done in reversed(placed):
                cluster.release(done)
            return None
        cluster.allocate(placement)
        placed.append(placement)
    return placed
