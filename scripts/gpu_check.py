"""``make gpu-check``: every GPU path of the suite once, on one CUDA GPU, stopping at the first that breaks.

Stages run cheapest and most basic first, so a broken driver, Triton or kernel fails in seconds,
not after a training run:

1. device — a CUDA device is visible; torch, Triton and the GPU are named.
2. kernel parity — ``tests/ops`` parity tests of every op in fp16 and bf16 on the GPU.
3. memory-bound kernels — softmax, RMSNorm, RoPE and decode attention: GB/s over the copy
   bandwidth measured in the same run.
4. attention vs SDPA — the causal attention kernel's forward against ``scaled_dot_product_attention``.
5. serving — the engine's offline throughput on the GPU.
6. training — the 1B config in bf16, eager then compiled (the training benchmark, called as it is).

Every selected test must run and pass: a skip counts as a failure, because a check that skipped a
path did not check it. Stages 3–6 are the GPU benchmarks under ``--profile gpu`` (GPU-sized peaks)
in one pytest session. The results land in ``results/<hardware>/<time>-gpu-check.json``: the
benchmark figures in the format ``ai-system report`` reads, plus ``aisys.gpu_check`` with each
stage's tests, outcomes and seconds. The whole check must fit in ``--budget-s`` (8 minutes); a
stage still running then is stopped and named.

Run ``python scripts/gpu_check.py`` from the repository root. This file is also the pytest plugin
(``-p gpu_check``) that turns skips into failures and logs each test's outcome for the summary.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
OUTCOMES_ENV = "AISYS_GPU_CHECK_OUTCOMES"
BUDGET_S = 480.0
PLUGIN = "gpu_check"

Session = Literal["tests", "benchmarks"]


@dataclass(frozen=True)
class Stage:
    """A named group of pytest targets (paths or node ids) that must all pass.

    Consecutive stages of one ``session`` kind run in one pytest process; ``select`` is its ``-k``.
    """

    name: str
    session: Session
    targets: tuple[str, ...]
    select: str | None = None


KERNELS = "benchmarks/test_inference_kernels.py"
STAGES: tuple[Stage, ...] = (
    Stage("kernel parity", "tests", ("tests/ops/test_kernel_parity.py", "tests/ops/test_model_on_kernels.py"),
          select="not float32"),
    Stage("memory-bound kernels", "benchmarks", (
        f"{KERNELS}::test_softmax_bandwidth[8192]", f"{KERNELS}::test_rms_norm_bandwidth[8192]",
        f"{KERNELS}::test_rope_bandwidth[16384]", f"{KERNELS}::test_decode_attention_bandwidth[16384]")),
    Stage("attention vs SDPA", "benchmarks", (f"{KERNELS}::test_attention_prefill_throughput[4096]",)),
    Stage("serving", "benchmarks", ("benchmarks/test_serving_latency.py::test_serving_offline_throughput_gpu",)),
    Stage("training 1B eager", "benchmarks", ("benchmarks/test_training_throughput.py::test_training_1b_gpu[eager]",)),
    Stage("training 1B compiled", "benchmarks",
          ("benchmarks/test_training_throughput.py::test_training_1b_gpu[compile]",)),
)


@dataclass
class StageResult:
    name: str
    outcome: str = "not run"
    seconds: float = 0.0
    tests: list[dict[str, Any]] = field(default_factory=list)
    message: str = ""


# ---- the pytest plugin (loaded in the child pytest process with ``-p gpu_check``) ----------------

def _log(entry: dict[str, Any]) -> None:
    path = os.environ.get(OUTCOMES_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps(entry) + "\n")


def _matches(nodeid: str, target: str) -> bool:
    """Whether pytest's ``nodeid`` is, or lies under, ``target`` (both relative to the rootdir)."""
    return nodeid == target or nodeid.startswith((target + "::", target + "[", target.rstrip("/") + "/"))


