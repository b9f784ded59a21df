"""Run the real hardware-peak benchmarks in a subprocess and check the results file they write."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ai_system.bench.harness import REPO_ROOT, Profile, skipped_entry
from ai_system.bench.metrics import Metric


@pytest.fixture(scope="module")
def results_file(tmp_path_factory) -> Path:
    results = tmp_path_factory.mktemp("results")
    env = {**os.environ, "AISYS_RESULTS_DIR": str(results)}
    command = [sys.executable, "-m", "pytest", "benchmarks/test_hardware_peaks.py", "-q", "-p", "no:cacheprovider"]
    subprocess.run(command, cwd=REPO_ROOT, env=env, check=True, capture_output=True, timeout=300)
    files = list(results.glob("*/*-quick.json"))
    assert len(files) == 1, files
    return files[0]


def test_results_file_describes_hardware_software_and_commit(results_file):
    data = json.loads(results_file.read_text())
    meta = data["aisys"]
    assert meta["profile"] == "quick"
    assert results_file.parent.name == meta["hardware_slug"]
    hardware = meta["hardware"]
    for key in ("cpu_model", "cpu_cores", "ram_gib", "python", "torch", "triton", "gpu"):
        assert key in hardware
    assert hardware["cpu_cores"] >= 1 and hardware["ram_gib"] > 0
    assert set(data["commit_info"]) >= {"id", "dirty"}


def test_results_file_holds_valid_metrics_and_no_raw_timings(results_file):
    data = json.loads(results_file.read_text())
    metrics = {}
    for bench in data["benchmarks"]:
        assert "data" not in bench["stats"]
        for entry in bench["extra_info"]["metrics"]:
            metric = Metric.from_dict(entry)
            metrics[metric.name] = metric
    assert {"matmul_peak_cpu_float32", "copy_bandwidth_cpu"} <= set(metrics)
    for peak in (metrics["matmul_peak_cpu_float32"], metrics["copy_bandwidth_cpu"]):
        assert peak.question and peak.spread is not None and peak.spread.repeats >= 5
        assert peak.params["threads"] >= 1 and len(peak.curve[next(iter(peak.curve))]) >= 2


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="GPU benchmarks run on a GPU machine")
def test_gpu_benchmarks_are_recorded_as_skipped_with_reason(results_file):
    skipped = json.loads(results_file.read_text())["aisys"]["skipped"]
    assert skipped and all(entry["area"] == "hardware" and "CUDA" in entry["reason"] for entry in skipped)


def test_profile_picks_sizes_and_rejects_unknown():
    assert Profile("quick").pick(quick=1, full=2) == 1
    assert Profile("gpu").pick(quick=1, full=2) == 2
    assert Profile("gpu").pick(quick=1, full=2, gpu=3) == 3
    with pytest.raises(ValueError, match="'huge'"):
        Profile("huge")


def test_skipped_benchmark_area_comes_from_file_name():
    entry = skipped_entry("benchmarks/test_training_fsdp.py::test_x", "Skipped: no GPU")
    assert entry == {"test": "benchmarks/test_training_fsdp.py::test_x", "area": "training", "reason": "no GPU"}
    with pytest.raises(ValueError, match="test_<area>_"):
        skipped_entry("benchmarks/test_misc.py::test_x", "no GPU")
