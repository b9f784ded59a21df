"""What a benchmark publishes: a typed, validated metric record.

Every number on the site comes from one of these. A metric says what it measures, in which unit,
which direction is better, at what scale it ran, and whether it was measured or projected (and if
projected, by which model from which measured inputs), so the report never has to guess. A metric
can also say what it is judged against (a ``Baseline``), the ``goal`` it must reach and the
``Spread`` of its repeats, which is what the site's headline tables are made of.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Kind = Literal["measured", "projected"]
Better = Literal["higher", "lower"]
BaselineKind = Literal["peer", "peak", "limit", "formula"]
BASELINE_KINDS = ("peer", "peak", "limit", "formula")
# Units that make a figure a ratio, and what the ratio's 1.0 reads as in that unit.
RATIO_UNITS: dict[str, float] = {"%": 100.0, "ratio": 1.0, "×": 1.0, "x": 1.0}


@dataclass(frozen=True)
class SeedRow:
    """One row of the seed README's Performance table: the promise a benchmark speaks to.

    ``target_value``/``target_unit`` are the target in numbers, so a figure can be judged against it.
    """

    key: str
    metric: str
    target: str
    seed_achieved: str
    scale: str
    target_value: float
    target_unit: str
    better: Better


SEED_PERFORMANCE: dict[str, SeedRow] = {
    row.key: row
    for row in (
        SeedRow("training_throughput", "Training Throughput", "10k samples/sec", "12k samples/sec", "32 GPUs",
                10_000, "samples/s", "higher"),
        SeedRow("inference_latency", "Inference Latency", "50ms", "35ms", "1M QPS", 50, "ms", "lower"),
        SeedRow("resource_utilization", "Resource Utilization", "85%", "88%", "100 nodes", 85, "%", "higher"),
    )
}


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def meets(value: float, goal: float, better: Better) -> bool:
    """Whether ``value`` reaches ``goal`` in the direction ``better``."""
    return value >= goal if better == "higher" else value <= goal


@dataclass(frozen=True)
class Baseline:
    """What a figure is judged against, with that reference's own figure.

    ``kind``: ``peer`` is another implementation measured in the same run (plain torch, FAISS,
    TorchRec, redis-benchmark); ``peak`` a measured hardware ceiling, so reaching more than 100 % of
    it is impossible and rejected; ``limit`` a bound the figure is held to (an SLO, a memory size);
    ``formula`` an analytic prediction. ``value`` is in ``unit``. When the metric is itself a ratio
    (unit ``%``, ``ratio`` or ``×``) against this reference, ``ours`` is our own figure in ``unit``,
    so a reader sees both sides of the ratio.
    """

    name: str
    value: float
    unit: str
    kind: BaselineKind = "peer"
    ours: float | None = None

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise ValueError("Baseline.name must say what the figure is compared with, got an empty string")
        if not _finite(self.value) or self.value <= 0:
            raise ValueError(f"Baseline {self.name!r}: value must be a positive finite number, got {self.value!r}")
        if self.kind not in BASELINE_KINDS:
            raise ValueError(f"Baseline {self.name!r}: kind must be one of {BASELINE_KINDS}, got {self.kind!r}")
        if self.ours is not None and not _finite(self.ours):
            raise ValueError(f"Baseline {self.name!r}: ours must be a finite number or None, got {self.ours!r}")


@dataclass(frozen=True)
class Spread:
    """Min, median and max of a figure over ``repeats`` repeated measurements."""

    min: float
    median: float
    max: float
    repeats: int

    def __post_init__(self) -> None:
        if not all(_finite(v) for v in (self.min, self.median, self.max)) or not self.min <= self.median <= self.max:
            raise ValueError(f"Spread needs finite min <= median <= max, got {self.min!r}, {self.median!r}, "
                             f"{self.max!r}")
        if not isinstance(self.repeats, int) or self.repeats < 2:
            raise ValueError(f"Spread needs at least 2 repeats, got {self.repeats!r}")

    @classmethod
    def of(cls, samples: Sequence[float]) -> Spread:
        """The spread of repeated measurements, e.g. ``Spread.of(rates)``."""
        return cls(min(samples), statistics.median(samples), max(samples), len(samples))

    def scaled(self, factor: float) -> Spread:
        """The same spread in another unit (``factor`` > 0), e.g. FLOP/s → TFLOP/s."""
        return Spread(self.min * factor, self.median * factor, self.max * factor, self.repeats)

    def contains(self, value: float) -> bool:
        tolerance = 1e-9 * max(abs(self.min), abs(self.max), 1e-300)
        return self.min - tolerance <= value <= self.max + tolerance

AREAS: dict[str, str] = {
    "hardware": "Hardware peaks",
    "training": "Training pipeline",
    "inference": "Inference system",
    "serving": "Model serving",
    "parallel": "Model-parallel LLM",
    "recommender": "Recommender",
    "search": "Search engine",
    "resources": "Resource manager",
}


@dataclass(frozen=True)
class Projection:
    """How a projected figure was derived: the model's name and the measured inputs it consumed."""

    model: str
    inputs: dict[str, float | int | str]

    def __post_init__(self) -> None:
        if not self.model.strip():
            raise ValueError("Projection.model must name the model used, got an empty string")
        if not self.inputs:
            raise ValueError(f"Projection {self.model!r} must list the measured inputs it used, got none")