def _as_nodeid(target: str, config: pytest.Config) -> str:
    """A command-line target as pytest names nodes: its path relative to the rootdir, then any ``::`` part."""
    path, sep, rest = target.partition("::")
    absolute = (config.invocation_params.dir / path).resolve()
    try:
        relative = absolute.relative_to(config.rootpath).as_posix()
    except ValueError:
        relative = path
    return relative + sep + rest


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    """Log which tests each target selected; every target must select one, so a renamed test cannot pass."""
    nodeids = [item.nodeid for item in session.items]
    selected = {target: [n for n in nodeids if _matches(n, _as_nodeid(target, session.config))]
                for target in session.config.args}
    _log({"event": "collected", "targets": selected})
    missing = [target for target, tests in selected.items() if not tests]
    if missing:
        message = f"gpu-check: no test selected by {', '.join(missing)} (renamed, or not marked gpu?)"
        _log({"event": "missing", "targets": missing, "message": message})
        raise pytest.UsageError(message)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    """A skipped test fails the check, with the skip's reason."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped, but the GPU check must run every path it selects: {reason}"


def _reason(report: pytest.TestReport) -> str:
    """The first error line of a failure (pytest's ``E`` lines), else its last line."""
    lines = report.longreprtext.strip().splitlines()
    errors = [line[1:].strip() for line in lines if line.startswith("E ")]
    return (errors[0] if errors else lines[-1] if lines else "failed")[:500]


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" or report.failed:
        message = "" if report.passed else _reason(report)
        _log({"event": "test", "test": report.nodeid, "when": report.when, "outcome": report.outcome,
              "seconds": round(report.duration, 3), "message": message})


# ---- the check ------------------------------------------------------------------------------------

def session_command(stages: list[Stage], benchmark_json: Path | None) -> list[str]:
    """One pytest invocation for consecutive stages of one session kind: fail fast, in the given order."""
    command = [sys.executable, "-m", "pytest", "-x", "-p", PLUGIN, "-p", "no:randomly", "-p", "no:cacheprovider",
               "-rfs", *[target for stage in stages for target in stage.targets]]
    selections = {stage.select for stage in stages}
    if len(selections) != 1:
        raise ValueError(f"stages {[s.name for s in stages]} run in one session and must share one -k selection")
    if (select := selections.pop()) is not None:
        command += ["-k", select]
    if stages[0].session == "benchmarks":
        if benchmark_json is None:
            raise ValueError("a benchmark session needs the path of its results JSON")
        command += ["--profile", "gpu", "--benchmark-json", str(benchmark_json)]
    return command


def sessions(stages: tuple[Stage, ...]) -> list[list[Stage]]:
    """Consecutive stages of the same session kind, grouped (each group is one pytest process)."""
    groups: list[list[Stage]] = []
    for stage in stages:
        if groups and groups[-1][0].session == stage.session and groups[-1][0].select == stage.select:
            groups[-1].append(stage)
        else:
            groups.append([stage])
    return groups


def read_outcomes(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def summarize(stages: list[Stage], entries: list[dict[str, Any]], results: dict[str, StageResult],
              timed_out: bool, exit_code: int) -> None:
    """Fill each stage's result from the plugin's log; a stage passes when every test it selected passed."""
    selected = next((entry["targets"] for entry in entries if entry["event"] == "collected"), {})
    missing = next((entry for entry in entries if entry["event"] == "missing"), None)
    stage_of = {test: stage.name for stage in stages for target in stage.targets for test in selected.get(target, [])}
    for entry in entries:
        if entry["event"] == "test" and entry["test"] in stage_of:
            result = results[stage_of[entry["test"]]]
            result.tests.append({key: entry[key] for key in ("test", "outcome", "seconds", "message")})
            result.seconds += entry["seconds"]
    for stage in stages:
        result = results[stage.name]
        planned = {test for test, name in stage_of.items() if name == stage.name}
        finished = {test["test"] for test in result.tests}
        failed = [test for test in result.tests if test["outcome"] == "failed"]
        if failed:
            result.outcome, result.message = "failed", f"{failed[0]['test']}: {failed[0]['message']}"
        elif missing is not None and set(stage.targets) & set(missing["targets"]):
            result.outcome, result.message = "failed", missing["message"]
        elif planned and planned <= finished:
            result.outcome = "passed"
    unfinished = next((results[s.name] for s in stages if results[s.name].outcome == "not run"), None)
    if unfinished is None or any(results[s.name].outcome == "failed" for s in stages):
        return
    if timed_out:
        unfinished.outcome, unfinished.message = "timed out", "stopped when the check's time budget ran out"
    elif exit_code:
        unfinished.outcome = "failed"
        unfinished.message = f"pytest exited with code {exit_code} before this stage's tests ran (see its output)"


def run_session(stages: list[Stage], benchmark_json: Path | None, deadline: float, workdir: Path,
                results: dict[str, StageResult]) -> bool:
    """Run one pytest process for these stages until the deadline; whether every stage passed."""
    outcomes = workdir / f"outcomes-{stages[0].name.replace(' ', '-')}.jsonl"
    env = {**os.environ, OUTCOMES_ENV: str(outcomes),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT / "scripts"), str(REPO_ROOT),
                                                       os.environ.get("PYTHONPATH")]))}
    command = session_command(stages, benchmark_json)
    print(f"gpu-check: {', '.join(stage.name for stage in stages)}: {' '.join(command[1:])}", flush=True)
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, start_new_session=True)
    timed_out = False
    try:
        exit_code = process.wait(timeout=max(deadline - time.monotonic(), 1.0))
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(process.pid, signal.SIGKILL)
        exit_code = process.wait()
    summarize(stages, read_outcomes(outcomes), results, timed_out, exit_code)
    return all(results[stage.name].outcome == "passed" for stage in stages)


