"""What a blueprint's cluster can do, from the project's own planners and measurements.

* Training: the capacity planner (``ai_system.planning``) plans the run on the training nodes'
  GPUs exactly as ``ai-system plan`` does (same flags, same ``train_command``), with the GPU's
  node size set to the blueprint's GPUs per node. Its figures are projections.
* Serving: the newest measured ``serving_max_qps_at_slo`` and saturation throughput of one server
  replica in ``results/`` (read with ``ai_system.report``'s loader), times the blueprint's replicas.
  Measured on whatever hardware produced the results; the summary says which, and says so when
  that is not the blueprint's GPU or model.
* KV store: the recommender benchmark's measured bytes per row and rows/s per Redis shard, times
  the blueprint's shards and memory.
* Search: the search serving benchmark's highest measured ``search_http_served_qps`` of one
  replica whose ``search_http_p99_ms`` at the same offered load kept the blueprint's SLO, times the
  blueprint's search replicas; the summary says where it was measured, or that it was not.
"""

from __future__ import annotations

import dataclasses
import functools
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from ai_system.bench.harness import results_dir as default_results_dir
from ai_system.cli import build_parser
from ai_system.distributed.layout import Layout
from ai_system.planning.accelerators import Accelerator, get_accelerator
from ai_system.planning.cli import summary_of, train_config
from ai_system.planning.planner import PRECISIONS, USABLE_MEMORY, Estimate, Job, estimate, search
from ai_system.report.load import Results, Row, load_results
from ai_system.training.config import TrainConfig

if TYPE_CHECKING:
    from ai_system.architecture.blueprint import DistributedAISystem, TrainingSpec

GIB = 1 << 30
FLEET_MODEL = ("independent replicas behind an ideal load balancer, each at its measured rate: "
               "fleet = replicas x per-replica rate")


@dataclass(frozen=True)
class Figure:
    """One number of the summary, and what it is: measured (where, when) or projected (from what)."""

    name: str
    value: float
    unit: str
    kind: Literal["measured", "projected"]
    basis: str

    def __str__(self) -> str:
        return f"{self.name:<34}{self.value:>14,.4g} {self.unit:<10} {self.kind:<10} {self.basis}"


@dataclass(frozen=True)
class TrainingPlan:
    """The planner's answer for the training section, with the figures ``ai-system plan`` prints."""

    estimate: Estimate
    summary: dict[str, float | int | str]
    planned: bool
    config: TrainConfig

    @property
    def layout(self) -> Layout:
        return self.estimate.layout

    @property
    def train_command(self) -> str:
        return str(self.summary["train_command"])

    @property
    def train_arguments(self) -> list[str]:
        """The options after ``ai-system train`` (what torchrun passes to ``-m ai_system.cli train``)."""
        return shlex.split(self.train_command)[2:]


@dataclass(frozen=True)
class CapacitySummary:
    system: str
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    training: TrainingPlan | None = None

    def figure(self, name: str) -> Figure:
        for figure in self.figures:
            if figure.name == name:
                return figure
        raise KeyError(f"no figure {name!r} in the summary; it has {[f.name for f in self.figures]}")

    def __str__(self) -> str:
        lines = [f"capacity of {self.system}:"]
        if self.training is not None:
            lines.append(f"  training layout: {self.training.layout.label()}"
                         f"{' (planned)' if self.training.planned else ' (from the blueprint)'}")
            lines.append(f"  run it:          {self.training.train_command}")
        lines += [f"  {figure}" for figure in self.figures]
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


def node_accelerator(gpu_model: str, gpu_per_node: int) -> Accelerator:
    """The GPU as the planner knows it, in nodes of the blueprint's size (links within vs across nodes)."""
    return dataclasses.replace(get_accelerator(gpu_model), devices_per_node=gpu_per_node)


@functools.lru_cache(maxsize=64)
def plan_training(training: TrainingSpec, gpus: int, gpu_model: str, gpu_per_node: int) -> TrainingPlan:
    """Plan the run as ``ai-system plan --model ... --gpus N`` would (its flags, job and train command);
    raise ValueError when no layout fits the GPUs' memory."""
    flags = ["plan", "--model", training.model, "--seq", str(training.seq_len), "--global-batch",
             str(training.global_batch), "--precision", training.precision, "--gpu", gpu_model, "--gpus", str(gpus)]
    if training.layout is not None:
        flags += ["--layout", training.layout.label()]
    args = build_parser("plan").parse_args(flags)
    config = train_config(args, Layout()).model_config()
    job = Job(config, seq_len=args.seq, global_batch=args.global_batch, precision=PRECISIONS[args.precision])
    accelerator = node_accelerator(gpu_model, gpu_per_node)
    if training.layout is not None:
        result = estimate(job, training.layout, accelerator)
    else:
        ranked = search(job, accelerator, gpus)
        if not ranked:
            raise ValueError(f"no layout of the {training.model} model ({config.num_params() / 1e9:.3g}B parameters, "
                             f"seq {training.seq_len}, global batch {training.global_batch}) fits {gpus} x "
                             f"{gpu_model} in nodes of {gpu_per_node}; add training nodes or shrink the run")
        result = ranked[0]
    return TrainingPlan(result, summary_of(result, args), training.layout is None, train_config(args, result.layout))


