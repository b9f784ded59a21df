"""Everything one training run depends on, checked before any process group or model exists."""

from __future__ import annotations

import math
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ai_system.data.sources import BYTE_VOCAB_SIZE
from ai_system.distributed.layout import Layout
from ai_system.distributed.parallelize import PARAM_DTYPES
from ai_system.models.config import MODEL_CONFIGS, ModelConfig, get_config

DATASETS = ("stdlib", "synthetic")
OVERRIDE_TYPES: dict[str, Any] = typing.get_type_hints(ModelConfig)


def check_model_overrides(overrides: object) -> None:
    """Overrides must name ``ModelConfig`` fields and give each a value of its type (numbers > 0), so
    ``{"dim": "64"}`` is refused by name here rather than failing somewhere inside the model."""
    if not isinstance(overrides, dict):
        raise ValueError(f"model_overrides must be a JSON object of ModelConfig fields, got {overrides!r}")
    for name, value in overrides.items():
        if name not in OVERRIDE_TYPES:
            raise ValueError(f"model_overrides key {name!r} is not a ModelConfig field; expected one of "
                             f"{sorted(OVERRIDE_TYPES)}")
        expected = typing.get_args(OVERRIDE_TYPES[name]) or (OVERRIDE_TYPES[name],)
        if value is None and type(None) in expected:
            continue
        if bool in expected:
            if not isinstance(value, bool):
                raise ValueError(f"model_overrides[{name!r}] must be true or false, got {value!r}")
            continue
        integer = int in expected
        number = isinstance(value, int) or (not integer and isinstance(value, float) and math.isfinite(value))
        if isinstance(value, bool) or not number or value <= 0:
            raise ValueError(f"model_overrides[{name!r}] must be {'an integer' if integer else 'a number'} > 0, "
                             f"got {value!r} ({type(value).__name__})")


@dataclass(frozen=True)
class TrainConfig:
    """One run. ``batch_size`` is the global batch per optimizer step, in sequences.

    ``layout`` says how the run is split over ranks (``ai_system.distributed.layout``): each data-
    parallel replica processes ``batch_size // dp`` sequences per step in micro-batches of
    ``layout.micro_batch``, so the same config means the same optimization under any layout.
    """

    model: str = "debug"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    dataset: str = "stdlib"
    seq_len: int = 128
    batch_size: int = 8
    layout: Layout = field(default_factory=Layout)
    steps: int = 20
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 5
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    seed: int = 0
    param_dtype: str = "float32"
    compile: bool = False
    threads: int | None = None
    checkpoint_dir: str | None = None
    checkpoint_every: int = 0
    keep_checkpoints: int = 2
    resume: str | None = None
    export_dir: str | None = None
    log_file: str | None = None
    log_every: int = 1
    progress: bool = True
    profile_dir: str | None = None

    def __post_init__(self) -> None:
        if self.model not in MODEL_CONFIGS:
            raise ValueError(f"model must be one of {sorted(MODEL_CONFIGS)}, got {self.model!r}")
        check_model_overrides(self.model_overrides)
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {DATASETS}, got {self.dataset!r}")
        if self.param_dtype not in PARAM_DTYPES:
            raise ValueError(f"param_dtype must be one of {sorted(PARAM_DTYPES)}, got {self.param_dtype!r}")
        if not isinstance(self.layout, Layout):
            raise TypeError(f"TrainConfig.layout must be a Layout (Layout.parse('dp=2,tp=1')), got {self.layout!r}")
        for name in ("seq_len", "batch_size", "steps", "log_every", "keep_checkpoints"):
            if getattr(self, name) <= 0:
                raise ValueError(f"TrainConfig.{name} must be positive, got {getattr(self, name)}")
        for name in ("warmup_steps", "checkpoint_every", "weight_decay", "grad_clip"):
            if not getattr(self, name) >= 0 or not math.isfinite(getattr(self, name)):
                raise ValueError(f"TrainConfig.{name} must be a finite number >= 0, got {getattr(self, name)}")
        if not (math.isfinite(self.lr) and self.lr > 0) or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"need a finite lr > 0 and 0 <= min_lr_ratio <= 1, got lr={self.lr}, "
                             f"min_lr_ratio={self.min_lr_ratio}")
        if not all(0 <= beta < 1 for beta in self.betas) or len(self.betas) != 2:
            raise ValueError(f"TrainConfig.betas must be two numbers in [0, 1), got {self.betas}")
        if self.seed < 0:
            raise ValueError(f"TrainConfig.seed must be >= 0, got {self.seed}")
        if self.threads is not None and self.threads <= 0:
            raise ValueError(f"TrainConfig.threads must be positive or None, got {self.threads}")
        if self.checkpoint_every and not self.checkpoint_dir:
            raise ValueError(f"checkpoint_every={self.checkpoint_every} needs a checkpoint_dir")
        if self.resume is not None and not self.resume.strip():
            raise ValueError("TrainConfig.resume must be 'auto' or a checkpoint directory, got an empty string")
        if self.resume == "auto" and self.checkpoint_path is None:
            raise ValueError("resume='auto' needs a checkpoint_dir (or export_dir) to look in")
        model = self.model_config()
        if self.seq_len > model.max_seq_len:
            raise ValueError(f"seq_len={self.seq_len} exceeds model {self.model!r} max_seq_len={model.max_seq_len}")
        if model.vocab_size < BYTE_VOCAB_SIZE:
            raise ValueError(f"byte-level data needs vocab_size >= {BYTE_VOCAB_SIZE}, model has {model.vocab_size}")
        self.layout.check(model, self.batch_size)

    def model_config(self) -> ModelConfig:
        return get_config(self.model, **self.model_overrides)

    @property
    def checkpoint_path(self) -> Path | None:
        """Where DCP checkpoints go; an export without a checkpoint directory keeps them beside it."""
        if self.checkpoint_dir:
            return Path(self.checkpoint_dir)
        return Path(self.export_dir) / "checkpoints" if self.export_dir else None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "layout": self.layout.label()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {unknown}; expected some of {sorted(known)}")
        values = dict(data)
        if "betas" in values:
            values["betas"] = tuple(values["betas"])
        if isinstance(values.get("layout"), str):
            values["layout"] = Layout.parse(values["layout"])
        return cls(**values)
