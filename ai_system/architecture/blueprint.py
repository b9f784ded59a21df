"""The system blueprint: one validated description of a cluster and what runs on it.

A ``DistributedAISystem`` names the nodes (training and inference, GPUs per node, GPU model), the
container image, the model and layout to train, the model to serve, the KV store and the scheduler
policy. Every field is checked when the object is built, so an impossible system (a layout that
needs more GPUs than the nodes have, a served model that does not fit one GPU, an unknown policy)
fails here with a message naming the value, not later in a cluster. Blueprints live as YAML in
``architectures/``; ``from_yaml``/``to_yaml`` read and write exactly these fields.

Each workload is an optional section (``training``, ``serving``, ``kv_store``, ``search``); a new
component joins as one more section with its own spec class here and its renderer in
``ai_system.deployment``.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ai_system.architecture.capacity import CapacitySummary, capacity_summary
from ai_system.architecture.diagram import mermaid
from ai_system.distributed.layout import Layout
from ai_system.models.config import MODEL_CONFIGS, get_config
from ai_system.planning.accelerators import ACCELERATORS
from ai_system.planning.planner import PRECISIONS
from ai_system.resources.policies import POLICIES, WORKLOAD_POLICIES
from ai_system.search.persist import INDEX_KINDS as SEARCH_INDEX_KINDS

SERVED_WEIGHTS = ("training-export", "random")
SEARCH_DEVICES = ("cpu", "cuda")
SERVING_BYTES_PER_PARAM = 4
USABLE_GPU_MEMORY = 0.9
NAME_PATTERN = re.compile(r"^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$")


def _positive_int(owner: str, name: str, value: Any, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{owner}.{name} must be an integer >= {minimum}, got {value!r}")


def _positive_number(owner: str, name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0 or value == float("inf"):
        raise ValueError(f"{owner}.{name} must be a finite number > 0, got {value!r}")


def _choice(owner: str, name: str, value: Any, choices: Any) -> None:
    if value not in choices:
        raise ValueError(f"{owner}.{name} must be one of {sorted(choices)}, got {value!r}")


@dataclass(frozen=True)
class TrainingSpec:
    """The training run: what ``ai-system plan`` takes (model, sequence, global batch, precision) and,
    optionally, the layout; without one the capacity planner picks the fastest that fits."""

    model: str = "1B"
    seq_len: int = 2048
    global_batch: int = 256
    precision: str = "bf16-mixed"
    layout: Layout | None = None
    steps: int = 10_000
    checkpoint_every: int = 500

    def __post_init__(self) -> None:
        owner = "training"
        _choice(owner, "model", self.model, MODEL_CONFIGS)
        _choice(owner, "precision", self.precision, PRECISIONS)
        for name in ("seq_len", "global_batch", "steps", "checkpoint_every"):
            _positive_int(owner, name, getattr(self, name))
        if isinstance(self.layout, str):
            object.__setattr__(self, "layout", Layout.parse(self.layout))
        if self.layout is not None and not isinstance(self.layout, Layout):
            raise ValueError(f"training.layout must be layout text such as 'dp=8,tp=2,pp=1' or null, "
                             f"got {self.layout!r}")

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "layout": self.layout.label() if self.layout else None}


@dataclass(frozen=True)
class ServingSpec:
    """The model server fleet: one ``ai-system serve`` replica per inference GPU at most.

    ``weights``: ``training-export`` serves what the training run exports (same model), ``random``
    serves random weights of ``model`` (a smoke test of the serving path, not a useful model).
    ``target_queue_depth`` is the waiting requests per replica the autoscaler holds.
    """

    model: str = "1B"
    weights: str = "training-export"
    slo_p99_ms: float = 50.0
    max_batch_size: int = 16
    max_queue_size: int = 256
    target_queue_depth: float = 4.0
    min_replicas: int | None = None
    max_replicas: int | None = None

    def __post_init__(self) -> None:
        owner = "serving"
        _choice(owner, "model", self.model, MODEL_CONFIGS)
        _choice(owner, "weights", self.weights, SERVED_WEIGHTS)
        _positive_number(owner, "slo_p99_ms", self.slo_p99_ms)
        _positive_number(owner, "target_queue_depth", self.target_queue_depth)
        for name in ("max_batch_size", "max_queue_size"):
            _positive_int(owner, name, getattr(self, name))
        for name in ("min_replicas", "max_replicas"):
            if getattr(self, name) is not None:
                _positive_int(owner, name, getattr(self, name))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class KVStoreSpec:
    """Redis as a sharded KV store (Redis Cluster when ``shards`` > 1), AOF on a persistent volume."""

    shards: int = 3
    memory_gib: int = 16
    storage_gib: int | None = None

    def __post_init__(self) -> None:
        _positive_int("kv_store", "shards", self.shards)
        _positive_int("kv_store", "memory_gib", self.memory_gib)
        if self.storage_gib is not None:
            _positive_int("kv_store", "storage_gib", self.storage_gib)
            if self.storage_gib < self.memory_gib:
                raise ValueError(f"kv_store.storage_gib={self.storage_gib} is smaller than memory_gib="
                                 f"{self.memory_gib}: the append-only file of a full shard would not fit")

    @property
    def volume_gib(self) -> int:
        """The volume per shard: twice the memory by default, room for an AOF rewrite beside the old file."""
        return self.storage_gib or 2 * self.memory_gib

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class SearchSpec:
    """The vector-search service: a Job builds the index (``ai-system search build``) onto a volume, then
    ``ai-system search serve`` replicas load it, one GPU each on the inference pool (``device: cuda``)
    or CPU only (``device: cpu``).

    ``data`` is what the build embeds or generates: ``clustered`` (synthetic, ``vectors`` x ``dim``),
    ``python-docs``, or a ``.npy`` file already on the index volume (mounted at ``/index``).
    """

    index: str = "ivf_flat"
    data: str = "clustered"
    vectors: int = 1_000_000
    dim: int = 128
    nlist: int = 1024
    nprobe: int = 16
    device: str = "cuda"
    slo_p99_ms: float = 50.0
    max_batch_size: int = 64
    max_queue_delay_ms: float = 2.0
    max_queue_size: int = 1024
    timeout_s: float = 10.0
    storage_gib: int = 64
    min_replicas: int | None = None
    max_replicas: int | None = None

    def __post_init__(self) -> None:
        owner = "search"
        _choice(owner, "index", self.index, SEARCH_INDEX_KINDS)
        _choice(owner, "device", self.device, SEARCH_DEVICES)
        if not isinstance(self.data, str) or not (self.data in ("clustered", "python-docs")
                                                  or self.data.endswith(".npy")):
            raise ValueError(f"search.data must be 'clustered', 'python-docs' or a .npy file on the index volume, "
                             f"got {self.data!r}")
        for name in ("vectors", "dim", "nlist", "nprobe", "max_batch_size", "max_queue_size", "storage_gib"):
            _positive_int(owner, name, getattr(self, name))
        for name in ("slo_p99_ms", "max_queue_delay_ms", "timeout_s"):
            _positive_number(owner, name, getattr(self, name))
        if self.nprobe > self.nlist:
            raise ValueError(f"search.nprobe={self.nprobe} exceeds nlist={self.nlist}: it counts lists scanned")
        for name in ("min_replicas", "max_replicas"):
            if getattr(self, name) is not None:
                _positive_int(owner, name, getattr(self, name))
        if self.min_replicas is not None and self.max_replicas is not None and self.min_replicas > self.max_replicas:
            raise ValueError(f"search.min_replicas={self.min_replicas} exceeds max_replicas={self.max_replicas}")

    @property
    def vector_bytes(self) -> int:
        """The corpus as float32 vectors: what a flat or IVF-flat index holds (IVF-PQ holds less)."""
        return self.vectors * self.dim * 4

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


SECTIONS: dict[str, type] = {"training": TrainingSpec, "serving": ServingSpec, "kv_store": KVStoreSpec,
                             "search": SearchSpec}


@dataclass(frozen=True)
class DistributedAISystem:
    """A cluster and its workloads. Sections may be given as dicts (as YAML gives them) or spec objects.

    >>> DistributedAISystem(training_nodes=4, inference_nodes=8, gpu_per_node=4).training_gpus
    16
    """

    training_nodes: int = 4
    inference_nodes: int = 8
    gpu_per_node: int = 8
    gpu_model: str = "H100-SXM"
    cpus_per_node: int = 96
    memory_gib_per_node: int = 1024
    name: str = "ai-system"
    namespace: str = "ai-system"
    image: str = "ai-system:cuda"
    storage_class: str | None = None
    shared_storage_gib: int = 1024
    scheduler_policy: str | None = "fgd-pack"
    kueue: bool = True
    gpu_utilization_target_pct: float = 85.0
    training: TrainingSpec | None = field(default_factory=TrainingSpec)
    serving: ServingSpec | None = field(default_factory=ServingSpec)
    kv_store: KVStoreSpec | None = field(default_factory=KVStoreSpec)
    search: SearchSpec | None = None

    def __post_init__(self) -> None:
        owner = "DistributedAISystem"
        for section, kind in SECTIONS.items():
            value = getattr(self, section)
            if isinstance(value, dict):
                object.__setattr__(self, section, _build(kind, value, section))
            elif value is not None and not isinstance(value, kind):
                raise ValueError(f"{owner}.{section} must be a {kind.__name__}, a mapping of its fields or None, "
                                 f"got {value!r}")
        for name in ("training_nodes", "inference_nodes"):
            _positive_int(owner, name, getattr(self, name), minimum=0)
        for name in ("gpu_per_node", "cpus_per_node", "memory_gib_per_node", "shared_storage_gib"):
            _positive_int(owner, name, getattr(self, name))
        _choice(owner, "gpu_model", self.gpu_model, ACCELERATORS)
        for name in ("name", "namespace"):
            if not isinstance(getattr(self, name), str) or not NAME_PATTERN.match(getattr(self, name)):
                raise ValueError(f"{owner}.{name} must be a DNS label of at most 40 characters (lower-case "
                                 f"letters, digits, '-'; starting with a letter), got {getattr(self, name)!r}")
        if not isinstance(self.image, str) or not self.image or any(c.isspace() for c in self.image):
            raise ValueError(f"{owner}.image must be a container image reference, got {self.image!r}")
        if self.scheduler_policy is not None:
            _choice(owner, "scheduler_policy", self.scheduler_policy, POLICIES)
            if self.scheduler_policy in WORKLOAD_POLICIES and self.training is None and self.serving is None \
                    and (self.search is None or self.search.device != "cuda"):
                raise ValueError(f"{owner}.scheduler_policy {self.scheduler_policy!r} derives its target workload from "
                                 "the system's GPU pods, and this system has no training, serving or GPU search "
                                 "section; use a policy without one (e.g. 'gpu-packing') or null")
        if not isinstance(self.kueue, bool):
            raise ValueError(f"{owner}.kueue must be true or false, got {self.kueue!r}")
        target = self.gpu_utilization_target_pct
        if isinstance(target, bool) or not isinstance(target, int | float) or not 0 < target <= 100:
            raise ValueError(f"{owner}.gpu_utilization_target_pct must be in (0, 100], "
                             f"got {self.gpu_utilization_target_pct!r}")
        self._check_training()
        self._check_serving()
        self._check_search()

    def _check_training(self) -> None:
        if self.training is None:
            return
        if self.training_nodes < 1:
            raise ValueError("a training section needs training_nodes >= 1, got 0")
        layout = self.training.layout
        if layout is None:
            return
        if layout.world_size != self.training_gpus:
            raise ValueError(f"training.layout {layout.label()} uses {layout.world_size} GPUs, but "
                             f"{self.training_nodes} training nodes x {self.gpu_per_node} GPUs have "
                             f"{self.training_gpus}")
        if layout.tp > self.gpu_per_node:
            raise ValueError(f"training.layout tp={layout.tp} exceeds gpu_per_node={self.gpu_per_node}: tensor "
                             "parallelism stays within a node")
        layout.check(get_config(self.training.model), self.training.global_batch)

    def _check_serving(self) -> None:
        serving = self.serving
        if serving is None:
            return
        if self.inference_nodes < 1:
            raise ValueError("a serving section needs inference_nodes >= 1, got 0")
        if serving.weights == "training-export" and (self.training is None or self.training.model != serving.model):
            trained = self.training.model if self.training else None
            raise ValueError(f"serving.weights 'training-export' serves the trained model, but serving.model is "
                             f"{serving.model!r} and training.model is {trained!r}; use the same model or "
                             "weights 'random'")
        needed = get_config(serving.model).num_params() * SERVING_BYTES_PER_PARAM
        usable = USABLE_GPU_MEMORY * ACCELERATORS[self.gpu_model].memory_bytes
        if needed > usable:
            raise ValueError(f"serving.model {serving.model!r} needs {needed / 1e9:.0f} GB of fp32 weights, more than "
                             f"{usable / 1e9:.0f} GB usable on one {self.gpu_model}; the server runs one model per GPU")
        if serving.min_replicas is not None and serving.max_replicas is not None \
                and serving.min_replicas > serving.max_replicas:
            raise ValueError(f"serving.min_replicas={serving.min_replicas} exceeds max_replicas={serving.max_replicas}")
        if self.max_replicas > self.inference_gpus:
            raise ValueError(f"serving.max_replicas={self.max_replicas} exceeds the {self.inference_gpus} inference "
                             "GPUs (one replica per GPU)")

    def _check_search(self) -> None:
        search = self.search
        if search is None:
            return
        if self.inference_nodes < 1:
            raise ValueError("a search section needs inference_nodes >= 1, got 0")
        if self.search_max_replicas < 1:
            raise ValueError(f"search has no inference GPU left: serving.max_replicas={self.max_replicas} takes all "
                             f"{self.inference_gpus}; lower it or set search.max_replicas")
        usable = USABLE_GPU_MEMORY * ACCELERATORS[self.gpu_model].memory_bytes
        if search.device == "cuda" and search.index != "ivf_pq" and search.vector_bytes > usable:
            raise ValueError(f"search holds {search.vectors:,} x {search.dim} float32 vectors "
                             f"({search.vector_bytes / 1e9:.0f} GB), more than {usable / 1e9:.0f} GB usable on one "
                             f"{self.gpu_model}; every replica holds the whole index (use index 'ivf_pq' or fewer "
                             "vectors)")
        if search.device == "cuda":
            taken = self.max_replicas if self.serving is not None else 0
            if self.search_max_replicas + taken > self.inference_gpus:
                raise ValueError(f"search.max_replicas={self.search_max_replicas} plus {taken} serving replicas exceed "
                                 f"the {self.inference_gpus} inference GPUs (one replica per GPU)")

    @property
    def search_min_replicas(self) -> int:
        """The search autoscaler's floor: one replica per inference node unless the blueprint says otherwise."""
        assert self.search is not None
        return self.search.min_replicas or min(self.inference_nodes, self.search_max_replicas)

    @property
    def search_max_replicas(self) -> int:
        """The search autoscaler's ceiling: the inference GPUs the model servers leave (one replica per GPU;
        per inference node for CPU replicas) unless the blueprint says otherwise."""
        assert self.search is not None
        if self.search.max_replicas is not None:
            return self.search.max_replicas
        if self.search.device == "cpu":
            return self.inference_nodes
        return self.inference_gpus - (self.max_replicas if self.serving is not None else 0)

    @property
    def training_gpus(self) -> int:
        return self.training_nodes * self.gpu_per_node

    @property
    def inference_gpus(self) -> int:
        return self.inference_nodes * self.gpu_per_node

    @property
    def min_replicas(self) -> int:
        """The autoscaler's floor: one replica per inference node unless the blueprint says otherwise."""
        assert self.serving is not None
        return self.serving.min_replicas or min(self.inference_nodes, self.max_replicas)

    @property
    def max_replicas(self) -> int:
        """The autoscaler's ceiling: every inference GPU unless the blueprint says otherwise."""
        assert self.serving is not None
        return self.serving.max_replicas or self.inference_gpus

    def to_dict(self) -> dict[str, Any]:
        data = {spec.name: getattr(self, spec.name) for spec in dataclasses.fields(self)}
        for section in SECTIONS:
            data[section] = data[section].to_dict() if data[section] is not None else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DistributedAISystem:
        if not isinstance(data, dict):
            raise ValueError(f"a blueprint is a mapping of DistributedAISystem fields, got {type(data).__name__}")
        return _build(cls, data, "the system")

    def to_yaml(self, path: str | Path | None = None) -> str:
        """The blueprint as YAML (written to ``path`` too when given)."""
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_yaml(cls, source: str | Path) -> DistributedAISystem:
        """Read a blueprint from a YAML file (a ``Path``, or a one-line string ending in .yaml/.yml) or YAML text."""
        is_file = isinstance(source, Path) or ("\n" not in source and source.endswith((".yaml", ".yml")))
        where = str(source) if is_file else "YAML text"
        try:
            data = yaml.safe_load(Path(source).read_text() if is_file else source)
            return cls.from_dict(data)
        except (OSError, yaml.YAMLError, ValueError) as error:
            raise ValueError(f"blueprint {where}: {error}") from None

    def capacity_summary(self, results_dir: str | Path | None = None) -> CapacitySummary:
        """What this system can do, from the capacity planner and measured results (see ``capacity``)."""
        return capacity_summary(self, results_dir)

    def diagram(self) -> str:
        """The topology as a Mermaid graph (see ``diagram``)."""
        return mermaid(self)


def _build(kind: type, data: dict[str, Any], where: str) -> Any:
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be a mapping of {kind.__name__} fields, got {data!r}")
    known = [spec.name for spec in dataclasses.fields(kind)]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in {where}; expected some of {known}")
    return kind(**data)