def capacity_summary(system: DistributedAISystem, results_dir: str | Path | None = None) -> CapacitySummary:
    results = load_results(Path(results_dir) if results_dir is not None else default_results_dir())
    figures: list[Figure] = []
    notes: list[str] = []
    plan = None
    if system.training is not None:
        plan = plan_training(system.training, system.training_gpus, system.gpu_model, system.gpu_per_node)
        figures += _training_figures(system, plan)
        if not plan.estimate.fits():
            notes.append(f"the blueprint's layout needs {plan.estimate.memory.total / 1e9:.1f} GB per GPU, more than "
                         f"{USABLE_MEMORY:.0%} of a {system.gpu_model}'s memory: it will not run")
    if system.serving is not None:
        serving_figures, serving_notes = _serving_figures(system, results)
        figures += serving_figures
        notes += serving_notes
    if system.search is not None:
        search_figures, search_notes = _search_figures(system, results)
        figures += search_figures
        notes += search_notes
    if system.kv_store is not None:
        kv_figures, kv_notes = _kv_store_figures(system, results)
        figures += kv_figures
        notes += kv_notes
    return CapacitySummary(system.name, figures, notes, plan)


def _training_figures(system: DistributedAISystem, plan: TrainingPlan) -> list[Figure]:
    result, training = plan.estimate, system.training
    assert training is not None
    seconds = result.iteration_seconds
    basis = (f"capacity planner: {system.training_gpus} x {system.gpu_model} in nodes of {system.gpu_per_node}, "
             "matmuls at 50% of the datasheet's dense BF16 peak")
    return [
        Figure("training_iteration_seconds", seconds, "s", "projected", basis),
        Figure("training_samples_per_s", training.global_batch / seconds, "samples/s", "projected", basis),
        Figure("training_tokens_per_s", result.job.tokens_per_iteration / seconds, "tokens/s", "projected", basis),
        Figure("training_mfu", 100 * result.mfu, "%", "projected", basis),
        Figure("training_memory_per_gpu", result.memory.total / 1e9, "GB", "projected",
               f"{basis}; fits: {result.fits()} (limit {USABLE_MEMORY:.0%} of "
               f"{result.accelerator.memory_bytes / 1e9:.0f} GB)"),
    ]


def _newest(rows: list[Row]) -> Row | None:
    """The newest row, full-profile runs before quick ones."""
    return max(rows, key=lambda row: (row.run.profile == "full", row.run.datetime), default=None)


def _serving_figures(system: DistributedAISystem, results: Results) -> tuple[list[Figure], list[str]]:
    serving = system.serving
    assert serving is not None
    at_slo = [row for row in results.rows if row.metric.name == "serving_max_qps_at_slo"]
    family = system.gpu_model.split("-")[0]
    on_gpu = [row for row in at_slo if family in str((row.run.hardware.get("gpu") or {}).get("name", ""))]
    newest = _newest(on_gpu or at_slo)
    if newest is None:
        return [], ["no serving_max_qps_at_slo in the results: run `pytest benchmarks/test_serving_latency.py` "
                    "to measure one replica, then the summary projects the fleet"]
    run = newest.run
    in_run = [row for row in at_slo if row.run == run]
    best = max(in_run, key=lambda row: row.metric.value)
    batching = best.metric.params.get("batching")
    saturation = [row for row in results.rows if row.run == run and row.metric.name == "serving_saturation_throughput"
                  and row.metric.params.get("batching") == batching]
    where = f"{run.hardware_label}, run {run.name} ({run.short_commit}), {best.metric.scale}"
    replicas = system.max_replicas
    figures = [Figure("serving_replica_qps_at_slo", best.metric.value, "req/s", "measured",
                      f"{where}; {batching} batching, p99 <= {best.metric.params.get('slo_ms')} ms")]
    fleet_basis = f"{FLEET_MODEL}; {replicas} replicas; per-replica rate measured on {where}"
    figures.append(Figure("serving_fleet_qps_at_slo", replicas * best.metric.value, "req/s", "projected", fleet_basis))
    if saturation:
        rate = saturation[0].metric.value
        figures.append(Figure("serving_replica_saturation", rate, "req/s", "measured", f"{where}; {batching} batching"))
        figures.append(Figure("serving_fleet_saturation", replicas * rate, "req/s", "projected",
                              f"{fleet_basis}; no latency bound"))
    notes = []
    if not on_gpu:
        notes.append(f"serving was measured on {run.hardware_label}, not on {system.gpu_model}, with the model of "
                     f"'{best.metric.scale}', not {serving.model}: the serving figures show the method, not this "
                     f"fleet; measure on the target GPU (make bench PROFILE=gpu) for its capacity")
    if best.metric.params.get("slo_ms") != serving.slo_p99_ms:
        notes.append(f"the measured SLO is p99 <= {best.metric.params.get('slo_ms')} ms; the blueprint's is "
                     f"{serving.slo_p99_ms} ms")
    return figures, notes


