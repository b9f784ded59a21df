"""Fixtures: a 24-node, 120-task cluster of our own in the trace's format (tests/resources/data)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ai_system.resources.cluster import NodeSpec, Task
from ai_system.resources.trace import load_nodes, load_tasks, trace_dir

DATA = Path(__file__).parent / "data"
SMALL_NODES = DATA / "openb_node_list_small.csv"
SMALL_PODS = DATA / "openb_pod_list_small.csv"


@pytest.fixture(scope="session")
def small_nodes() -> list[NodeSpec]:
    return load_nodes(SMALL_NODES)


@pytest.fixture(scope="session")
def small_tasks() -> list[Task]:
    tasks, rejected = load_tasks(SMALL_PODS)
    assert not rejected
    return tasks


@pytest.fixture(scope="session")
def real_trace() -> Path:
    found = trace_dir()
    if found is None:
        pytest.skip("the Alibaba GPU trace is not on this machine (set AISYS_ALIBABA_TRACE_DIR)")
    return found
