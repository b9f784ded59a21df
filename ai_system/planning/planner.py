"""How a transformer training run lays out over GPUs: memory, FLOPs, communication, time, MFU.

Everything here is arithmetic on the model shape, so it plans a 1T-parameter run as easily as the
toy models the project measures; ``docs/systems/capacity-planner.md`` derives each formula and
cites its source. Conventions: b = micro-batch (sequences), s = sequence length, d = model width,
f = SwiGLU width, a = heads, V = vocabulary, L = layers, t/p/n = tensor/pipeline/data-parallel
sizes, m = micro-batches per step, e = bytes per activation element.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field, replace

from ai_system.distributed.layout import RECOMPUTE, ZERO_STAGES, Layout
from ai_system.distributed.pipeline import bubble_fraction
from ai_system.models.config import ModelConfig
from ai_system.planning.accelerators import Accelerator

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
    communication_bytes: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

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


def layer_params(config: ModelConfig) -> int:
    """Parameters of one transformer block (attention, SwiGLU, two norms)."""
    return replace(config, n_layers=2).num_params() - replace(config, n_layers=1).num_params()


def layer_norm_params(config: ModelConfig) -> int:
    return 2 * config.dim


def stage_layer_counts(n_layers: int, pp: int) -> tuple[int, int]:
    """Layers on the first and on the last pipeline stage (earlier stages take the remainder)."""
    if pp > n_layers:
        raise ValueError(f"pp={pp} exceeds the number of layers {n_layers}")
    return math.ceil(n_layers / pp), n_layers // pp


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


def _stage_memory(job: Job, layout: Layout, n_microbatches: int, first_stage: bool) -> Memory:
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
    sp = layout.uses_sequence_parallel
    in_flight = in_flight_microbatches(layout, n_microbatches, first_stage)
    per_layer = layer_activation_bytes(config, tokens, layout.tp, sp, layout.recompute, precision.activation_bytes)
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


def memory_per_gpu(job: Job, layout: Layout, n_microbatches: int) -> Memory:
    """Memory of the most loaded stage: the first (most in-flight activations) or the last (the head)."""
    stages = [_stage_memory(job, layout, n_microbatches, first_stage=True)]
    if layout.pp > 1:
        stages.append(_stage_memory(job, layout, n_microbatches, first_stage=False))
    return max(stages, key=lambda memory: memory.total)


def recompute_flops_per_token(config: ModelConfig, seq_len: int, recompute: str) -> float:
    """Extra forward FLOPs per token: full reruns each block's forward (2·N_layers + 4·L·d·s); the
    selective policy keeps every matmul and attention output, so it reruns only elementwise work
    (norms, rotary, gating), which is not counted."""
    if recompute == "full":
        return 2.0 * config.n_layers * layer_params(config) + 4.0 * config.n_layers * config.dim * seq_len
    return 0.0


def _link(group_span: int, accelerator: Accelerator) -> float:
    """Bandwidth of a collective whose ranks span ``group_span`` consecutive GPUs."""
    within_node = group_span <= accelerator.devices_per_node
    return accelerator.intra_node_bandwidth if within_node else accelerator.inter_node_bandwidth


def estimate(job: Job, layout: Layout, accelerator: Accelerator, compute_efficiency: float = 0.5,
             dp_overlap: float = 0.0) -> Estimate:
    """Predict memory, FLOPs, communication and iteration time of ``job`` on ``layout``.

    ``compute_efficiency`` is the fraction of ``accelerator.peak_flops`` the matmuls reach;
    ``dp_overlap`` the fraction of data-parallel communication hidden behind backward compute.
    Ranks are ordered tp innermost, then dp, then pp (``Layout.build_mesh``).
    """
    if not 0 < compute_efficiency <= 1:
        raise ValueError(f"compute_efficiency must be in (0, 1], got {compute_efficiency}")
    if not 0 <= dp_overlap <= 1:
        raise ValueError(f"dp_overlap must be in [0, 1], got {dp_overlap}")
    config, precision = job.config, job.precision
    layout.check(config, job.global_batch)
    m = layout.microbatches(job.global_batch)
    first_layers, last_layers = stage_layer_counts(config.n_layers, layout.pp)

    model_per_token = config.train_flops_per_token(job.seq_len)
    extra_per_token = recompute_flops_per_token(config, job.seq_len, layout.recompute)
    layer_per_token = (6.0 * layer_params(config) + 12.0 * config.dim * job.seq_len
                       + extra_per_token / config.n_layers)
    head_per_token = 6.0 * config.vocab_size * config.dim
    if layout.pp == 1:
        stage_per_token = config.n_layers * layer_per_token + head_per_token
    else:
        stage_per_token = max(first_layers * layer_per_token, last_layers * layer_per_token + head_per_token)
    tokens_mb = job.global_batch // (layout.dp * m) * job.seq_len
    e = precision.activation_bytes
    compute_mb = tokens_mb * stage_per_token / layout.tp / (accelerator.peak_flops * compute_efficiency)

    tp_collectives = 4 + (2 if layout.recompute == "full" else 0)
    tp_bytes_mb = first_layers * tp_collectives * 2 * (layout.tp - 1) / layout.tp * tokens_mb * config.dim * e
    tp_mb = tp_bytes_mb / _link(layout.tp, accelerator)
    pp_bytes_mb = 2 * tokens_mb * config.dim * e / layout.tp if layout.pp > 1 else 0.0
    pp_mb = pp_bytes_mb / _link(layout.tp * layout.dp * layout.pp, accelerator)

    memory = memory_per_gpu(job, layout, m)
    local_params = (memory.parameters / precision.param_bytes) * (layout.dp if layout.zero >= 3 else 1)
    ring = (layout.dp - 1) / layout.dp
    grads = local_params * precision.grad_bytes
    if layout.zero == 3:
        dp_bytes = ring * (2 * local_params * precision.param_bytes + grads)
    elif layout.zero == 2:
        dp_bytes = ring * (grads + local_params * precision.param_bytes)
    else:
        dp_bytes = 2 * ring * grads
    dp_seconds = dp_bytes / _link(layout.tp * layout.dp, accelerator) * (1 - dp_overlap)

    per_mb = compute_mb + tp_mb + pp_mb
    bubble = bubble_fraction(layout.pp, m, layout.virtual_stages)
    idle_mb = (layout.pp - 1) / layout.virtual_stages
    tokens = job.tokens_per_iteration
    return Estimate(
        job=job, layout=layout, accelerator=accelerator, n_microbatches=m, memory=memory,
        model_flops=model_per_token * tokens, hardware_flops=(model_per_token + extra_per_token) * tokens,
        bubble=bubble,
        communication_bytes={"tp": tp_bytes_mb * m, "pp": pp_bytes_mb * m, "dp": dp_bytes},
        seconds={"compute": compute_mb * m, "tp": tp_mb * m, "pp": pp_mb * m, "bubble": idle_mb * per_mb,
                 "dp": dp_seconds},
    )


def _divisors(number: int) -> list[int]:
    """Divisors of ``number`` in increasing order, in O(sqrt(number)) steps."""
    small = [d for d in range(1, math.isqrt(number) + 1) if number % d == 0]
    return small + [number // d for d in reversed(small) if d * d != number]


def _powers_of_two(limit: int) -> list[int]:
    return [1 << i for i in range(limit.bit_length()) if (1 << i) <= limit]


def candidate_layouts(job: Job, accelerator: Accelerator, n_gpus: int) -> list[Layout]:
    """Every tp × pp × dp × micro-batch × ZeRO × recompute layout of ``n_gpus`` the job admits.

    TP stays within a node (powers of two up to its GPU count); PP divides the layers and the GPUs; interleaving
    (2 virtual stages) is tried with every pipeline; a layout is kept if ``Layout.check`` accepts it
    for this model and batch, so every candidate is one the trainer runs.
    """
    layouts = []
    for tp in _powers_of_two(accelerator.devices_per_node):
        for pp in _divisors(math.gcd(job.config.n_layers, n_gpus)):
            if n_gpus % (tp * pp):
                continue
            dp = n_gpus // (tp * pp)
            if job.global_batch % dp:
                continue
            for micro_batch in _powers_of_two(job.global_batch // dp):
                schedules = [("1f1b", 1)] + ([("interleaved-1f1b", 2)] if pp > 1 else [])
                for zero, recompute, (schedule, virtual) in itertools.product(ZERO_STAGES if dp > 1 else (3,),
                                                                              RECOMPUTE, schedules):
                    layout = Layout(dp=dp, tp=tp, pp=pp, zero=zero, micro_batch=micro_batch, schedule=schedule,
                                    virtual_stages=virtual, recompute=recompute)
                    try:
                        layout.check(job.config, job.global_batch)
                    except ValueError:
                        continue
                    layouts.append(layout)
    return layouts


def search(job: Job, accelerator: Accelerator, n_gpus: int, compute_efficiency: float = 0.5,
           dp_overlap: float = 0.0, usable_memory: float = USABLE_MEMORY) -> list[Estimate]:
    """Layouts that fit (``Estimate.fits``), fastest first; among equally fast ones the simplest (least
    recomputation, fewest micro-batches), then the one with the least memory."""
    if n_gpus < 1:
        raise ValueError(f"n_gpus must be >= 1, got {n_gpus}")
    if not 0 < usable_memory <= 1:
        raise ValueError(f"usable_memory must be in (0, 1], got {usable_memory}")
    fitting = []
    for layout in candidate_layouts(job, accelerator, n_gpus):
        result = estimate(job, layout, accelerator, compute_efficiency, dp_overlap)
        if result.fits(usable_memory):
            fitting.append(result)
    return sorted(fitting, key=lambda result: (result.iteration_seconds, RECOMPUTE.index(result.layout.recompute),
                                               result.n_microbatches, result.memory.total))


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
        **{f"{name}_comm_gb": value / 1e9 for name, value in result.communication_bytes.items()},
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
