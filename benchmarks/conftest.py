"""pytest-benchmark wiring: profiles, hardware metadata, results files, and the ``record`` fixture.

Run ``pytest benchmarks/`` (quick profile) or ``pytest benchmarks/ --profile full``; each run writes
``results/<hardware-slug>/<time>-<profile>.json`` and ``ai-system report`` publishes it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
import torch

from ai_system.bench.hardware import hardware_info
from ai_system.bench.harness import PROFILE_ENV, PROFILES, Profile, add_run_metadata, results_path, skipped_entry
from ai_system.bench.metrics import Metric
from ai_system.bench.peaks import MeasuredPeaks

_SKIPPED: list[dict[str, str]] = []


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--profile", choices=PROFILES, default=os.environ.get(PROFILE_ENV, "quick"),
        help=f"benchmark sizes: quick (CI, default), full, or gpu (GPU benchmarks only); env {PROFILE_ENV}",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gpu: needs a CUDA device; the only benchmarks the gpu profile runs")
    config._aisys_profile = Profile(config.getoption("--profile"))
    config._aisys_hardware = hardware_info()
    if not config.getoption("benchmark_json", None) and not config.getoption("benchmark_disable", False):
        path = results_path(config._aisys_profile, config._aisys_hardware)
        path.parent.mkdir(parents=True, exist_ok=True)
        config.option.benchmark_json = path


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_profile = config._aisys_profile.name == "gpu"
    keep, drop = [], []
    for item in items:
        is_gpu = item.get_closest_marker("gpu") is not None
        (keep if is_gpu or not gpu_profile else drop).append(item)
        if is_gpu and not torch.cuda.is_available():
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU; torch.cuda.is_available() is False here"))
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Remember skipped benchmarks, so the site can say what was not measured here and why."""
    if report.skipped and report.when in ("setup", "call"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _SKIPPED.append(skipped_entry(report.nodeid, reason))


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict[str, Any]) -> None:
    machine_info["aisys_hardware"] = config._aisys_hardware


def pytest_benchmark_update_json(config: pytest.Config, benchmarks: list, output_json: dict[str, Any]) -> None:
    add_run_metadata(output_json, config._aisys_profile, config._aisys_hardware, _SKIPPED)


@pytest.fixture(scope="session")
def profile(request: pytest.FixtureRequest) -> Profile:
    return request.config._aisys_profile


@pytest.fixture(scope="session")
def peaks(profile: Profile) -> MeasuredPeaks:
    """Hardware peaks measured in this run; see ``benchmarks/test_hardware_peaks.py``.

    A benchmark that divides by a peak calls ``peaks.remeasure_matmul(device, dtype, threads=...)``
    (or ``remeasure_copy``) next to its workload, with the workload's thread count.
    """
    return MeasuredPeaks(matmul_n=profile.pick(quick=2048, full=4096, gpu=16384),
                         copy_bytes=profile.pick(quick=256 << 20, full=1 << 30, gpu=4 << 30))


@pytest.fixture
def record(benchmark: Any) -> Callable[..., Metric]:
    """Publish a figure from this benchmark: ``record(name=..., value=..., unit=..., ...)`` (see Metric)."""

    def _record(**fields: Any) -> Metric:
        metric = Metric(**fields)
        benchmark.extra_info.setdefault("metrics", []).append(metric.to_dict())
        return metric

    return _record
