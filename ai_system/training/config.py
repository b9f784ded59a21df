"""Everything one training run depends on, checked before any process group or model exists."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ai_system.data.sources import BYTE_VOCAB_SIZE
from ai_system.models.config import MODEL_CONFIGS, ModelConfig, get_config

DATASETS = ("stdlib", "synthetic")
PARAM_DTYPES = ("float32", "bfloat16")


@dataclass(frozen=True)
class TrainConfig:
    """One run. ``batch_size`` is the global batch per optimizer step, in sequences.

    Each rank processes ``batch_size // world_size`` sequences per step in ``grad_accum_steps``
    micro-batches, so the same config means the same optimization on any number of ranks.
    """

    model: str = "debug"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    dataset: str = "stdlib"
    seq_len: int = 128
    batch_size: int = 8
    grad_accum_steps: int = 1
    steps: int = 20
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 5
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    seed: int = 0
    param_dtype: str = "float32"
    activation_checkpointing: bool = False
    compile: bool = False
    threads: int | None = None
    checkpoint_dir: str | None = None
    checkpoint_every: int = 0
    keep_checkpoints: int = 2
    resume: str | None = None
    log_file: str | None = None
    log_every: int = 1
    progress: bool = True

    def __post_init__(self) -> None:
        if self.model not in MODEL_CONFIGS:
            raise ValueError(f"model must be one of {sorted(MODEL_CONFIGS)}, got {self.model!r}")
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {DATASETS}, got {self.dataset!r}")
        if self.param_dtype not in PARAM_DTYPES:
            raise ValueError(f"param_dtype must be one of {PARAM_DTYPES}, got {self.param_dtype!r}")
        for name in ("seq_len", "batch_size", "grad_accum_steps", "steps", "log_every", "keep_checkpoints"):
            if getattr(self, name) <= 0:
                raise ValueError(f"TrainConfig.{name} must be positive, got {getattr(self, name)}")
        for name in ("warmup_steps", "checkpoint_every", "weight_decay", "grad_clip"):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.lr <= 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"need lr > 0 and 0 <= min_lr_ratio <= 1, got lr={self.lr}, "
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

    def model_config(self) -> ModelConfig:
        return get_config(self.model, **self.model_overrides)

    def micro_batch_size(self, world_size: int) -> int:
        """Sequences per forward on one rank; the batch must split evenly over ranks and micro-batches."""
        if world_size <= 0:
            raise ValueError(f"world_size must be positive, got {world_size}")
        per_step = world_size * self.grad_accum_steps
        if self.batch_size % per_step:
            raise ValueError(f"batch_size={self.batch_size} is not divisible by world_size={world_size} × "
                             f"grad_accum_steps={self.grad_accum_steps} = {per_step}")
        return self.batch_size // per_step

    @property
    def checkpoint_path(self) -> Path | None:
        return Path(self.checkpoint_dir) if self.checkpoint_dir else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {unknown}; expected some of {sorted(known)}")
        values = dict(data)
        if "betas" in values:
            values["betas"] = tuple(values["betas"])
        return cls(**values)
