"""The 1B-user sizing arithmetic and the one-command case study."""

from __future__ import annotations

import json

import pytest

from ai_system.cli import main
from ai_system.recsys.redis_server import redis_available
from ai_system.recsys.sizing import GIB, SizingInputs, project


def test_sizing_takes_the_larger_of_memory_and_throughput():
    sizing = project(SizingInputs(bytes_per_row=200, rows_per_s_per_shard=100_000, users=1_000_000_000,
                                  items=0 + 1, requests_per_s=1_000_000, events_per_user_per_day=8.64,
                                  shard_memory_bytes=10 * GIB, memory_headroom=0.5, replicas_per_shard=1))
    assert sizing.rows == 1_000_000_001
    assert sizing.writes_per_s == pytest.approx(100_000)
    assert sizing.shards_for_memory == 38  # 200 GB over 5 GiB usable per shard, rounded up
    assert sizing.shards_for_throughput == 11  # 1.1M rows/s over 100k per shard
    assert sizing.shards == 38 and sizing.nodes == 76


def test_sizing_rejects_impossible_inputs():
    with pytest.raises(ValueError, match="bytes_per_row must be positive"):
        SizingInputs(bytes_per_row=0, rows_per_s_per_shard=1)
    with pytest.raises(ValueError, match="memory_headroom"):
        SizingInputs(bytes_per_row=1, rows_per_s_per_shard=1, memory_headroom=1.5)


@pytest.mark.parametrize("backend", ["embedded", "redis"])
def test_one_command_runs_the_case_study(tmp_path, backend, capsys):
    if backend == "redis" and not redis_available():
        pytest.skip("redis-server is not on PATH")
    args = ["recommender", "--steps", "30", "--out", str(tmp_path)] + (["--redis"] if backend == "redis" else [])
    assert main(args) == 0
    results = json.loads((tmp_path / f"recommender-{backend}.json").read_text())
    assert results["backend"] == backend
    assert 0 < results["recall_ratio"] and results["freshness_p99_ms"] > 0
    assert results["sizing_1B_users_projected"]["shards"] >= 1
    assert "freshness_p99_ms" in capsys.readouterr().out
