"""Vectorised policies choose exactly what the plain-Python reference chooses, state after state."""

from __future__ import annotations

import numpy as np
import pytest

from ai_system.resources.cluster import Cluster
from ai_system.resources.fragmentation import FragmentationModel, Workload, reference_node_fragmentation
from ai_system.resources.policies import POLICIES, make_policy
from ai_system.resources.reference import reference_choose

DETERMINISTIC = sorted(name for name in POLICIES if name != "random")


def _random_states(nodes, tasks, seed: int, steps: int):
    """Clusters loaded by random placements, and a random task to place on each."""
    rng = np.random.default_rng(seed)
    cluster = Cluster([nodes[i] for i in rng.permutation(len(nodes))])
    filler = make_policy("random", seed=seed)
    for _ in range(steps):
        task = tasks[int(rng.integers(len(tasks)))]
        placement = filler.choose(cluster, task)
        if placement is not None:
            cluster.allocate(placement)
        if rng.random() < 0.3:
            yield cluster, tasks[int(rng.integers(len(tasks)))]


@pytest.mark.parametrize("policy_name", DETERMINISTIC)
def test_vectorised_and_reference_pick_the_same_node_and_gpus(policy_name, small_nodes, small_tasks):
    workload = Workload.from_tasks(small_tasks, with_memory=policy_name == "fgd-pack")
    policy = make_policy(policy_name, small_tasks, seed=0)
    compared = 0
    for seed in range(3):
        for cluster, task in _random_states(small_nodes, small_tasks, seed, steps=90):
            ours = policy.choose(cluster, task)
            theirs = reference_choose(policy_name, cluster, task, workload)
            assert (ours is None) == (theirs is None), (policy_name, task)
            if ours is not None:
                assert (ours.node, ours.gpus) == (theirs.node, theirs.gpus), (policy_name, task, ours, theirs)
                compared += 1
    assert compared > 30


def test_vectorised_fragmentation_matches_the_definition(small_nodes, small_tasks):
    workload = Workload.from_tasks(small_tasks)
    for cluster, _ in _random_states(small_nodes, small_tasks, seed=5, steps=80):
        model = FragmentationModel(workload, cluster.models)
        vectorised = model.of(cluster.cpu_free, cluster.gpu_free, cluster.model_of)
        for node, spec in enumerate(cluster.nodes):
            expected = reference_node_fragmentation(workload, int(cluster.cpu_free[node]),
                                                    [int(v) for v in cluster.gpu_free[node]],
                                                    spec.gpu_model if spec.gpus else "")
            assert vectorised[node] == expected


@pytest.mark.parametrize("policy_name", ["best-fit", "gpu-clustering", "fgd-pack"])
def test_cached_scores_follow_releases(policy_name, small_nodes, small_tasks):
    """One policy object across placements and releases: the nodes a release changes are rescored too."""
    workload = Workload.from_tasks(small_tasks, with_memory=policy_name == "fgd-pack")
    policy = make_policy(policy_name, small_tasks, seed=0)
    rng = np.random.default_rng(11)
    cluster = Cluster(small_nodes)
    running, released = [], 0
    for _ in range(150):
        task = small_tasks[int(rng.integers(len(small_tasks)))]
        ours, theirs = policy.choose(cluster, task), reference_choose(policy_name, cluster, task, workload)
        assert (ours is None) == (theirs is None)
        if ours is not None:
            assert (ours.node, ours.gpus) == (theirs.node, theirs.gpus)
            cluster.allocate(ours)
            running.append(ours)
        if running and rng.random() < 0.4:
            cluster.release(running.pop(int(rng.integers(len(running)))))
            released += 1
    assert released > 20
