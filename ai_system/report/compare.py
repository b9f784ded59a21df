"""Compare two runs figure by figure, with noise bands, so a regression shows before a merge.

A change counts only when it leaves the noise band: where both runs repeated a figure, the band is
their min–max spreads (a change is real when the ranges do not overlap); otherwise it is a relative
threshold, like asv's ``--factor`` (10 % by default; machines here are noisy).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ai_system.bench.metrics import Metric
from ai_system.report.format import params_label, with_spread
from ai_system.report.load import Results, Row, load_run

DEFAULT_THRESHOLD = 0.10
VERDICT_ORDER = {"worse": 0, "better": 1, "within noise": 2, "only in A": 3, "only in B": 4}


def find_run(spec: str, results_dir: Path) -> Path:
    """A results file from a path or a run name (``20261127T091945Z-full``, or a unique prefix of one)."""
    path = Path(spec)
    if path.is_file():
        return path
    candidates = sorted(results_dir.glob("*/*.json"))
    exact = [candidate for candidate in candidates if candidate.stem == spec]
    matches = exact or [candidate for candidate in candidates if candidate.stem.startswith(spec)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        known = ", ".join(candidate.stem for candidate in candidates[-5:]) or "none"
        raise ValueError(f"no run {spec!r} in {results_dir} (newest there: {known})")
    raise ValueError(f"run {spec!r} is ambiguous in {results_dir}: {', '.join(m.stem for m in matches)}")


def verdict(a: Metric, b: Metric, threshold: float) -> tuple[str, str]:
    """(verdict, band) for the change from ``a`` to ``b``."""
    if a.spread is not None and b.spread is not None:
        band = "spreads"
        overlap = a.spread.min <= b.spread.max and b.spread.min <= a.spread.max
        if overlap:
            return "within noise", band
    else:
        band = f"±{100 * threshold:.0f}%"
        scale = max(abs(a.value), abs(b.value))
        if scale == 0 or abs(b.value - a.value) <= threshold * scale:
            return "within noise", band
    improved = (b.value > a.value) == (a.better == "higher")
    return ("better" if improved else "worse"), band


def compare_runs(a: list[Row], b: list[Row], threshold: float = DEFAULT_THRESHOLD) -> pd.DataFrame:
    """One line per figure of either run: both values, the change and whether it is beyond noise."""
    first = {row.series_key: row.metric for row in a}
    second = {row.series_key: row.metric for row in b}
    lines = []
    for key in dict.fromkeys([*first, *second]):
        metric_a, metric_b = first.get(key), second.get(key)
        metric = metric_a or metric_b
        line = {"figure": f"{metric.name} · {params_label(metric.params)}", "unit": metric.unit,
                "A": with_spread(metric_a.value, metric_a.spread) if metric_a else "—",
                "B": with_spread(metric_b.value, metric_b.spread) if metric_b else "—", "change": "—", "band": "—"}
        if metric_a and metric_b:
            line["verdict"], line["band"] = verdict(metric_a, metric_b, threshold)
            if metric_a.value:
                line["change"] = f"{100 * (metric_b.value - metric_a.value) / abs(metric_a.value):+.1f}%"
        else:
            line["verdict"] = "only in A" if metric_a else "only in B"
        lines.append(line)
    frame = pd.DataFrame(lines, columns=["verdict", "change", "band", "A", "B", "unit", "figure"])
    return frame.sort_values("verdict", key=lambda column: column.map(VERDICT_ORDER), kind="stable")


def comparison_text(path_a: Path, path_b: Path, threshold: float = DEFAULT_THRESHOLD) -> str:
    """The printed comparison of two results files, worst news first, and a one-line summary."""
    run_a, run_b = load_run(path_a), load_run(path_b)
    frame = compare_runs(run_a.rows, run_b.rows, threshold)
    band = f"noise band: overlapping min–max spreads where both repeated a figure, else ±{100 * threshold:g}%"
    header = [f"A: {_describe(run_a, path_a)}", f"B: {_describe(run_b, path_b)}", band, ""]
    counts = frame["verdict"].value_counts()
    summary = ", ".join(f"{counts[name]} {name}" for name in VERDICT_ORDER if name in counts)
    body = _text_table(frame) if not frame.empty else "(no figures in either run)"
    warnings = [f"warning: {line}" for line in run_a.warnings + run_b.warnings]
    return "\n".join([*header, body, "", summary or "nothing to compare", *warnings]) + "\n"


def _text_table(frame: pd.DataFrame) -> str:
    """Left-aligned plain-text columns, for a terminal."""
    cells = [list(frame.columns), *frame.astype(str).to_numpy().tolist()]
    widths = [max(len(row[column]) for row in cells) for column in range(len(cells[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
                     for row in cells)


def _describe(results: Results, path: Path) -> str:
    runs = results.runs
    if not runs:
        return f"{path} (no figures)"
    run = runs[0]
    return f"{run.name} · {run.hardware_label} · {run.profile} · commit {run.short_commit}"
