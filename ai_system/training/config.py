"""Everything one training run depends on, checked before any process group or model exists."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ai_system.data.sources import BYTE_VOCAB_SIZE
from ai_system.distributed.layout import Layout
from ai_system.distributed.parallelize import PARAM_DTYPES
from ai_system.models.config import MODEL_CONFIGS, ModelConfig, get_config

DATASETS = ("stdlib", "synthetic")


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

    def __post_init__(self) -> None:
        if self.model not in MODEL_CONFIGS:
            raise ValueError(f"model must be one of {sorted(MODEL_CONFIGS)}, got {self.model!r}")
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
        if self.threads is not None and self.threads <= 0:
            raise ValueError(f"TrainConfig.threads must be positive or None, got {self.threads}")
        if self.checkpoint_every and not self.checkpoint_dir:
            raise ValueError(f"checkpoint_every={self.checkpoint_every} needs a checkpoint_dir")
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