def _search_figures(system: DistributedAISystem, results: Results) -> tuple[list[Figure], list[str]]:
    search = system.search
    assert search is not None
    served = [row for row in results.rows if row.metric.name == "search_http_served_qps"]
    newest = _newest(served)
    if newest is None:
        return [], ["search not measured: no search_http_served_qps in the results; run "
                    "`pytest benchmarks/test_search_serving.py` to measure one replica, then the summary projects "
                    "the search fleet"]
    run = newest.run
    p99 = {row.metric.params.get("offered_qps"): row.metric.value for row in results.rows
           if row.run == run and row.metric.name == "search_http_p99_ms"}
    within = [row for row in served if row.run == run
              and p99.get(row.metric.params.get("offered_qps"), float("inf")) <= search.slo_p99_ms]
    if not within:
        return [], [f"search not measured within its SLO: no load in run {run.name} kept p99 <= "
                    f"{search.slo_p99_ms:g} ms"]
    best = max(within, key=lambda row: row.metric.value)
    where = f"{run.hardware_label}, run {run.name} ({run.short_commit}), {best.metric.scale}"
    replicas = system.search_max_replicas
    figures = [
        Figure("search_replica_qps_at_slo", best.metric.value, "req/s", "measured",
               f"{where}; p99 {p99[best.metric.params.get('offered_qps')]:.1f} ms <= {search.slo_p99_ms:g} ms"),
        Figure("search_fleet_qps_at_slo", replicas * best.metric.value, "req/s", "projected",
               f"{FLEET_MODEL}; {replicas} replicas; per-replica rate measured on {where}"),
    ]
    notes = []
    if search.device == "cuda" and not run.hardware.get("gpu"):
        notes.append(f"search was measured on {run.hardware_label} (CPU), with {best.metric.scale}; the blueprint "
                     f"serves {search.index} of {search.vectors:,} x {search.dim} on {system.gpu_model}: the search "
                     "figures show the method, not this fleet")
    return figures, notes


def _kv_store_figures(system: DistributedAISystem, results: Results) -> tuple[list[Figure], list[str]]:
    store = system.kv_store
    assert store is not None
    names = ("sizing_redis_bytes_per_row", "sizing_redis_rows_per_s_per_shard", "sizing_1b_redis_nodes")
    measured = {name: _newest([row for row in results.rows if row.metric.name == name]) for name in names}
    bytes_row, rate_row, sizing_row = measured.values()
    if bytes_row is None or rate_row is None:
        return [], ["no measured Redis row size and rate in the results: run "
                    "`pytest benchmarks/test_recommender_lookup.py` for the KV-store figures"]
    headroom = 0.7
    if sizing_row is not None and sizing_row.metric.projection is not None:
        headroom = float(sizing_row.metric.projection.inputs.get("memory_headroom", headroom))
    run = bytes_row.run
    where = f"{run.hardware_label}, run {run.name}, {bytes_row.metric.scale or 'rows of dim 64'}"
    per_row = bytes_row.metric.value
    rate = rate_row.metric.value * (1e6 if rate_row.metric.unit.startswith("M") else 1.0)
    rows = store.shards * store.memory_gib * GIB * headroom / per_row
    return [
        Figure("kv_store_bytes_per_row", per_row, "bytes", "measured", where),
        Figure("kv_store_rows", rows, "rows", "projected",
               f"{store.shards} shards x {store.memory_gib} GiB x {headroom:.0%} usable / measured bytes per row"),
        Figure("kv_store_rows_per_s", store.shards * rate, "rows/s", "projected",
               f"{store.shards} shards x measured rows/s of one shard ({where})"),
    ], []
