"""The engine comparison on a tiny corpus: every engine's sweep, the summary table, the fleet from load."""

from __future__ import annotations

import dataclasses

import pytest

from ai_system.search.casestudy import compare_engines, fleet_from_load, recall_table, summary_markdown
from ai_system.search.data import clustered_embeddings
from ai_system.serving.loadgen import LoadReport, RequestRecord

pytest.importorskip("faiss", reason="the comparison needs faiss-cpu (dev extra)")


def test_every_engine_is_swept_and_exact_search_is_exact():
    dataset = clustered_embeddings(600, 8, 4, n_queries=20, seed=0)
    runs, truth = compare_engines(dataset, nlist=4, k=5, repeats=2)
    labels = [run.label for run in runs]
    assert labels == ["ours flat", "faiss IndexFlat", "torch matmul + topk", "ours ivf_flat", "faiss IndexIVFFlat",
                      "ours ivf_pq", "faiss IndexIVFPQ"]
    assert truth.shape == (20, 5)
    for run in runs:
        assert run.points and all(len(point.qps_samples) == 2 for point in run.points)
        if run.family == "flat":
            assert run.best_recall == pytest.approx(1.0)
        else:
            assert [point.nprobe for point in run.points] == [1, 2, 4]
    ivf = next(run for run in runs if run.label == "ours ivf_flat")
    assert ivf.points[-1].recall == pytest.approx(1.0)
    table = recall_table(runs)
    assert table[0]["qps@0.99"] == runs[0].points[0].qps and table[0]["nprobe@0.99"] is None
    text = summary_markdown({"machine": "test", "threads": 1, "faiss": "x", "recall_qps": {"tiny": table}, "load": [],
                      "fleet": None})
    assert "| ours flat |" in text and "(nprobe None)" not in text and "No load level met" in text


def _report(offered: float, p99_s: float, failed: int = 0) -> LoadReport:
    records = [RequestRecord(0.01 * i, 0.01 * i + p99_s, None, 1, 200) for i in range(10)]
    return dataclasses.replace(LoadReport.from_records(records, offered, slo_s=0.05), failed=failed)


def test_fleet_comes_from_the_fastest_load_within_budget():
    fast_but_late, ok, failing = _report(400, 0.2), _report(100, 0.01), _report(200, 0.01, failed=1)
    plan = fleet_from_load([fast_but_late, ok, failing])
    assert plan is not None and plan.measured_qps == ok.throughput_rps
    assert fleet_from_load([fast_but_late]) is None
