"""FSDP on CPU overlaps its all-gathers with compute: each block's parameters are requested while the
block before it computes, and the run's trace (``--profile-dir``) shows it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ai_system.distributed.launch import run_torchrun
from ai_system.training.profiling import summarize_trace

LAYERS = 3
ARGS = ["--model", "debug", "--model-overrides", json.dumps({"n_layers": LAYERS}), "--dataset", "synthetic",
        "--seq-len", "64", "--batch-size", "4", "--steps", "6", "--layout", "dp=2", "--no-progress"]


@pytest.fixture(scope="module")
def trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("profile")
    run_torchrun(2, [*ARGS, "--profile-dir", str(directory)], timeout_s=300, log_path=directory / "out.txt")
    return directory / "rank0.json"


def starts(trace: Path, name: str) -> list[float]:
    events = json.loads(trace.read_text())["traceEvents"]
    return sorted(e["ts"] for e in events if e.get("ph") == "X" and e["name"] == name)


def test_each_all_gather_is_issued_before_the_previous_block_finishes(trace: Path):
    """In every profiled forward, block i+1's all-gather starts before block i's post-forward: while it computes."""
    for block in range(LAYERS - 1):
        gathers = starts(trace, f"FSDP::all_gather (layers.{block + 1})")
        entered = starts(trace, f"FSDP::pre_forward (layers.{block})")
        finished = starts(trace, f"FSDP::post_forward (layers.{block})")
        assert len(finished) == 3 and len(entered) == 3
        for begin, end in zip(entered, finished, strict=True):
            assert any(begin < issued < end for issued in gathers), (block, begin, end, gathers)


def test_the_trace_summary_sees_collectives_overlapping_compute(trace: Path):
    summary = summarize_trace(trace)
    assert len(summary.step_seconds) == 3
    assert summary.collective_seconds > 0 and summary.hidden_collective_seconds > 0
    assert summary.top_ops and all(seconds > 0 for _, seconds in summary.top_ops)