def device_stage() -> StageResult:
    """A CUDA device is visible and named, with the torch and Triton this run uses."""
    import torch

    from ai_system.ops.dispatch import triton_import_error

    result = StageResult("device")
    start = time.monotonic()
    if not torch.cuda.is_available():
        result.outcome = "failed"
        result.message = (f"no CUDA device: torch {torch.__version__} (CUDA build {torch.version.cuda}) sees none; "
                          "install a CUDA torch into .venv and run on a GPU machine")
    elif (failure := triton_import_error()) is not None:
        result.outcome, result.message = "failed", f"triton does not import: {failure}"
    else:
        import triton

        result.outcome = "passed"
        major, minor = torch.cuda.get_device_capability()
        result.message = (f"{torch.cuda.get_device_name()} (capability {major}.{minor}), torch {torch.__version__}, "
                          f"CUDA {torch.version.cuda}, triton {triton.__version__}")
    result.seconds = round(time.monotonic() - start, 3)
    return result


def write_results(path: Path, benchmark_json: Path, results: list[StageResult], passed: bool,
                  budget_s: float, elapsed_s: float) -> None:
    """The benchmark session's results file with ``aisys.gpu_check`` added, or a file with the summary alone."""
    from ai_system.bench.hardware import hardware_info
    from ai_system.bench.harness import Profile, add_run_metadata

    if benchmark_json.exists():
        data = json.loads(benchmark_json.read_text(encoding="utf-8"))
    else:
        data = {"datetime": datetime.now(timezone.utc).isoformat(), "benchmarks": []}
        add_run_metadata(data, Profile("gpu"), hardware_info(), [])
    failed = next((result for result in results if result.outcome != "passed"), None)
    data["aisys"]["gpu_check"] = {
        "passed": passed, "budget_s": budget_s, "seconds": round(elapsed_s, 1),
        "failed_stage": None if failed is None else failed.name,
        "stages": [{"name": r.name, "outcome": r.outcome, "seconds": round(r.seconds, 1), "message": r.message,
                    "tests": r.tests} for r in results],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")


def results_file(results_dir: Path) -> Path:
    from ai_system.bench.hardware import hardware_info, hardware_slug

    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return results_dir / hardware_slug(hardware_info()) / f"{stamp}-gpu-check.json"


def run_check(stages: tuple[Stage, ...] = STAGES, budget_s: float = BUDGET_S, results_dir: Path | None = None,
              require_cuda: bool = True) -> tuple[bool, Path, list[StageResult]]:
    """Run the stages in order until one fails or the budget is spent; write and return the results file."""
    from ai_system.bench.harness import results_dir as default_results_dir

    start = time.monotonic()
    deadline = start + budget_s
    path = results_file(results_dir or default_results_dir())
    workdir = path.parent / f".{path.stem}"
    workdir.mkdir(parents=True, exist_ok=True)
    benchmark_json = workdir / "benchmarks.json"
    results = [device_stage()] if require_cuda else []
    if results:
        print(f"gpu-check: device: {results[0].outcome}: {results[0].message}", flush=True)
    by_name = {stage.name: StageResult(stage.name) for stage in stages}
    results += by_name.values()
    passed = all(result.outcome == "passed" for result in results if result.name == "device")
    for group in sessions(stages):
        if not passed:
            break
        if time.monotonic() >= deadline:
            by_name[group[0].name].outcome = "timed out"
            by_name[group[0].name].message = f"not started: the {budget_s:.0f} s budget was spent"
            passed = False
            break
        passed = run_session(group, benchmark_json if group[0].session == "benchmarks" else None, deadline,
                             workdir, by_name)
    write_results(path, benchmark_json, results, passed, budget_s, time.monotonic() - start)
    for leftover in workdir.iterdir():
        leftover.unlink()
    workdir.rmdir()
    return passed, path, results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget-s", type=float, default=BUDGET_S, help="time for the whole check (default 480)")
    parser.add_argument("--results-dir", type=Path, default=None, help="default: results/ (or $AISYS_RESULTS_DIR)")
    args = parser.parse_args(argv)
    if args.budget_s <= 0:
        print(f"gpu-check: --budget-s must be positive seconds, got {args.budget_s}", file=sys.stderr)
        return 2
    passed, path, results = run_check(budget_s=args.budget_s, results_dir=args.results_dir)
    for result in results:
        print(f"gpu-check: {result.name:<22} {result.outcome:<9} {result.seconds:7.1f} s  {result.message}")
    if passed:
        print(f"gpu-check: every GPU path passed; results in {path}")
        return 0
    failed = next(result for result in results if result.outcome != "passed")
    print(f"gpu-check: FAILED at {failed.name!r} ({failed.outcome}): {failed.message}; results in {path}",
          file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.path.insert(0, str(REPO_ROOT))
    sys.exit(main())
