"""The results plots: each shows what its figure is judged against, and draws one run per line.

A reference is whatever the metric declares: its goal (a dashed red line: an SLO, a target), 100 %
of a measured peak for a utilization, parity (1×) for a ratio against a peer, or the peer's own
curve for a figure in the peer's unit. Every line is labelled with the hardware and the date of
the run it comes from; history plots are points per run with the min–max of repeats as error
bars, never lines joining different runs.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ai_system.bench.metrics import RATIO_UNITS, Metric  # noqa: E402
from ai_system.report.format import format_value, goal_text, params_label  # noqa: E402
from ai_system.report.load import Row, Run  # noqa: E402

GOAL_STYLE = {"color": "tab:red", "linestyle": "--", "linewidth": 1.2}
LIMIT_STYLE = {"color": "black", "linestyle": ":", "linewidth": 1.2}


def run_label(run: Run) -> str:
    return f"{run.hardware_slug}, {run.date}"


def _line_labels(rows: list[Row], skip: str | None = None) -> list[str]:
    """Run (hardware, date) plus only the parameters that tell the lines apart."""
    keys = list(dict.fromkeys(key for row in rows for key in row.metric.params if key != skip))
    varying = [key for key in keys if len({str(row.metric.params.get(key)) for row in rows}) > 1]
    labels = []
    for row in rows:
        shown = params_label({key: row.metric.params[key] for key in varying if key in row.metric.params})
        labels.append(run_label(row.run) + ("" if shown == "—" else f" · {shown}"))
    return labels


def _errors(metrics: list[Metric]) -> list[list[float]] | None:
    """Error bars from the spread of repeated figures (min below, max above); None when none was repeated."""
    if all(metric.spread is None for metric in metrics):
        return None
    return [[metric.value - metric.spread.min if metric.spread else 0.0 for metric in metrics],
            [metric.spread.max - metric.value if metric.spread else 0.0 for metric in metrics]]


def draw_references(ax: plt.Axes, metrics: list[Metric]) -> bool:
    """Goal lines and the limit a ratio is read against; whether anything was drawn."""
    drawn = False
    for goal_metric in {metric.goal: metric for metric in metrics if metric.goal is not None}.values():
        ax.axhline(goal_metric.goal, label=f"goal {goal_text(goal_metric)}", **GOAL_STYLE)
        drawn = True
    ratio_baselines = {metric.baseline.name: metric for metric in metrics
                       if metric.baseline is not None and metric.baseline.unit != metric.unit}
    for name, metric in ratio_baselines.items():
        parity = RATIO_UNITS[metric.unit]
        text = (f"100% of {name}" if metric.baseline.kind == "peak"
                else f"{format_value(parity)} {metric.unit}: equal to {name}")
        ax.axhline(parity, label=text, **LIMIT_STYLE)
        drawn = True
    return drawn


def _title(title: str, has_reference: bool) -> str:
    return title if has_reference else f"{title} (no reference declared)"


def _axes_style(ax: plt.Axes, values: list[float]) -> None:
    """Grid, a log scale when values span two decades (so an SLO line stays visible under overload),
    and the legend under the axes, so long run labels never cover the data or squeeze the plot."""
    positive = [value for value in values if value > 0]
    if len(positive) == len(values) and positive and max(positive) / min(positive) >= 100:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2, frameon=False)


def _save(fig: plt.Figure, path: Path) -> None:
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def _finish(fig: plt.Figure, ax: plt.Axes, title: str, has_reference: bool, path: Path) -> None:
    ax.set_title(_title(title, has_reference), fontsize=10)
    _axes_style(ax, [value for line in ax.get_lines() for value in line.get_ydata()])
    _save(fig, path)


def plot_vs_x(name: str, rows: list[Row], path: Path) -> None:
    """Value against the metric's ``x`` parameter, one line per run and parameter set.

    A baseline in the figure's own unit is drawn as a dashed line of the same colour.
    """
    x_name = rows[0].metric.x
    lines: dict[str, list[Row]] = defaultdict(list)
    for row, label in zip(rows, _line_labels(rows, x_name), strict=True):
        lines[label].append(row)
    fig, ax = plt.subplots(figsize=(8, 4))
    has_reference = False
    for label, line_rows in sorted(lines.items()):
        line_rows.sort(key=lambda row: row.metric.params[x_name])
        xs = [row.metric.params[x_name] for row in line_rows]
        drawn = ax.errorbar(xs, [row.metric.value for row in line_rows],
                            yerr=_errors([row.metric for row in line_rows]), marker="o", capsize=3, label=label)
        same_unit = [row for row in line_rows if row.metric.baseline and row.metric.baseline.unit == row.metric.unit]
        if same_unit:
            ax.plot([row.metric.params[x_name] for row in same_unit], [row.metric.baseline.value for row in same_unit],
                    linestyle="--", marker="x", color=drawn.lines[0].get_color(),
                    label=f"{label}: {same_unit[0].metric.baseline.name}")
            has_reference = True
    has_reference |= draw_references(ax, [row.metric for row in rows])
    xs_all = [row.metric.params[x_name] for row in rows]
    if min(xs_all) > 0 and max(xs_all) / min(xs_all) >= 100:
        ax.set_xscale("log", base=2)
    ax.set_xlabel(x_name.replace("_", " "))
    ax.set_ylabel(rows[0].metric.unit)
    _finish(fig, ax, name, has_reference, path)


def is_scatter(xs: list[float]) -> bool:
    """A series whose x values are not in order is a scatter of points, not a line."""
    return any(later < earlier for earlier, later in zip(xs, xs[1:], strict=False))


def same_quantity(x_name: str, y_name: str) -> bool:
    """``published_tokens_per_s`` against ``predicted_tokens_per_s``: one quantity, two sources."""
    return x_name.partition("_")[2] == y_name.partition("_")[2] != ""


def plot_curve(name: str, rows: list[Row], path: Path) -> None:
    """A metric's own series (a loss per step, a rate per size), one panel per y quantity.

    A series with unordered x is drawn as points; one quantity against another source of the same
    quantity (predicted against measured) gets the line y = x, where the two agree.
    """
    x_name, *y_names = rows[0].metric.curve
    fig, axes = plt.subplots(1, len(y_names), figsize=(8 * len(y_names), 4), squeeze=False)
    has_reference = False
    for ax, y_name in zip(axes[0], y_names, strict=True):
        xs_all = []
        for row, label in zip(rows, _line_labels(rows), strict=True):
            xs = row.metric.curve[x_name]
            xs_all += xs
            if is_scatter(xs):
                ax.plot(xs, row.metric.curve[y_name], linestyle="none", marker="o", label=label)
            else:
                ax.plot(xs, row.metric.curve[y_name], marker="." if len(xs) < 20 else None, label=label)
        if y_name == rows[0].metric.unit or len(y_names) == 1:
            has_reference |= draw_references(ax, [row.metric for row in rows])
        if is_scatter(xs_all) and same_quantity(x_name, y_name):
            ax.plot([min(xs_all), max(xs_all)], [min(xs_all), max(xs_all)], label=f"{y_name.partition('_')[0]} "
                    f"= {x_name.partition('_')[0]}", **LIMIT_STYLE)
            has_reference = True
        if min(xs_all) > 0 and max(xs_all) / min(xs_all) >= 100:
            ax.set_xscale("log")
        ax.set_xlabel(x_name.replace("_", " "))
        ax.set_ylabel(y_name.replace("_", " "))
        _axes_style(ax, [value for line in ax.get_lines() for value in line.get_ydata()])
    fig.suptitle(_title(name, has_reference), fontsize=10)
    _save(fig, path)


def plot_history(name: str, rows: list[Row], path: Path) -> None:
    """One point per run and figure, oldest to newest, with the min–max of its repeats; no lines."""
    runs = sorted({row.run for row in rows}, key=lambda run: run.datetime)
    position = {run: index for index, run in enumerate(runs)}
    series: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        series[f"{row.run.hardware_slug} · {params_label(row.metric.params)}"].append(row)
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.3
    for offset, (label, series_rows) in enumerate(sorted(series.items())):
        shift = (offset - (len(series) - 1) / 2) * width / max(len(series), 1)
        ax.errorbar([position[row.run] + shift for row in series_rows], [row.metric.value for row in series_rows],
                    yerr=_errors([row.metric for row in series_rows]), linestyle="none", marker="o", capsize=3,
                    label=label)
    has_reference = draw_references(ax, [row.metric for row in rows])
    ax.set_xticks(range(len(runs)), [f"{run.date}\n{run.profile}\n{run.short_commit}" for run in runs], fontsize=7)
    ax.set_xlim(-0.5, len(runs) - 0.5)
    ax.set_ylabel(rows[0].metric.unit)
    _finish(fig, ax, f"{name}: every run", has_reference, path)
