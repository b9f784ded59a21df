"""The benchmark run: profiles, where results go, and what a results file holds.

``benchmarks/conftest.py`` wires these into pytest-benchmark; the logic lives here so it can be
read and tested on its own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from ai_system.bench.hardware import hardware_label, hardware_slug
from ai_system.bench.metrics import AREAS, Metric

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parents[2]
PROFILE_ENV = "AISYS_BENCH_PROFILE"
RESULTS_ENV = "AISYS_RESULTS_DIR"
PROFILES = ("quick", "full", "gpu")


@dataclass(frozen=True)
class Profile:
    """How big a run is. ``quick`` keeps the whole suite under five minutes on two CPU cores."""

    name: str

    def __post_init__(self) -> None:
        if self.name not in PROFILES:
            raise ValueError(f"benchmark profile must be one of {PROFILES}, got {self.name!r}")

    def pick(self, quick: T, full: T, gpu: T | None = None) -> T:
        """The size for this profile; ``gpu`` falls back to ``full`` when not given."""
        if self.name == "quick":
            return quick
        if self.name == "gpu" and gpu is not None:
            return gpu
        return full


def results_dir() -> Path:
    return Path(os.environ.get(RESULTS_ENV, REPO_ROOT / "results"))


def results_path(profile: Profile, info: dict[str, Any], now: datetime | None = None) -> Path:
    """``results/<hardware-slug>/<UTC time>-<profile>.json``: one file per run, never overwritten."""
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    return results_dir() / hardware_slug(info) / f"{stamp}-{profile.name}.json"


def skipped_entry(nodeid: str, reason: str) -> dict[str, str]:
    """A skipped benchmark, with its area taken from its file name (``test_<area>_*.py``)."""
    file_name = Path(nodeid.split("::", 1)[0]).stem
    area = file_name.removeprefix("test_").split("_", 1)[0]
    if area not in AREAS:
        raise ValueError(f"benchmark file {file_name!r} must be named test_<area>_*.py with area in {sorted(AREAS)}")
    return {"test": nodeid, "area": area, "reason": reason.removeprefix("Skipped: ")}


def add_run_metadata(output_json: dict[str, Any], profile: Profile, info: dict[str, Any],
                     skipped: list[dict[str, str]]) -> None:
    """Make a pytest-benchmark JSON self-describing and small.

    Adds the profile, the hardware and the benchmarks that skipped (and why), validates every
    recorded metric, and drops the raw per-round timings (``stats.data``) that pytest-benchmark
    puts in ``--benchmark-json`` output.
    """
    output_json["aisys"] = {
        "profile": profile.name,
        "hardware": info,
        "hardware_slug": hardware_slug(info),
        "hardware_label": hardware_label(info),
        "skipped": skipped,
    }
    for bench in output_json.get("benchmarks", []):
        bench.get("stats", {}).pop("data", None)
        for metric in bench.get("extra_info", {}).get("metrics", []):
            Metric.from_dict(metric)
