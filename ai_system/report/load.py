"""Read every results file into flat metric rows, each carrying the run it came from."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ai_system.bench.metrics import Metric


@dataclass(frozen=True)
class Run:
    """One results file: where and when a benchmark session ran."""

    path: Path
    hardware_slug: str
    hardware_label: str
    hardware: dict[str, Any]
    profile: str
    datetime: str
    commit: str
    dirty: bool

    @property
    def short_commit(self) -> str:
        return self.commit[:7] + ("+dirty" if self.dirty else "")


@dataclass(frozen=True)
class Row:
    run: Run
    test: str
    metric: Metric

    @property
    def series_key(self) -> tuple[str, str]:
        """What makes two rows the same figure: metric name and its params."""
        return self.metric.name, json.dumps(self.metric.params, sort_keys=True)


@dataclass(frozen=True)
class Skipped:
    run: Run
    test: str
    area: str
    reason: str


def load_run(path: Path) -> tuple[list[Row], list[Skipped]]:
    data = json.loads(path.read_text())
    if "aisys" not in data:
        raise ValueError(f"{path} is not an ai-system results file: it has no 'aisys' block")
    meta = data["aisys"]
    commit = data.get("commit_info", {})
    run = Run(
        path=path,
        hardware_slug=meta["hardware_slug"],
        hardware_label=meta["hardware_label"],
        hardware=meta["hardware"],
        profile=meta["profile"],
        datetime=data["datetime"],
        commit=str(commit.get("id") or "unknown"),
        dirty=bool(commit.get("dirty")),
    )
    rows = [
        Row(run=run, test=bench["fullname"], metric=Metric.from_dict(metric))
        for bench in data.get("benchmarks", [])
        for metric in bench.get("extra_info", {}).get("metrics", [])
    ]
    skipped = [Skipped(run=run, **entry) for entry in meta.get("skipped", [])]
    return rows, skipped


def load_results(results_dir: Path) -> tuple[list[Row], list[Skipped]]:
    """All rows and skips under ``results_dir``, oldest run first."""
    rows: list[Row] = []
    skipped: list[Skipped] = []
    for path in sorted(results_dir.glob("*/*.json")):
        file_rows, file_skipped = load_run(path)
        rows += file_rows
        skipped += file_skipped
    rows.sort(key=lambda row: row.run.datetime)
    skipped.sort(key=lambda skip: skip.run.datetime)
    return rows, skipped


def newest_per_hardware(rows: list[Row]) -> list[Row]:
    """For each hardware and figure, the row from the newest run (input order is oldest first)."""
    newest: dict[tuple[str, tuple[str, str]], Row] = {}
    for row in rows:
        newest[(row.run.hardware_slug, row.series_key)] = row
    return list(newest.values())
