"""Read every results file into flat metric rows, each carrying the run it came from.

A file the report does not understand (a case study's JSON, a half-written run, a metric that no
longer validates) is skipped with a one-line warning naming it, so one stray file never stops the
site from being built.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ai_system.bench.metrics import Metric
from ai_system.report.legacy import JUDGEMENT_FIELDS, upgrade


@dataclass(frozen=True)
class Run:
    """One results file: where and when a benchmark session ran."""

    path: Path
    hardware_slug: str
    hardware_label: str
    hardware: dict[str, Any] = field(compare=False)
    profile: str
    datetime: str
    commit: str
    dirty: bool

    @property
    def short_commit(self) -> str:
        return self.commit[:7] + ("+dirty" if self.dirty else "")

    @property
    def name(self) -> str:
        """The file's stem, e.g. ``20261127T091945Z-full``: what ``--compare`` accepts."""
        return self.path.stem

    @property
    def when(self) -> str:
        """``2026-11-27 09:34 UTC``."""
        return self.datetime[:16].replace("T", " ") + " UTC"

    @property
    def date(self) -> str:
        return self.datetime[:10]


@dataclass(frozen=True)
class Row:
    run: Run
    test: str
    metric: Metric

    @property
    def series_key(self) -> tuple[str, str]:
        """What makes two rows the same figure: metric name and its params."""
        return self.metric.name, json.dumps(self.metric.params, sort_keys=True)

    @property
    def test_function(self) -> str:
        """The benchmark function without its parametrization: ``test_lookup_embedded``."""
        return re.sub(r"\[.*\]$", "", self.test.split("::")[-1])


@dataclass(frozen=True)
class Skipped:
    run: Run
    test: str
    area: str
    reason: str


@dataclass
class Results:
    """Everything the report read, oldest run first, and a line for each thing it could not read."""

    rows: list[Row] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def runs(self) -> list[Run]:
        return sorted({row.run for row in self.rows} | {skip.run for skip in self.skipped},
                      key=lambda run: run.datetime)


class NotAResultsFile(ValueError):
    """The JSON is not an ai-system results file."""


def read_run(path: Path) -> tuple[Run, dict[str, Any]]:
    """The run a results file describes, and the file's content."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise NotAResultsFile(f"not readable JSON ({error})") from error
    if not isinstance(data, dict) or "aisys" not in data:
        raise NotAResultsFile("not an ai-system results file (no 'aisys' block)")
    meta = data["aisys"]
    commit = data.get("commit_info") or {}
    try:
        run = Run(path=path, hardware_slug=meta["hardware_slug"], hardware_label=meta["hardware_label"],
                  hardware=meta["hardware"], profile=meta["profile"], datetime=data["datetime"],
                  commit=str(commit.get("id") or "unknown"), dirty=bool(commit.get("dirty")))
    except (KeyError, TypeError) as error:
        raise NotAResultsFile(f"results file without {error}") from error
    return run, data


def load_run(path: Path) -> Results:
    """Rows and skips of one file; a metric that does not validate is left out with a warning."""
    run, data = read_run(path)
    results = Results()
    for bench in data.get("benchmarks", []):
        metrics: list[Metric] = []
        stored = bench.get("extra_info", {}).get("metrics", [])
        for entry in stored:
            try:
                metrics.append(Metric.from_dict(entry))
            except (TypeError, ValueError) as error:
                results.warnings.append(f"skipped a metric in {path}: {error}")
        if stored and not any(key in entry for entry in stored for key in JUDGEMENT_FIELDS):
            metrics, problems = upgrade(metrics, run.hardware)
            results.warnings += [f"skipped a metric in {path}: {problem}" for problem in problems]
        results.rows += [Row(run=run, test=bench["fullname"], metric=metric) for metric in metrics]
    for entry in data["aisys"].get("skipped", []):
        try:
            results.skipped.append(Skipped(run=run, **entry))
        except TypeError as error:
            results.warnings.append(f"skipped a skip record in {path}: {error}")
    return results


def load_results(results_dir: Path) -> Results:
    """All rows and skips under ``results_dir`` (``<hardware>/<run>.json``), oldest run first."""
    results = Results()
    for path in sorted(results_dir.glob("*/*.json")):
        try:
            file_results = load_run(path)
        except NotAResultsFile as error:
            results.warnings.append(f"skipped {path}: {error}")
            continue
        except (AttributeError, KeyError, TypeError, ValueError) as error:
            results.warnings.append(f"skipped {path}: malformed results file ({error!r})")
            continue
        results.rows += file_results.rows
        results.skipped += file_results.skipped
        results.warnings += file_results.warnings
    results.rows.sort(key=lambda row: row.run.datetime)
    results.skipped.sort(key=lambda skip: skip.run.datetime)
    return results


def newest_rows(rows: list[Row]) -> list[Row]:
    """The rows of the newest run of each benchmark test on each hardware (input: oldest first).

    Whole runs, never a mix: a test's figures all come from the one run that last ran it there.
    """
    newest_run: dict[tuple[str, str], Run] = {}
    for row in rows:
        newest_run[(row.run.hardware_slug, row.test)] = row.run
    return [row for row in rows if newest_run[(row.run.hardware_slug, row.test)] == row.run]
