"""Reading trace files, bad input, and the no-over-commit invariant of the cluster model."""

from __future__ import annotations

import numpy as np
import pytest

from ai_system.resources.cluster import Cluster, NodeSpec, OvercommitError, Placement, Task, Unplaceable, carve_nodes
from ai_system.resources.policies import make_policy
from ai_system.resources.trace import TRACE_ENV, TraceError, load_nodes, load_tasks, trace_dir

POD_HEADER = "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,creation_time,deletion_time,scheduled_time\n"


def test_small_fixture_loads(small_nodes, small_tasks):
    assert len(small_nodes) == 24 and len(small_tasks) == 120
    assert {node.gpu_model for node in small_nodes} >= {"G2", "T4", ""}
    assert any(task.gpu_models == frozenset({"V100M16", "V100M32"}) for task in small_tasks)


def test_malformed_pod_rows_become_rejected_records_naming_the_field(tmp_path):
    path = tmp_path / "pods.csv"
    path.write_text(POD_HEADER + "ok,1000,1024,1,500,,0,10,0\n"
                    "negative,-5,1024,0,0,,0,10,0\n"
                    "text,abc,1024,0,0,,0,10,0\n"
                    "too-much,1000,1024,1,1500,,0,10,0\n"
                    "gpu-without-share,1000,1024,2,0,,0,10,0\n"
                    "backwards,1000,1024,0,0,,50,10,0\n"
                    "short,1000\n")
    tasks, rejected = load_tasks(path)
    assert [task.name for task in tasks] == ["ok"]
    reasons = {record.name: record.reason for record in rejected}
    assert "cpu_milli=-5, expected a non-negative integer" in reasons["negative"]
    assert "cpu_milli='abc'" in reasons["text"]
    assert "gpu_milli=1500" in reasons["too-much"]
    assert "num_gpu=2 with gpu_milli=0" in reasons["gpu-without-share"]
    assert "deletion_time=10 before creation_time=50" in reasons["backwards"]
    assert "num_gpu=''" in reasons["short"] and ":8:" in reasons["short"]


def test_node_list_errors_name_the_line_and_the_column(tmp_path):
    path = tmp_path / "nodes.csv"
    path.write_text("sn,cpu_milli,memory_mib,gpu,model\nn1,1000,1024,2,T4\nn2,1000,1024,2,\n")
    with pytest.raises(TraceError, match=r"nodes.csv:3: gpu=2 with an empty model"):
        load_nodes(path)
    (tmp_path / "columns.csv").write_text("sn,cpu\nn1,1\n")
    with pytest.raises(TraceError, match="missing column"):
        load_nodes(tmp_path / "columns.csv")
    with pytest.raises(TraceError, match="no such file"):
        load_nodes(tmp_path / "absent.csv")


def test_trace_dir_follows_the_environment_variable(tmp_path, monkeypatch):
    (tmp_path / "openb_node_list_all_node.csv").write_text("sn,cpu_milli,memory_mib,gpu,model\n")
    monkeypatch.setenv(TRACE_ENV, str(tmp_path))
    assert trace_dir() == tmp_path


def test_never_fitting_tasks_and_unknown_models_are_named(small_nodes):
    cluster = Cluster(small_nodes)
    with pytest.raises(Unplaceable, match="unknown GPU model"):
        cluster.check_placeable(Task("typo", 1000, 1024, 1, 1000, frozenset({"V100"})))
    with pytest.raises(Unplaceable, match="16 GPU"):
        cluster.check_placeable(Task("huge", 1000, 1024, 16, 1000))
    with pytest.raises(ValueError, match="gpu_milli=1200"):
        Task("bad", 1000, 1024, 1, 1200)


def test_allocation_never_overcommits(small_nodes, small_tasks):
    cluster = Cluster(small_nodes)
    policy = make_policy("best-fit")
    placements = []
    for task in small_tasks * 3:
        placement = policy.choose(cluster, task)
        if placement is not None:
            cluster.allocate(placement)
            placements.append(placement)
        cluster.check_invariants()
    assert (cluster.gpu_free >= 0).all() and (cluster.cpu_free >= 0).all()
    for placement in placements:
        cluster.release(placement)
    assert cluster.allocated_gpu_milli == 0 and (cluster.cpu_free == cluster.cpu_capacity).all()
    with pytest.raises(OvercommitError, match="not allocated there"):
        cluster.release(placements[0])


def test_a_placement_that_would_overcommit_is_refused():
    cluster = Cluster([NodeSpec("n", 8000, 4096, 1, "T4")])
    share = Task("share", 1000, 1024, 1, 600)
    cluster.allocate(Placement(share, 0, (0,)))
    with pytest.raises(OvercommitError, match="does not fit"):
        cluster.allocate(Placement(Task("again", 1000, 1024, 1, 600), 0, (0,)))
    with pytest.raises(OvercommitError, match="distinct GPUs"):
        cluster.allocate(Placement(Task("two", 1000, 1024, 2, 100), 0, (0, 0)))
    assert cluster.gpu_free.tolist() == [[400]]


def test_carving_keeps_the_shape_mix(small_nodes):
    carved = carve_nodes(small_nodes, 12, seed=1)
    assert len(carved) == 12 and len({n.name for n in carved}) == 12
    assert sum(n.gpu_model == "G2" for n in carved) in (2, 3)  # 12 × 5/24 = 2.5
    assert carved == carve_nodes(small_nodes, 12, seed=1)
    with pytest.raises(ValueError, match="cannot carve 30"):
        carve_nodes(small_nodes, 30)


def test_duplicate_node_names_are_refused():
    with pytest.raises(ValueError, match="'x' appears twice"):
        Cluster([NodeSpec("x", 1, 1), NodeSpec("x", 1, 1)])
    assert np.array_equal(Cluster([NodeSpec("y", 4000, 1024, 2, "T4")]).gpu_free, [[1000, 1000]])
