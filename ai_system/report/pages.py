"""Write the results pages: the seed's Performance table, then one page per area with plots.

Pages are Markdown for MkDocs; plots are PNGs beside them. Output depends only on the results
files, so the same ``results/`` always gives the same pages.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ai_system.bench.metrics import AREAS, SEED_PERFORMANCE, Metric  # noqa: E402
from ai_system.report.load import Row, Skipped, newest_per_hardware  # noqa: E402

IMAGE_DIR = "img"
NOT_MEASURED = "not yet measured"


def format_value(value: float) -> str:
    return f"{value:.4g}"


def format_params(params: dict) -> str:
    return ", ".join(f"{key}={value}" for key, value in sorted(params.items())) or "—"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return lines


def seed_table_rows(rows: list[Row]) -> list[list[str]]:
    """The seed's Performance table, one line per newest figure that speaks to a row.

    A seed row nothing speaks to yet keeps one line that says so.
    """
    newest = newest_per_hardware(rows)
    lines = []
    for key, seed in SEED_PERFORMANCE.items():
        matching = sorted((row for row in newest if row.metric.seed_row == key),
                          key=lambda row: (row.metric.kind, row.run.hardware_slug, row.metric.name))
        if not matching:
            lines.append([seed.metric, seed.target, NOT_MEASURED, seed.scale, "—", "—", "—", seed.seed_achieved])
        for row in matching:
            metric = row.metric
            lines.append([
                seed.metric, seed.target, f"{format_value(metric.value)} {metric.unit}", metric.scale,
                row.run.hardware_label, metric.kind, f"[{AREAS[metric.area]}]({metric.area}.md)",
                seed.seed_achieved,
            ])
    return lines


def overview_page(rows: list[Row]) -> str:
    lines = [
        "# Results",
        "",
        "Every figure on these pages is read from a results file in `results/` by `ai-system report`; "
        "nothing is typed in by hand. **measured** figures ran on the hardware named beside them; "
        "**projected** figures name the model that produced them and the measured inputs it used "
        "on the page their evidence link leads to. "
        "The seed README's own claims are kept in the last column for comparison, not as results.",
        "",
        "## The seed's performance table",
        "",
    ]
    lines += _table(["Metric", "Target", "Achieved", "Scale", "Hardware", "Kind", "Evidence", "Seed claim"],
                    seed_table_rows(rows))
    runs: dict[str, list] = defaultdict(list)
    for row in rows:
        runs[row.run.hardware_slug].append(row.run)
    peaks: dict[str, list[str]] = defaultdict(list)
    for row in sorted(newest_per_hardware(rows), key=lambda row: row.series_key):
        if row.metric.area == "hardware":
            peaks[row.run.hardware_slug].append(f"{row.metric.name} {format_value(row.metric.value)} {row.metric.unit}")
    lines += ["", "## Hardware measured", ""]
    if runs:
        hardware_rows = []
        for hardware_slug, hardware_runs in sorted(runs.items()):
            newest = hardware_runs[-1]
            hardware_rows.append([newest.hardware_label, "<br>".join(peaks[hardware_slug]) or NOT_MEASURED,
                                  str(len({run.path for run in hardware_runs})),
                                  newest.datetime[:19].replace("T", " "), newest.short_commit])
        lines += _table(["Hardware", "Measured peaks", "Runs", "Newest run (UTC)", "Commit"], hardware_rows)
    else:
        lines.append("No results yet: run `make bench` to measure this machine.")
    areas_with_rows = [area for area in AREAS if any(row.metric.area == area for row in rows)]
    lines += ["", "## By area", ""]
    lines += [f"- [{AREAS[area]}]({area}.md)" for area in areas_with_rows] or ["No area has results yet."]
    return "\n".join(lines) + "\n"


def _figure_label(row: Row, skip_param: str | None = None) -> str:
    params = {key: value for key, value in row.metric.params.items() if key != skip_param}
    return row.run.hardware_slug + (f" · {format_params(params)}" if params else "")


def _legend(ax: plt.Axes) -> None:
    """Beside the axes, so long series labels never cover the data."""
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)


def _save(fig: plt.Figure, path: Path) -> None:
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def plot_vs_x(name: str, rows: list[Row], path: Path) -> None:
    """One line per hardware and parameter set, value against the metric's ``x`` parameter."""
    x_name = rows[0].metric.x
    lines: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for row in rows:
        lines[_figure_label(row, x_name)].append((row.metric.params[x_name], row.metric.value))
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, points in sorted(lines.items()):
        xs, ys = zip(*sorted(points), strict=True)
        ax.plot(xs, ys, marker="o", label=label)
    xs_all = [x for points in lines.values() for x, _ in points]
    if min(xs_all) > 0 and max(xs_all) / min(xs_all) >= 100:
        ax.set_xscale("log", base=2)
    ax.set_xlabel(x_name)
    ax.set_ylabel(rows[0].metric.unit)
    ax.set_title(name)
    ax.grid(True, alpha=0.3)
    _legend(ax)
    _save(fig, path)


def plot_curve(name: str, rows: list[Row], path: Path) -> None:
    """A metric's own series (e.g. loss per step), one panel per y quantity."""
    x_name, *y_names = rows[0].metric.curve
    fig, axes = plt.subplots(1, len(y_names), figsize=(6 * len(y_names), 4), squeeze=False)
    for ax, y_name in zip(axes[0], y_names, strict=True):
        for row in rows:
            ax.plot(row.metric.curve[x_name], row.metric.curve[y_name], label=_figure_label(row))
        ax.set_xlabel(x_name)
        ax.set_ylabel(y_name)
        ax.grid(True, alpha=0.3)
        _legend(ax)
    fig.suptitle(name)
    _save(fig, path)


