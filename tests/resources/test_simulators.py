"""The fill experiment and the event replay: deterministic, invariant-preserving, honest about failures."""

from __future__ import annotations

import pytest

from ai_system.resources.cluster import Cluster, NodeSpec, Task
from ai_system.resources.events import jobs_of, replay, speedup_for
from ai_system.resources.fill import arrivals, run_fill
from ai_system.resources.gang import place_gang
from ai_system.resources.policies import POLICIES, make_policy


def _fill(nodes, tasks, name, seed=3):
    return run_fill(nodes, tasks, lambda s: make_policy(name, tasks, s), seed=seed, target_load=1.3, check_every=10)


def test_fill_is_deterministic_for_a_seed_and_varies_across_seeds(small_nodes, small_tasks):
    first, again = _fill(small_nodes, small_tasks, "fgd"), _fill(small_nodes, small_tasks, "fgd")
    assert first.unallocated_pct == again.unallocated_pct and first.arrived_pct == again.arrived_pct
    other = _fill(small_nodes, small_tasks, "fgd", seed=4)
    assert other.unallocated_pct != first.unallocated_pct


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_every_policy_fills_the_cluster_and_reports_failures(name, small_nodes, small_tasks):
    curve = _fill(small_nodes, small_tasks, name)
    assert curve.arrived_pct[0] == 5.0 and curve.arrived_pct[-1] >= 125
    assert all(a + u == pytest.approx(100) for a, u in zip(curve.allocated_pct, curve.unallocated_pct, strict=True))
    assert curve.unallocated_pct[0] == pytest.approx(95, abs=1)
    assert curve.final_allocated_pct > 60
    assert curve.failed and all(record.reason for record in curve.failed)
    assert 0 <= min(curve.fragmented_pct) and max(curve.fragmented_pct) <= 100


def test_resampling_reaches_the_target_load(small_tasks):
    import numpy as np

    stream = arrivals(small_tasks, 100_000, 1.3, np.random.default_rng(0))
    requested = sum(task.total_gpu_milli for task in stream)
    assert 0.95 * 130_000 <= requested <= 130_000
    shrunk = arrivals(small_tasks, 10_000, 1.0, np.random.default_rng(0))
    assert sum(task.total_gpu_milli for task in shrunk) <= 10_000


def test_gang_is_all_or_nothing_and_prefers_one_node():
    nodes = [NodeSpec(f"n{i}", 64000, 262144, 4, "T4") for i in range(3)]
    cluster = Cluster(nodes)
    policy = make_policy("best-fit")
    workers = [Task(f"w{i}", 8000, 16384, 2, 1000, gang="job") for i in range(2)]
    placed = place_gang(cluster, policy, workers)
    assert placed and len({p.node for p in placed}) == 1 and sorted(g for p in placed for g in p.gpus) == [0, 1, 2, 3]
    wide = [Task(f"x{i}", 8000, 16384, 4, 1000, gang="wide") for i in range(2)]
    placed = place_gang(cluster, policy, wide)
    assert placed and len({p.node for p in placed}) == 2
    before = cluster.gpu_free.copy()
    assert place_gang(cluster, policy, [Task("y", 1000, 1024, 4, 1000, gang="g"),
                                        Task("z", 1000, 1024, 4, 1000, gang="g")]) is None
    assert (cluster.gpu_free == before).all()


def test_replay_reports_utilization_delays_and_never_fitting_jobs(small_nodes, small_tasks):
    huge = Task("huge", 1000, 1024, 16, 1000, creation=50, deletion=100)
    tasks = [*small_tasks, huge]
    capacity = Cluster(small_nodes).total_gpu_milli
    result = replay(small_nodes, tasks, make_policy("fgd-pack", small_tasks),
                    arrival_speedup=speedup_for(small_tasks, capacity, 8.0))
    assert [record.name for record in result.never_fit] == ["huge"] and "16 GPU" in result.never_fit[0].reason
    assert len(result.queueing_delays) + len(result.never_started) == len(small_tasks)
    assert 0 < result.gpu_hour_utilization_pct <= 100
    assert result.delay_percentile(99) >= result.delay_percentile(50) >= 0
    assert max(result.queueing_delays) > 0  # some jobs waited at this load
    again = replay(small_nodes, tasks, make_policy("fgd-pack", small_tasks),
                   arrival_speedup=speedup_for(small_tasks, capacity, 8.0))
    assert again.queueing_delays == result.queueing_delays


def test_replay_needs_times():
    with pytest.raises(ValueError, match="creation_time and deletion_time"):
        jobs_of([Task("t", 1000, 1024)])
