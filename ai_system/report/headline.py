"""The headline of a results page: one row per question, judged against its baseline and goal.

Figures answer a question when their metric declares it. Several figures can answer one question
(one per shard count, per layout): the row then shows the one furthest from its goal (without a
goal, the weakest in the metric's direction) and says how many met theirs, so a single weak case is
never hidden behind a strong one.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from ai_system.bench.metrics import RATIO_UNITS, Metric
from ai_system.report.format import figure, format_value, goal_text, params_label, status_badge, with_unit
from ai_system.report.load import Row

HEADER = ["Question", "Ours", "Compared with", "Ratio", "Goal", "Status"]


def _shortfall(metric: Metric) -> float:
    """How far a figure is from its goal, relative to the goal (positive: missed)."""
    assert metric.goal is not None
    gap = metric.goal - metric.value if metric.better == "higher" else metric.value - metric.goal
    return gap / (abs(metric.goal) or 1.0)


@dataclass(frozen=True)
class Headline:
    question: str
    rows: list[Row]

    @property
    def judged(self) -> list[Row]:
        return [row for row in self.rows if row.metric.goal is not None]

    @property
    def shown(self) -> Row:
        """The figure the row shows: the one furthest from its goal, else the weakest."""
        if self.judged:
            return max(self.judged, key=lambda row: _shortfall(row.metric))
        sign = 1 if self.rows[0].metric.better == "higher" else -1
        return min(self.rows, key=lambda row: sign * row.metric.value)

    @property
    def status(self) -> str:
        if not self.judged:
            return "no-goal"
        return "met" if all(row.metric.met for row in self.judged) else "not-met"

    @property
    def count_text(self) -> str:
        judged = self.judged
        return f"({sum(bool(row.metric.met) for row in judged)} of {len(judged)})" if len(judged) > 1 else ""

    def which(self) -> str:
        """The parameters that tell the shown figure apart from the others answering the question:
        one parameter when one suffices (``layout pp2-tp1``), else every one that varies."""
        shown = self.shown.metric.params
        values = {key: [str(row.metric.params.get(key)) for row in self.rows] for key in shown}
        varying = [key for key in shown if len(set(values[key])) > 1]
        telling = next((key for key in varying if len(set(values[key])) == len(self.rows)), None)
        label = params_label({key: shown[key] for key in ([telling] if telling else varying)})
        return f"worst of {len(self.rows)}: {label}"

    def cells(self) -> list[str]:
        metric = self.shown.metric
        baseline = metric.baseline
        question = self.question + (f"<br><small>{self.which()}</small>" if len(self.rows) > 1 else "")
        if baseline is not None and baseline.ours is not None:
            ours = with_unit(format_value(baseline.ours), baseline.unit)
        else:
            ours = figure(metric)
        if metric.kind == "projected":
            ours += " (projected)"
        compared, ratio = _comparison(metric)
        return [question, ours, compared, ratio, goal_text(metric), status_badge(self.status, self.count_text)]


def _comparison(metric: Metric) -> tuple[str, str]:
    """The "compared with" and "ratio" cells: a ratio metric shows itself, any other its ratio to the baseline."""
    baseline = metric.baseline
    if baseline is None:
        return "—", "—"
    compared = f"{baseline.name}: {with_unit(format_value(baseline.value), baseline.unit)}"
    if metric.unit in RATIO_UNITS and baseline.unit != metric.unit:
        return compared, with_unit(format_value(metric.value), metric.unit)
    return compared, f"{format_value(metric.ratio)}×"


def headlines(rows: list[Row]) -> list[Headline]:
    """One headline per question among ``rows`` (one hardware's newest figures), in first-seen order."""
    by_question: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        if row.metric.question:
            by_question[row.metric.question].append(row)
    return [Headline(question, question_rows) for question, question_rows in by_question.items()]


def not_measured_row(question: str) -> list[str]:
    return [question, "—", "—", "—", "—", status_badge("not-measured")]