def plot_history(name: str, rows: list[Row], path: Path) -> None:
    """Value per run, oldest to newest, so a regression across commits shows as a step."""
    runs = sorted({(row.run.datetime, row.run.short_commit) for row in rows})
    position = {run: index for index, run in enumerate(runs)}
    lines: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for row in rows:
        lines[_figure_label(row)].append((position[(row.run.datetime, row.run.short_commit)], row.metric.value))
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, points in sorted(lines.items()):
        xs, ys = zip(*sorted(points), strict=True)
        ax.plot(xs, ys, marker="o", label=label)
    ax.set_xticks(range(len(runs)), [f"{when[:10]}\n{commit}" for when, commit in runs], fontsize=7)
    ax.set_ylabel(rows[0].metric.unit)
    ax.set_title(f"{name}: history")
    ax.grid(True, alpha=0.3)
    _legend(ax)
    _save(fig, path)


def area_page(area: str, rows: list[Row], skipped: list[Skipped], image_dir: Path) -> str:
    """The page for one area; writes its plots into ``image_dir``."""
    newest = newest_per_hardware(rows)
    lines = [
        f"# {AREAS[area]} results",
        "",
        "Newest result per hardware, generated by `ai-system report` from `results/`; "
        "see the [overview](index.md) for how figures are labelled.",
    ]
    by_hardware: dict[str, list[Row]] = defaultdict(list)
    for row in newest:
        by_hardware[row.run.hardware_slug].append(row)
    for hardware_slug in sorted(by_hardware):
        hardware_rows = sorted(by_hardware[hardware_slug], key=lambda row: row.series_key)
        newest_run = max((row.run for row in hardware_rows), key=lambda run: run.datetime)
        lines += ["", f"## {newest_run.hardware_label}", "",
                  f"Newest run {newest_run.datetime[:19].replace('T', ' ')} UTC, commit "
                  f"`{newest_run.short_commit}`, profile `{newest_run.profile}`.", ""]
        lines += _table(
            ["Metric", "Parameters", "Value", "Unit", "Better", "Scale", "Kind", "Run"],
            [[row.metric.name, format_params(row.metric.params), format_value(row.metric.value), row.metric.unit,
              row.metric.better, row.metric.scale, row.metric.kind, row.run.short_commit] for row in hardware_rows],
        )
        notes = list(dict.fromkeys(_note(row.metric) for row in hardware_rows
                                   if row.metric.description or row.metric.projection))
        if notes:
            lines += ["", *notes]
        missing = sorted({(skip.test, skip.reason) for skip in skipped
                          if skip.area == area and skip.run.hardware_slug == hardware_slug})
        if missing:
            lines += ["", "Not yet measured on this hardware:", ""]
            lines += [f"- `{test}`: {reason}" for test, reason in missing]
    lines += _plots(area, newest, rows, image_dir)
    return "\n".join(lines) + "\n"


def _note(metric: Metric) -> str:
    """One bullet saying what a figure is; figures that differ only in parameters share it."""
    text = f"- `{metric.name}`: {metric.description}".rstrip(": ")
    if metric.projection is not None:
        inputs = ", ".join(f"{key}={value}" for key, value in metric.projection.inputs.items())
        text += f" — projected by *{metric.projection.model}* from {inputs}"
    return text


def _plots(area: str, newest: list[Row], rows: list[Row], image_dir: Path) -> list[str]:
    lines: list[str] = []
    by_name: dict[str, list[Row]] = defaultdict(list)
    for row in newest:
        by_name[row.metric.name].append(row)
    for name, name_rows in sorted(by_name.items()):
        if name_rows[0].metric.x and len(name_rows) > 1:
            file = f"{area}-{slug(name)}.png"
            plot_vs_x(name, name_rows, image_dir / file)
            lines += ["", f"![{name}]({IMAGE_DIR}/{file})"]
        if name_rows[0].metric.curve:
            file = f"{area}-{slug(name)}-curve.png"
            plot_curve(name, name_rows, image_dir / file)
            lines += ["", f"![{name}]({IMAGE_DIR}/{file})"]
    series: dict[tuple[str, tuple[str, str]], list[Row]] = defaultdict(list)
    for row in rows:
        series[(row.run.hardware_slug, row.series_key)].append(row)
    history: dict[str, list[Row]] = defaultdict(list)
    for series_rows in series.values():
        if len({row.run.path for row in series_rows}) > 1:
            history[series_rows[0].metric.name] += series_rows
    for name, name_rows in sorted(history.items()):
        file = f"{area}-{slug(name)}-history.png"
        plot_history(name, name_rows, image_dir / file)
        lines += ["", f"![{name} history]({IMAGE_DIR}/{file})"]
    if lines:
        lines = ["", "## Plots"] + lines
    return lines


def write_pages(rows: list[Row], skipped: list[Skipped], out_dir: Path) -> list[Path]:
    """Regenerate ``out_dir`` (``docs/results``): overview, one page per area with results, plots."""
    image_dir = out_dir / IMAGE_DIR
    image_dir.mkdir(parents=True, exist_ok=True)
    for stale in [*out_dir.glob("*.md"), *image_dir.glob("*.png")]:
        stale.unlink()
    written = [out_dir / "index.md"]
    written[0].write_text(overview_page(rows))
    for area in AREAS:
        area_rows = [row for row in rows if row.metric.area == area]
        if area_rows:
            path = out_dir / f"{area}.md"
            path.write_text(area_page(area, area_rows, skipped, image_dir))
            written.append(path)
    return written + sorted(image_dir.glob("*.png"))
