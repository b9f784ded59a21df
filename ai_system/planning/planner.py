"""How a transformer training run lays out over GPUs: memory, FLOPs, communication, time, MFU.

Everything here is arithmetic on the model shape, so it plans a 1T-parameter run as easily as the
toy models the project measures; ``docs/systems/capacity-planner.md`` derives each formula and
cites its source. Conventions: b = micro-batch (sequences), s = sequence length, d = model width,
f = SwiGLU width, a = heads, V = vocabulary, L = layers, t/p/n = tensor/pipeline/data-parallel
sizes, m = micro-batches per step, e = bytes per activation element.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass, field, replace

from ai_system.distributed.layout import RECOMPUTE, ZERO_STAGES, Layout
from ai_system.distributed.pipeline import bubble_fraction
from ai_system.models.config import ModelConfig
from ai_system.planning.accelerators import Accelerator
from ai_system.planning.calibration import calibrated_time_model
from ai_system.planning.time_model import (
    TRAINER,
    Implementation,
    Recomputation,
    TimeModel,
    iteration_seconds,
    stage_layer_counts,
)

USABLE_MEMORY = 0.9
FP32_BYTES = 4


@dataclass(frozen=True)
class Precision:
    """Bytes per parameter for weights, gradients and optimizer state, and per activation element.

    bf16-mixed is the ZeRO paper's accounting (Rajbhandari et al., 2020, §3.1): 2 + 2 bytes of bf16
    weights and gradients, 12 of fp32 master weights and Adam moments. fp32 Adam keeps 8 (m, v).
    """

    name: str
    param_bytes: int
    grad_bytes: int
    optimizer_bytes: int
    activation_bytes: int


PRECISIONS: dict[str, Precision] = {
    "bf16-mixed": Precision("bf16-mixed", param_bytes=2, grad_bytes=2, optimizer_bytes=12, activation_bytes=2),
    "fp32": Precision("fp32", param_bytes=4, grad_bytes=4, optimizer_bytes=8, activation_bytes=4),
}


@dataclass(frozen=True)
class Job:
    """The training job: model shape, sequence length, global batch in sequences, precision."""

    config: ModelConfig
    seq_len: int
    global_batch: int
    precision: Precision = PRECISIONS["bf16-mixed"]

    def __post_init__(self) -> None:
        if self.seq_len <= 0 or self.global_batch <= 0:
            raise ValueError(f"seq_len and global_batch must be positive, got {self.seq_len}, {self.global_batch}")

    @property
    def tokens_per_iteration(self) -> int:
        return self.seq_len * self.global_batch


@dataclass(frozen=True)
class Memory:
    """Bytes per GPU on its most loaded pipeline stage, by component."""

    parameters: float
    gradients: float
    optimizer: float
    activations: float
    fsdp_buffers: float = 0.0

    @property
    def total(self) -> float:
        return self.parameters + self.gradients + self.optimizer + self.activations + self.fsdp_buffers


@dataclass(frozen=True)
class Estimate:
    """What the planner predicts for one job on one layout."""

    job: Job
    layout: Layout
    accelerator: Accelerator
    n_microbatches: int
    memory: Memory
    model_flops: float
    hardware_flops: float
    bubble: float
    seconds: dict[str, float] = field(default_factory=dict)
    time_model: TimeModel | None = None

    @property
    def iteration_seconds(self) -> float:
        return sum(self.seconds.values())

    @property
    def mfu(self) -> float:
        """Model FLOPs (no recomputation) per second over the peak of every GPU used (PaLM's MFU)."""
        return self.model_flops / (self.iteration_seconds * self.layout.world_size * self.accelerator.peak_flops)

    def fits(self, usable_memory: float = USABLE_MEMORY) -> bool:
        """Whether the memory fits ``usable_memory`` of the device; the rest covers what the model
        does not count: CUDA context, NCCL buffers, allocator fragmentation and transient tensors."""
        return self.memory.total <= usable_memory * self.accelerator.memory_bytes


@functools.cache
def layer_params(config: ModelConfig) -> int:
    """Parameters of one transformer block (attention, SwiGLU, two norms)."""
    return replace(config, n_layers=2).num_params() - replace(config, n_layers=1).num_params()


def layer_norm_params(config: ModelConfig) -> int:
    return 2 * config.dim


def layer_activation_bytes(config: ModelConfig, tokens: int, tp: int, sequence_parallel: bool,
                           recompute: str, element_bytes: int) -> float:
    """Bytes one block keeps for backward for ``tokens`` = b·s tokens, counted from its autograd graph.

    Per token, with d_n = d/t under sequence parallelism (else d), e = element bytes:
    two RMSNorms keep an fp32 input, the normalized values and the output the projections read
    (gathered to full d): 2·(4·d_n + e·d_n + e·d) plus fp32 rsqrt 2·4·d_n/d; attention keeps q, k, v
    (GQA heads already repeated) and its output, 4·e·d/t, plus fp32 log-sum-exp 4·a/t; SwiGLU keeps
    w1, w3, silu and product outputs, 4·e·f/t. Selective recomputation (the trainer's op-level
    policy, ``ai_system.distributed.parallelize``) keeps the block input e·d_n, every matmul output
    (q, k, v and w1, w3 sharded over t; wo and w2 before their reduction, e·d each) and attention's
    output with its log-sum-exp; full recomputation keeps the block input, e·d_n.
    """
    d, f, a = config.dim, config.hidden_dim, config.n_heads
    kv = config.kv_heads * config.head_dim
    e = element_bytes
    d_n = d / tp if sequence_parallel else d
    if recompute == "full":
        return tokens * e * d_n
    if recompute == "selective":
        return tokens * (e * d_n + e * (2 * d + 2 * kv + 2 * f) / tp + 2 * e * d + FP32_BYTES * a / tp)
    norms = 2 * (FP32_BYTES * d_n + e * d_n + e * d) + 2 * FP32_BYTES * d_n / d
    attention = 4 * e * d / tp + FP32_BYTES * a / tp
    mlp = 4 * e * f / tp
    return tokens * (norms + attention + mlp)


def head_activation_bytes(config: ModelConfig, tokens: int, tp: int, sequence_parallel: bool,
                          element_bytes: int, vocab_parallel: bool = True) -> float:
    """Final norm, logits (split over t when vocabulary-parallel) and the fp32 log-softmax the loss keeps."""
    e, d = element_bytes, config.dim
    d_n = d / tp if sequence_parallel else d
    vocab = config.vocab_size / tp if vocab_parallel else config.vocab_size
    upcast = FP32_BYTES if e < FP32_BYTES else 0
    return tokens * (FP32_BYTES * d_n + e * d_n + e * d + vocab * (e + upcast + FP32_BYTES))


def in_flight_microbatches(layout: Layout, n_microbatches: int, first_stage: bool) -> float:
    """Micro-batches whose activations a stage holds at once (Narayanan et al., 2021, §2.2)."""
    if layout.pp == 1 or layout.schedule == "gpipe":
        return n_microbatches if layout.pp > 1 else 1
    if not first_stage:
        return 1
    warmup = min(n_microbatches, layout.pp)
    if layout.schedule == "interleaved-1f1b":
        return warmup * (1 + (layout.pp - 1) / (layout.pp * layout.virtual_stages))
    return warmup


def _stage_memory(job: Job, layout: Layout, n_microbatches: int, first_stage: bool, sequence_parallel: bool,
                  score_bytes: float) -> Memory:
    config, precision = job.config, job.precision
    first_layers, last_layers = stage_layer_counts(config.n_layers, layout.pp)
    has_embedding, has_head = first_stage, (not first_stage) or layout.pp == 1
    layers = first_layers if first_stage else last_layers
    sharded = layers * (layer_params(config) - layer_norm_params(config))
    replicated = layers * layer_norm_params(config)
    if has_embedding:
        sharded += config.vocab_size * config.dim
    if has_head:
        sharded += 0 if config.tie_embeddings else config.vocab_size * config.dim
        replicated += config.dim
    local = sharded / layout.tp + replicated
    dp = layout.dp
    tokens = job.global_batch // (dp * n_microbatches) * job.seq_len
    sp = sequence_parallel
    in_flight = in_flight_microbatches(layout, n_microbatches, first_stage)
    per_layer = (layer_activation_bytes(config, tokens, layout.tp, sp, layout.recompute, precision.activation_bytes)
                 + tokens * score_bytes)
    activations = layers * per_layer * in_flight
    if layout.recompute != "none":
        activations += layer_activation_bytes(config, tokens, layout.tp, sp, "none", precision.activation_bytes)
    if has_head:
        head_in_flight = n_microbatches if layout.schedule == "gpipe" and layout.pp > 1 else 1
        activations += head_in_flight * head_activation_bytes(
            config, tokens, layout.tp, sp, precision.activation_bytes, layout.uses_vocab_parallel_loss)
    fsdp_buffers = 0.0
    if layout.zero == 3 and dp > 1:
        unsharded_layer = layer_params(config) / layout.tp
        fsdp_buffers = unsharded_layer * (precision.param_bytes + precision.grad_bytes)
    return Memory(
        parameters=local * precision.param_bytes / (dp if layout.zero >= 3 else 1),
        gradients=local * precision.grad_bytes / (dp if layout.zero >= 2 else 1),
        optimizer=local * precision.optimizer_bytes / (dp if layout.zero >= 2 else 1),
        activations=activations,
        fsdp_buffers=fsdp_buffers,
    )


def memory_per_gpu(job: Job, layout: Layout, n_microbatches: int, implementation: Implementation = TRAINER) -> Memory:
    """Memory of the most loaded stage: the first (most in-flight activations) or the last (the head).

    ``implementation`` says where other software keeps more or less: sequence parallelism composed
    with pipelines, and the s×s attention scores a materializing attention stores for backward
    unless it recomputes them, 5·a·s/t bytes per token (the 16-bit scores, their softmax and the
    dropout mask: Korthikanti et al., 2022, §4.1)."""
    sp = implementation.sequence_parallel(layout)
    score_bytes = 0.0
    if implementation.attention == "materialized" and implementation.recompute(layout).attention < 1:
        score_bytes = (5 if implementation.dropout else 4) * job.config.n_heads * job.seq_len / layout.tp
    stages = [_stage_memory(job, layout, n_microbatches, True, sp, score_bytes)]
    if layout.pp > 1:
        stages.append(_stage_memory(job, layout, n_microbatches, False, sp, score_bytes))
    return max(stages, key=lambda memory: memory.total)


def recompute_flops_per_token(config: ModelConfig, seq_len: int, recomputation: Recomputation) -> float:
    """Extra forward FLOPs per token the backward reruns: a share of each block's matmuls (2 FLOPs per
    weight per token; full recomputation reruns all, 2·N_layers) and of its attention scores
    (4·d·s per layer). Elementwise work is not counted as FLOPs."""
    matmul_weights = layer_params(config) - layer_norm_params(config)
    return config.n_layers * (recomputation.matmuls * 2.0 * matmul_weights
                              + recomputation.attention * 4.0 * config.dim * seq_len)


def time_model_for(accelerator: Accelerator, compute_efficiency: float | None = None) -> TimeModel:
    """The flat model when ``compute_efficiency`` is given, else the accelerator's calibration."""
    if compute_efficiency is not None:
        return TimeModel.flat_efficiency(compute_efficiency)
    return calibrated_time_model(accelerator)


def estimate(job: Job, layout: Layout, accelerator: Accelerator, compute_efficiency: float | None = None,
             dp_overlap: float | None = None, time_model: TimeModel | None = None,
             implementation: Implementation = TRAINER) -> Estimate:
    """Predict memory, FLOPs, communication and iteration time of ``job`` on ``layout``.

    Time comes from ``time_model`` if given, else from the flat model at ``compute_efficiency`` if
    given (every FLOP at that fraction of ``accelerator.peak_flops``, ``dp_overlap`` of the
    data-parallel communication hidden), else from the accelerator's calibrated constants
    (``ai_system/planning/time_model.py``). ``implementation`` describes software other than this
    trainer, for holding the model against published runs; ``search`` never sets it.
    Ranks are ordered tp innermost, then dp, then pp (``Layout.build_mesh``).
    """
    model = time_model or time_model_for(accelerator, compute_efficiency)
    if dp_overlap is not None and not model.flat:
        raise ValueError(f"dp_overlap={dp_overlap} applies to the flat model (compute_efficiency); the calibrated "
                         "model derives overlap from when each block's collectives run")
    if dp_overlap is not None and not 0 <= dp_overlap <= 1:
        raise ValueError(f"dp_overlap must be in [0, 1], got {dp_overlap}")
    if not model.flat and accelerator.memory_bandwidth is None:
        raise ValueError(f"accelerator {accelerator.name!r} has no memory bandwidth, which the calibrated time "
                         "model needs; give it one or plan with compute_efficiency (the flat model)")
    config, precision = job.config, job.precision
    layout.check(config, job.global_batch)
    m = layout.microbatches(job.global_batch)
    tokens = job.tokens_per_iteration
    model_per_token = config.train_flops_per_token(job.seq_len)
    extra_per_token = recompute_flops_per_token(config, job.seq_len, implementation.recompute(layout))
    seconds = iteration_seconds(config, layout, job.global_batch, job.seq_len, accelerator, model, implementation,
                                precision.activation_bytes, precision.param_bytes, dp_overlap or 0.0)
    return Estimate(
        job=job, layout=layout, accelerator=accelerator, n_microbatches=m,
        memory=memory_per_gpu(job, layout, m, implementation),
        model_flops=model_per_token * tokens, hardware_flops=(model_per_token + extra_per_token) * tokens,
        bubble=bubble_fraction(layout.pp, m, layout.virtual_stages), seconds=seconds, time_model=model,
    )


MAX_VIRTUAL_STAGES = 8


def _divisors(count: int, limit: int) -> list[int]:
    """Divisors of ``count`` up to ``limit`` (none of 0), in O(sqrt(count)) steps: GPU counts can be huge."""
    if count <= 0:
        return []
    small = [d for d in range(1, math.isqrt(count) + 1) if count % d == 0]
    return [d for d in small + [count // d for d in reversed(small) if d * d != count] if d <= limit]


def candidate_layouts(job: Job, accelerator: Accelerator, n_gpus: int) -> list[Layout]:
    """Every tp × pp × dp × micro-batch × ZeRO × recompute × schedule layout of ``n_gpus`` the job admits.

    TP stays within a node (powers of two up to its GPU count); PP takes any stage count up to the
    layers (uneven stages give the remainder to the earliest); micro-batches divide each replica's
    batch; interleaving tries every count of stages per rank up to ``MAX_VIRTUAL_STAGES`` that
    splits the layers evenly; a layout is kept if ``Layout.check`` accepts it for this model and
    batch, so every candidate is one the trainer runs.
    """
    layouts = []
    n_layers = job.config.n_layers
    per_node = accelerator.devices_per_node
    for tp in (1 << i for i in range(per_node.bit_length()) if 1 << i <= per_node):
        for pp in _divisors(n_gpus // tp if n_gpus % tp == 0 else 0, n_layers):
            dp = n_gpus // (tp * pp)
            if job.global_batch % dp:
                continue
            schedules = [("1f1b", 1)] + [("interleaved-1f1b", v) for v in range(2, MAX_VIRTUAL_STAGES + 1)
                                          if pp > 1 and n_layers % (pp * v) == 0]
            for micro_batch, zero, recompute, (schedule, virtual) in itertools.product(
                    _divisors(job.global_batch // dp, job.global_batch), ZERO_STAGES if dp > 1 else (3,), RECOMPUTE,
                    schedules):
                layout = Layout(dp=dp, tp=tp, pp=pp, zero=zero, micro_batch=micro_batch, schedule=schedule,
                                virtual_stages=virtual, recompute=recompute)
                try:
                    layout.check(job.config, job.global_batch)
                except ValueError:
                    continue
                layouts.append(layout)
    return layouts


def ranked(results: list[Estimate]) -> list[Estimate]:
    """Fastest first; among equally fast, the simplest (least recomputation, fewest micro-batches),
    then the one with the least memory."""
    return sorted(results, key=lambda result: (result.iteration_seconds, RECOMPUTE.index(result.layout.recompute),
                                               result.n_microbatches, result.memory.total))


def search(job: Job, accelerator: Accelerator, n_gpus: int, compute_efficiency: float | None = None,
           dp_overlap: float | None = None, usable_memory: float = USABLE_MEMORY,
           time_model: TimeModel | None = None) -> list[Estimate]:
    """Layouts of this trainer that fit (``Estimate.fits``), ranked (``ranked``). Time as ``estimate``
    takes it: ``time_model``, else the flat model at ``compute_efficiency``, else the calibration."""
    if n_gpus < 1:
        raise ValueError(f"n_gpus must be >= 1, got {n_gpus}")
    if not 0 < usable_memory <= 1:
        raise ValueError(f"usable_memory must be in (0, 1], got {usable_memory}")
    model = time_model or time_model_for(accelerator, compute_efficiency)
    fitting = []
    for layout in candidate_layouts(job, accelerator, n_gpus):
        result = estimate(job, layout, accelerator, dp_overlap=dp_overlap, time_model=model)
        if result.fits(usable_memory):
            fitting.append(result)
    return ranked(fitting)


def run_summary(result: Estimate, training_tokens: float | None = None,
                price_per_gpu_hour: float | None = None) -> dict[str, float | int | str]:
    """The figures a plan reports, flat, in human units (GB, seconds, days, GPU-hours)."""
    summary: dict[str, float | int | str] = {
        "layout": result.layout.label(),
        "gpus": result.layout.world_size,
        "params_billion": result.job.config.num_params() / 1e9,
        "microbatches": result.n_microbatches,
        "memory_gb": result.memory.total / 1e9,
        "parameters_gb": result.memory.parameters / 1e9,
        "gradients_gb": result.memory.gradients / 1e9,
        "optimizer_gb": result.memory.optimizer / 1e9,
        "activations_gb": result.memory.activations / 1e9,
        "fsdp_buffers_gb": result.memory.fsdp_buffers / 1e9,
        "bubble": result.bubble,
        "model_pflop_per_iteration": result.model_flops / 1e15,
        "hardware_pflop_per_iteration": result.hardware_flops / 1e15,
        **{f"{name}_seconds": value for name, value in result.seconds.items()},
        "iteration_seconds": result.iteration_seconds,
        "mfu": result.mfu,
    }
    if training_tokens is not None:
        iterations = training_tokens / result.job.tokens_per_iteration
        seconds = iterations * result.iteration_seconds
        summary["training_days"] = seconds / 86400
        summary["gpu_hours"] = seconds * result.layout.world_size / 3600
        if price_per_gpu_hour is not None:
            summary["cost_usd"] = summary["gpu_hours"] * price_per_gpu_hour
    return summary