@dataclass(frozen=True)
class Metric:
    """A single published figure.

    ``params`` holds the knobs the figure depends on (size, dtype, ranks...); the report uses them
    to tell series apart and, via ``x``, to pick the parameter plotted on the horizontal axis.
    ``curve`` is an optional short series behind the figure (first key is the x axis, e.g.
    ``{"step": [...], "loss": [...]}``), which the report plots as it is.

    The judgement fields feed the headline tables: ``question`` is the one-line question the figure
    answers (figures sharing a question share a headline row), ``baseline`` what it is compared with,
    ``goal`` the value it must reach in this metric's unit (direction: ``better``) and ``spread``
    its min/median/max when it was repeated (``value`` must lie within it).
    """

    name: str
    value: float
    unit: str
    better: Better
    area: str
    scale: str
    kind: Kind = "measured"
    seed_row: str | None = None
    projection: Projection | None = None
    params: dict[str, Any] = field(default_factory=dict)
    x: str | None = None
    curve: dict[str, list[float]] = field(default_factory=dict)
    description: str = ""
    question: str = ""
    baseline: Baseline | None = None
    goal: float | None = None
    spread: Spread | None = None

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").replace(".", "").isalnum():
            raise ValueError(f"Metric.name must be a non-empty identifier like 'matmul_fp32', got {self.name!r}")
        if not isinstance(self.value, int | float) or not math.isfinite(self.value):
            raise ValueError(f"Metric {self.name!r}: value must be a finite number, got {self.value!r}")
        if self.better not in ("higher", "lower"):
            raise ValueError(f"Metric {self.name!r}: better must be 'higher' or 'lower', got {self.better!r}")
        if self.kind not in ("measured", "projected"):
            raise ValueError(f"Metric {self.name!r}: kind must be 'measured' or 'projected', got {self.kind!r}")
        if self.area not in AREAS:
            raise ValueError(f"Metric {self.name!r}: area must be one of {sorted(AREAS)}, got {self.area!r}")
        if self.seed_row is not None and self.seed_row not in SEED_PERFORMANCE:
            raise ValueError(
                f"Metric {self.name!r}: seed_row must be one of {sorted(SEED_PERFORMANCE)}, got {self.seed_row!r}"
            )
        if (self.kind == "projected") != (self.projection is not None):
            raise ValueError(
                f"Metric {self.name!r}: a projected metric needs a Projection and a measured one must not have "
                f"one (kind={self.kind!r}, projection={self.projection!r})"
            )
        lengths = {key: len(values) for key, values in self.curve.items()}
        if self.curve and (len(lengths) < 2 or len(set(lengths.values())) != 1):
            raise ValueError(
                f"Metric {self.name!r}: curve needs an x and at least one y of equal lengths, got {lengths}")
        if self.x is not None and self.x not in self.params:
            raise ValueError(f"Metric {self.name!r}: x={self.x!r} must be a key of params {sorted(self.params)}")
        self._check_judgement()

    def _check_judgement(self) -> None:
        if self.goal is not None and not _finite(self.goal):
            raise ValueError(f"Metric {self.name!r}: goal must be a finite number in {self.unit!r}, got {self.goal!r}")
        if self.spread is not None and not self.spread.contains(self.value):
            raise ValueError(f"Metric {self.name!r}: value {self.value} lies outside its spread "
                             f"[{self.spread.min}, {self.spread.max}]")
        baseline = self.baseline
        if baseline is None:
            return
        if baseline.unit != self.unit and self.unit not in RATIO_UNITS:
            raise ValueError(f"Metric {self.name!r}: baseline {baseline.name!r} is in {baseline.unit!r}; it must be "
                             f"in the metric's unit {self.unit!r}, or the metric must be a ratio "
                             f"(unit one of {sorted(RATIO_UNITS)})")
        if baseline.ours is not None and baseline.unit == self.unit:
            raise ValueError(f"Metric {self.name!r}: baseline.ours is for ratio metrics; this metric's value is "
                             f"already our figure in {self.unit!r}")
        if baseline.kind == "peak":
            fraction = max(self._fractions_of_peak())
            if fraction > 1 + 1e-9:
                raise ValueError(
                    f"Metric {self.name!r}: {100 * fraction:.1f}% of {baseline.name} "
                    f"({baseline.value:.4g} {baseline.unit}) is impossible; the peak was measured too low. "
                    "Re-measure it next to the workload with the same thread count (MeasuredPeaks.remeasure_*)")

    def _fractions_of_peak(self) -> list[float]:
        baseline = self.baseline
        assert baseline is not None
        if baseline.unit == self.unit:
            return [self.value / baseline.value]
        fractions = [self.value / RATIO_UNITS[self.unit]]
        if baseline.ours is not None:
            fractions.append(baseline.ours / baseline.value)
        return fractions

    @property
    def ratio(self) -> float | None:
        """Ours ÷ the baseline's figure, or None without a baseline.

        A ratio metric is its own ratio (a speedup, a utilization), expressed as a fraction; otherwise
        the ratio is this value over the baseline's.
        """
        if self.baseline is None:
            return None
        if self.baseline.unit == self.unit:
            return self.value / self.baseline.value
        return self.value / RATIO_UNITS[self.unit]

    @property
    def met(self) -> bool | None:
        """Whether the figure reaches its goal; None when it has none."""
        return None if self.goal is None else meets(self.value, self.goal, self.better)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Metric:
        """Read a stored metric; files written before a field existed simply lack it."""
        fields = dict(data)
        for name, kind in (("projection", Projection), ("baseline", Baseline), ("spread", Spread)):
            if fields.get(name) is not None:
                fields[name] = kind(**fields[name])
        return cls(**fields)
