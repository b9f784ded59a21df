"""How figures read on the site: three significant figures, short labels, Markdown tables."""

from __future__ import annotations

import math
import re
from typing import Any

from ai_system.bench.metrics import Metric, Spread

COLLAPSE_ROWS = 12
STATUS_TEXT = {"met": "✓ met", "not-met": "✗ not met", "no-goal": "no goal", "not-measured": "not yet measured"}


def format_value(value: float) -> str:
    """Three significant figures, thousands separated; scientific outside 0.001 … 10⁶."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if value == 0 or not math.isfinite(value):
        return "0" if value == 0 else str(value)
    magnitude = math.floor(math.log10(abs(value)))
    if not -3 <= magnitude < 6:
        return f"{value:.2e}"
    rounded = round(value, 2 - magnitude)
    decimals = max(0, 2 - magnitude)
    return f"{rounded:,.{decimals}f}"


def format_param(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return format_value(value)
    return str(value)


def human(name: str) -> str:
    """``batch_per_rank`` → ``batch per rank``."""
    return name.replace("_", " ")


def params_label(params: dict[str, Any]) -> str:
    """``batching dynamic · qps 21``: short, in the benchmark's own order."""
    return " · ".join(f"{human(key)} {format_param(value)}" for key, value in params.items()) or "—"


def with_spread(value: float, spread: Spread | None) -> str:
    """``19.7`` or, for a repeated figure, ``19.7 (18.1–20.3)``: min–max over the repeats."""
    text = format_value(value)
    if spread is not None:
        text += f" ({format_value(spread.min)}–{format_value(spread.max)})"
    return text


def with_unit(number: str, unit: str) -> str:
    """``0.85×``, ``60.4%``, ``19.7 samples/s``: ratios read as ratios."""
    if unit in ("ratio", "×", "x"):
        return f"{number}×"
    return f"{number}%" if unit == "%" else f"{number} {unit}"


def figure(metric: Metric) -> str:
    """The value with its unit and spread: ``19.7 (18.1–20.3) samples/s``."""
    return with_unit(with_spread(metric.value, metric.spread), metric.unit)


def goal_text(metric: Metric) -> str:
    if metric.goal is None:
        return "—"
    return f"{'≥' if metric.better == 'higher' else '≤'} {with_unit(f'{metric.goal:g}', metric.unit)}"


def status_badge(status: str, detail: str = "", text: str | None = None) -> str:
    """A status cell the site styles (``results.css``) and the browser test reads; ``text`` replaces the
    status's own words, ``detail`` follows them."""
    text = (STATUS_TEXT[status] if text is None else text) + (f" {detail}" if detail else "")
    return f'<span class="aisys-status aisys-{status}">{text}</span>'


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|").replace("\n", " ") for cell in row) + " |"
              for row in rows]
    return lines


def collapsed(lines: list[str], title: str, rows: int) -> list[str]:
    """``lines`` as they are, or inside a closed details block when the table is long."""
    if rows <= COLLAPSE_ROWS:
        return lines
    return [f'??? note "{title} ({rows} rows)"', "", *("    " + line if line else "" for line in lines)]
