"""How a training run is split over ranks: the one layout type the planner plans and the trainer runs.

A ``Layout`` names the degrees of data (``dp``), tensor (``tp``) and pipeline (``pp``) parallelism,
how data parallelism shards state (``zero``), the micro-batch, the pipeline schedule and the
activation recomputation. ``ai-system plan`` ranks layouts and prints one as text; ``ai-system train
--layout`` parses that text back; both check the same constraints here, so a plan is a run.

The ranks form a 4-D ``DeviceMesh`` (pp, dp_replicate, dp_shard, tp), tp innermost: tensor-parallel
ranks are neighbours (one node, fastest links), data parallelism spans the next level and pipeline
stages the outermost, as in Megatron-LM and torchtitan. ``zero`` picks how the dp ranks split:

* ``zero=3``: FSDP2 shards parameters, gradients and optimizer state over dp and re-gathers the
  parameters for the backward (ZeRO-3);
* ``zero=2``: the same shards, but parameters gathered for the forward stay until the backward
  (``reshard_after_forward=False``): one all-gather per step instead of two, full parameters at peak;
* ``zero=0``: every dp rank keeps everything and gradients are all-reduced (DDP), expressed as FSDP2
  over a (dp, 1) mesh so it composes with TP and PP the same way.

ZeRO-1 (sharded optimizer, replicated gradients) has no FSDP2 counterpart, so it is not a layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

from ai_system.models.config import ModelConfig

SCHEDULES = ("gpipe", "1f1b", "interleaved-1f1b")
RECOMPUTE = ("none", "selective", "full")
ZERO_STAGES = (0, 2, 3)
MESH_AXES = ("pp", "dp_replicate", "dp_shard", "tp")
_TEXT_KEYS = {"dp": "dp", "tp": "tp", "pp": "pp", "zero": "zero", "mb": "micro_batch", "schedule": "schedule",
              "v": "virtual_stages", "recompute": "recompute", "sp": "sequence_parallel"}


@dataclass(frozen=True)
class Layout:
    """One way to lay a run out over ``dp × tp × pp`` ranks.

    ``micro_batch`` is the sequences per forward on one data-parallel replica; the global batch
    divided by ``dp × micro_batch`` gives the micro-batches per step, which a pipeline schedules
    and a single stage accumulates. None means the whole per-replica batch at once (no pipeline).
    """

    dp: int = 1
    tp: int = 1
    pp: int = 1
    zero: int = 3
    micro_batch: int | None = None
    schedule: str = "1f1b"
    virtual_stages: int = 1
    recompute: str = "none"
    sequence_parallel: bool = True

    def __post_init__(self) -> None:
        for name in ("dp", "tp", "pp", "virtual_stages"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"layout {name} must be an integer >= 1, got {value!r}")
        if self.micro_batch is not None and (isinstance(self.micro_batch, bool) or not isinstance(self.micro_batch, int)
                                             or self.micro_batch < 1):
            raise ValueError(f"layout micro_batch must be an integer >= 1 or None, got {self.micro_batch!r}")
        if self.zero not in ZERO_STAGES:
            raise ValueError(f"layout zero must be one of {ZERO_STAGES} (0: replicate, 2: shard gradients and "
                             f"optimizer, 3: FSDP), got {self.zero!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"layout schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.recompute not in RECOMPUTE:
            raise ValueError(f"layout recompute must be one of {RECOMPUTE}, got {self.recompute!r}")
        if (self.virtual_stages > 1) != (self.schedule == "interleaved-1f1b"):
            raise ValueError(f"virtual_stages={self.virtual_stages}: more than one stage per rank goes with "
                             f"schedule 'interleaved-1f1b' and only with it (schedule={self.schedule!r})")
        if self.pp > 1 and self.micro_batch is None:
            raise ValueError(f"a {self.pp}-stage pipeline needs a micro_batch (mb=...) that splits each "
                             "replica's batch into at least pp micro-batches")

    @property
    def world_size(self) -> int:
        return self.dp * self.tp * self.pp

    @property
    def uses_sequence_parallel(self) -> bool:
        """Sequence parallelism runs with tensor parallelism outside pipelines: stages exchange plain,
        tp-replicated activations."""
        return self.sequence_parallel and self.tp > 1 and self.pp == 1

    @property
    def uses_vocab_parallel_loss(self) -> bool:
        """The loss reads vocabulary-sharded logits without gathering them, outside pipelines."""
        return self.tp > 1 and self.pp == 1

    @property
    def num_stages(self) -> int:
        return self.pp * self.virtual_stages

    @property
    def mesh_shape(self) -> tuple[int, int, int, int]:
        """Sizes along ``MESH_AXES``: dp goes to the replicate axis for zero=0, else the shard axis."""
        return (self.pp, self.dp, 1, self.tp) if self.zero == 0 else (self.pp, 1, self.dp, self.tp)

    def microbatches(self, global_batch: int) -> int:
        """Micro-batches per step on each replica; raises unless the batch splits evenly."""
        if global_batch % self.dp:
            raise ValueError(f"global batch {global_batch} does not split over dp={self.dp} replicas")
        per_replica = global_batch // self.dp
        micro_batch = self.micro_batch or per_replica
        if per_replica % micro_batch:
            raise ValueError(f"each replica's batch of {per_replica} sequences does not split into micro-batches "
                             f"of {micro_batch} (global batch {global_batch}, dp={self.dp})")
        count = per_replica // micro_batch
        if self.pp > 1 and count < self.pp:
            raise ValueError(f"{count} micro-batches per step cannot fill a {self.pp}-stage pipeline "
                             f"(global batch {global_batch}, dp={self.dp}, micro_batch={micro_batch})")
        return count

    def check(self, config: ModelConfig, global_batch: int) -> None:
        """Raise ValueError naming the first constraint the model or batch breaks under this layout."""
        for name, count in (("n_heads", config.n_heads), ("n_kv_heads", config.kv_heads),
                            ("hidden_dim", config.hidden_dim), ("vocab_size", config.vocab_size)):
            if count % self.tp:
                raise ValueError(f"{name}={count} is not divisible by tp={self.tp}")
        if self.tp > 1 and config.tie_embeddings:
            raise ValueError("tensor parallelism shards embedding rows and head columns separately; "
                             "tie_embeddings=True is not supported")
        if self.num_stages > config.n_layers:
            raise ValueError(f"{self.num_stages} pipeline stages (pp={self.pp} × v={self.virtual_stages}) exceed "
                             f"the model's {config.n_layers} layers")
        if self.virtual_stages > 1 and config.n_layers % self.num_stages:
            raise ValueError(f"n_layers={config.n_layers} does not split into pp×v={self.num_stages} equal chunks")
        self.microbatches(global_batch)

    def build_mesh(self, device_type: str) -> DeviceMesh:
        """The (pp, dp_replicate, dp_shard, tp) mesh over all ranks of the default process group."""
        return init_device_mesh(device_type, self.mesh_shape, mesh_dim_names=MESH_AXES)

    def label(self) -> str:
        """Canonical text, e.g. ``dp=2,tp=2,pp=2,zero=3,mb=1,schedule=1f1b,recompute=none``.

        Fields that cannot matter are left out (the schedule without a pipeline, ``sp`` without tp),
        and ``Layout.parse`` reads the text back to an equal layout.
        """
        parts = [f"dp={self.dp}", f"tp={self.tp}", f"pp={self.pp}", f"zero={self.zero}"]
        if self.micro_batch is not None:
            parts.append(f"mb={self.micro_batch}")
        if self.pp > 1:
            parts.append(f"schedule={self.schedule}")
            if self.virtual_stages > 1:
                parts.append(f"v={self.virtual_stages}")
        parts.append(f"recompute={self.recompute}")
        if self.tp > 1 and not self.sequence_parallel:
            parts.append("sp=off")
        return ",".join(parts)

    def __str__(self) -> str:
        return self.label()

    @classmethod
    def parse(cls, text: str) -> Layout:
        """Read ``key=value`` pairs (keys: dp, tp, pp, zero, mb, schedule, v, recompute, sp); omitted keys
        take their defaults, and ``schedule=interleaved-1f1b`` without ``v`` means two stages per rank."""
        values: dict[str, Any] = {}
        for item in (part.strip() for part in text.split(",")):
            if not item:
                continue
            key, sep, value = item.partition("=")
            if not sep or key.strip() not in _TEXT_KEYS:
                raise ValueError(f"layout item {item!r} is not key=value with key in {sorted(_TEXT_KEYS)} "
                                 f"(e.g. 'dp=2,tp=2,pp=1')")
            name, value = _TEXT_KEYS[key.strip()], value.strip()
            if name in values:
                raise ValueError(f"layout key {key.strip()!r} is given twice in {text!r}")
            values[name] = _parse_value(name, value)
        if values.get("schedule") == "interleaved-1f1b" and "virtual_stages" not in values:
            values["virtual_stages"] = 2
        return cls(**values)


def _parse_value(name: str, value: str) -> Any:
    if name in ("schedule", "recompute"):
        return value
    if name == "sequence_parallel":
        if value not in ("on", "off"):
            raise ValueError(f"layout sp must be 'on' or 'off', got {value!r}")
        return value == "on"
    if name == "micro_batch" and value.lower() == "none":
        return None
    if not value.isdigit():
        raise ValueError(f"layout {name} must be a positive integer, got {value!r}")
    return int(value)
