"""``make gpu-check`` without a GPU: it selects the right tests, stops at the first broken path, writes its file."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ai_system.ops.dispatch import OPS

REPO_ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("gpu_check", REPO_ROOT / "scripts" / "gpu_check.py")
gpu_check = sys.modules.setdefault("gpu_check", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(gpu_check)

TESTS = """
import time
import pytest

def test_first():
    pass

def test_skipped():
    pytest.skip("needs a CUDA GPU")

def test_after():
    pass

def test_slow():
    time.sleep(60)
"""


def collect(stages: list, tmp_path: Path) -> dict[str, list[str]]:
    """What each target of one session selects, as the check's plugin logs it (collection only)."""
    outcomes = tmp_path / "outcomes.jsonl"
    command = gpu_check.session_command(stages, tmp_path / "bench.json") + ["--collect-only", "-q"]
    env = {**gpu_check.os.environ, gpu_check.OUTCOMES_ENV: str(outcomes),
           "PYTHONPATH": f"{REPO_ROOT / 'scripts'}:{REPO_ROOT}"}
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return next(e["targets"] for e in gpu_check.read_outcomes(outcomes) if e["event"] == "collected")


@pytest.mark.slow
def test_the_benchmark_stages_select_only_gpu_benchmarks_in_the_promised_order(tmp_path):
    benchmark_stages = [stage for stage in gpu_check.STAGES if stage.session == "benchmarks"]
    selected = collect(benchmark_stages, tmp_path)
    assert all(selected[target] for stage in benchmark_stages for target in stage.targets)
    names = [stage.name for stage in gpu_check.STAGES]
    assert names == ["kernel parity", "memory-bound kernels", "attention vs SDPA", "serving", "training 1B eager",
                     "training 1B compiled"]
    kernels = [test for target in benchmark_stages[0].targets for test in selected[target]]
    for op in ("softmax", "rms_norm", "rope", "decode_attention"):
        assert any(f"test_{op}_bandwidth" in test for test in kernels), op


@pytest.mark.slow
def test_the_parity_stage_covers_every_op_in_half_precision(tmp_path):
    parity = [stage for stage in gpu_check.STAGES if stage.name == "kernel parity"]
    tests = [test for tests in collect(parity, tmp_path).values() for test in tests]
    assert not [test for test in tests if "float32" in test]
    assert any("float16" in test for test in tests)
    for op in OPS:
        assert any(f"::test_{op}" in test for test in tests), f"no parity test for {op}"


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the check runs for real: make gpu-check")
def test_without_a_gpu_it_fails_at_the_device_stage_and_writes_the_file(tmp_path):
    start = time.monotonic()
    passed, path, results = gpu_check.run_check(budget_s=60, results_dir=tmp_path)
    assert not passed and time.monotonic() - start < 30
    assert results[0].name == "device" and results[0].outcome == "failed" and "no CUDA device" in results[0].message
    assert all(result.outcome == "not run" for result in results[1:])
    summary = json.loads(path.read_text())["aisys"]["gpu_check"]
    assert path.name.endswith("-gpu-check.json") and summary["failed_stage"] == "device"


def test_a_skip_fails_its_stage_and_nothing_after_it_runs(tmp_path):
    (tmp_path / "test_paths.py").write_text(TESTS)
    path = str(tmp_path / "test_paths.py")
    stages = (gpu_check.Stage("first", "tests", (f"{path}::test_first",)),
              gpu_check.Stage("skipping", "tests", (f"{path}::test_skipped",)),
              gpu_check.Stage("after", "tests", (f"{path}::test_after",)),
              gpu_check.Stage("benchmarks", "benchmarks", ("benchmarks/test_serving_latency.py",)))
    passed, results_path, results = gpu_check.run_check(stages, budget_s=120, results_dir=tmp_path / "results",
                                                       require_cuda=False)
    outcomes = {result.name: result.outcome for result in results}
    assert not passed and outcomes == {"first": "passed", "skipping": "failed", "after": "not run",
                                       "benchmarks": "not run"}
    skipping = next(result for result in results if result.name == "skipping")
    assert "GPU check must run every path" in skipping.message and "needs a CUDA GPU" in skipping.message
    summary = json.loads(results_path.read_text())["aisys"]["gpu_check"]
    assert summary["failed_stage"] == "skipping"
    assert [stage["outcome"] for stage in summary["stages"]] == ["passed", "failed", "not run", "not run"]


def test_a_target_that_selects_nothing_fails_before_any_test_runs(tmp_path):
    (tmp_path / "test_paths.py").write_text(TESTS)
    stages = (gpu_check.Stage("renamed", "tests", (f"{tmp_path / 'test_paths.py'}::test_gone",
                                                   f"{tmp_path / 'test_paths.py'}::test_first")),)
    passed, _, results = gpu_check.run_check(stages, budget_s=120, results_dir=tmp_path, require_cuda=False)
    assert not passed and results[0].outcome == "failed" and "test_gone" in results[0].message
    assert results[0].tests == []


def test_the_budget_stops_a_stage_that_runs_too_long(tmp_path):
    (tmp_path / "test_paths.py").write_text(TESTS)
    stages = (gpu_check.Stage("slow", "tests", (f"{tmp_path / 'test_paths.py'}::test_slow",)),)
    start = time.monotonic()
    passed, _, results = gpu_check.run_check(stages, budget_s=5, results_dir=tmp_path, require_cuda=False)
    assert not passed and results[0].outcome == "timed out" and time.monotonic() - start < 30


def test_a_bad_budget_is_refused_in_one_line(capsys):
    assert gpu_check.main(["--budget-s", "0"]) == 2
    assert "--budget-s must be positive" in capsys.readouterr().err
