"""What a benchmark publishes: a typed, validated metric record.

Every number on the site comes from one of these. A metric says what it measures, in which unit,
which direction is better, at what scale it ran, and whether it was measured or projected (and if
projected, by which model from which measured inputs), so the report never has to guess.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Kind = Literal["measured", "projected"]
Better = Literal["higher", "lower"]


@dataclass(frozen=True)
class SeedRow:
    """One row of the seed README's Performance table: the promise a benchmark speaks to."""

    key: str
    metric: str
    target: str
    seed_achieved: str
    scale: str


SEED_PERFORMANCE: dict[str, SeedRow] = {
    row.key: row
    for row in (
        SeedRow("training_throughput", "Training Throughput", "10k samples/sec", "12k samples/sec", "32 GPUs"),
        SeedRow("inference_latency", "Inference Latency", "50ms", "35ms", "1M QPS"),
        SeedRow("resource_utilization", "Resource Utilization", "85%", "88%", "100 nodes"),
    )
}

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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Metric:
        fields = dict(data)
        if fields.get("projection") is not None:
            fields["projection"] = Projection(**fields["projection"])
        return cls(**fields)
