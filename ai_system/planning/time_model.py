"""How long one training iteration takes: kernels, collectives, pipeline, optimizer, by their shapes.

The planner's first time model charged every FLOP at one flat fraction of the datasheet peak. This
one prices each piece of work by what bounds it on the device, with one set of constants per GPU
type (``TimeModel``), so a layout that runs small, communication-heavy or memory-bound kernels
pays for it:

* every GEMM of a block (forward, and the data- and weight-gradient GEMMs of backward) on a
  roofline: the longer of its FLOPs at the sustained matmul rate and its operand bytes at HBM speed;
* the attention core as fused (flash) attention at its own sustained rate, or, for frameworks that
  materialize the s×s scores, as two batched GEMMs plus the softmax/dropout traffic on the scores;
* the elementwise work (norms, rotary, gating, residuals, dropout) as HBM traffic;
* every collective as a ring: one latency per step plus its bus volume at the link's sustained
  bandwidth (Patarasuk and Yuan, 2009; NCCL's "bus bandwidth");
* data-parallel communication exposed only where it outlasts the compute it overlaps;
* the optimizer step as the HBM traffic of Adam over the local shard.

``docs/systems/capacity-planner.md`` derives each term and cites its source;
``ai_system/planning/validation.py`` fits the constants on published runs and holds the model
against them. Conventions as in ``planner.py``: T tokens per micro-batch, d width, f SwiGLU width,
kv the key/value width, t/p/n tensor/pipeline/data-parallel sizes, e bytes per activation element.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from ai_system.distributed.layout import Layout
from ai_system.models.config import ModelConfig
from ai_system.planning.accelerators import Accelerator

FP32_BYTES = 4
ADAM_BYTES_PER_PARAM = 34
"""HBM bytes per parameter of one mixed-precision Adam step: read and write the fp32 master weight and
both moments (24), read the fp32 gradient (4) for the update and once more for the norm used by
clipping (4), write the 16-bit weight (2)."""
FLASH_BACKWARD_OVER_FORWARD = 2.5
"""FlashAttention's backward runs 2.5× its forward FLOPs (it recomputes the scores; Dao, 2023, §3.1)."""
SCORE_BYTES = {"softmax": 4, "dropout": 5}
"""Forward HBM bytes per 16-bit attention score: a fused scale-mask-softmax reads and writes it (4), a
dropout reads it and writes it with its 1-byte mask (5). Backward moves 1.5× as much (it reads the
output and its gradient and writes the input's gradient)."""
Attention = Literal["flash", "materialized"]
Elementwise = Literal["eager", "fused"]


@dataclass(frozen=True)
class Recomputation:
    """Which forward work the backward pass reruns, as fractions of each kind.

    ``matmuls``: of the block's GEMM FLOPs; ``attention``: of the attention core (flash kernel, or
    the score GEMMs and their softmax/dropout traffic); ``elementwise``: of the elementwise traffic.
    """

    matmuls: float = 0.0
    attention: float = 0.0
    elementwise: float = 0.0

    def __post_init__(self) -> None:
        for name in ("matmuls", "attention", "elementwise"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"Recomputation.{name}={getattr(self, name)!r}: expected a fraction in [0, 1]")


LAYOUT_RECOMPUTATION = {
    "none": Recomputation(),
    "selective": Recomputation(elementwise=1.0),
    "full": Recomputation(matmuls=1.0, attention=1.0, elementwise=1.0),
}
"""What the trainer reruns for each ``Layout.recompute``: its selective policy keeps every matmul and
attention output (``ai_system.distributed.parallelize``) and reruns the elementwise rest."""


@dataclass(frozen=True)
class Implementation:
    """What the software running a layout does that changes its time, beyond the ``Layout`` itself.

    The defaults are this project's trainer (FSDP2, flash attention through SDPA, eager elementwise
    ops, gradients reduced in fp32, sequence parallelism only without pipelines, a selective
    recomputation that reruns the elementwise work only); ``search`` only ever plans with them.
    Other values describe published runs of other frameworks for validation
    (``ai_system/planning/validation.py``), never a layout the trainer would run.
    """

    attention: Attention = "flash"
    elementwise: Elementwise = "eager"
    dropout: bool = False
    dp_overlap: bool = True
    sequence_parallel_with_pipeline: bool = False
    pipeline_scatter_gather: bool = False
    selective: Recomputation = Recomputation(elementwise=1.0)
    grad_reduce_bytes: int = FP32_BYTES

    def __post_init__(self) -> None:
        if self.attention not in ("flash", "materialized"):
            raise ValueError(f"Implementation.attention={self.attention!r}: expected 'flash' or 'materialized'")
        if self.elementwise not in ("eager", "fused"):
            raise ValueError(f"Implementation.elementwise={self.elementwise!r}: expected 'eager' or 'fused'")
        if self.grad_reduce_bytes not in (2, 4):
            raise ValueError(f"Implementation.grad_reduce_bytes={self.grad_reduce_bytes!r}: expected 2 or 4")

    def recompute(self, layout: Layout) -> Recomputation:
        """What this software reruns for the layout's policy; ``selective`` is its own selective policy."""
        return self.selective if layout.recompute == "selective" else LAYOUT_RECOMPUTATION[layout.recompute]

    def sequence_parallel(self, layout: Layout) -> bool:
        if self.sequence_parallel_with_pipeline:
            return layout.sequence_parallel and layout.tp > 1
        return layout.uses_sequence_parallel


TRAINER = Implementation()


@dataclass(frozen=True)
class TimeModel:
    """The constants of one GPU type; every other input is a datasheet figure of ``Accelerator``.

    ``matmul_efficiency``: fraction of the dense peak a large 16-bit GEMM sustains;
    ``attention_efficiency``: the same for fused attention, counted as FlashAttention counts
    (causal work only, backward 2.5× forward); ``memory_efficiency``: fraction of HBM bandwidth
    elementwise kernels reach; ``nvlink_efficiency`` / ``network_efficiency``: NCCL bus bandwidth
    over the nominal per-GPU link within / between nodes; ``nvlink_latency`` / ``network_latency``:
    seconds per ring step within / between nodes. ``flat`` marks the first model: every FLOP at
    ``matmul_efficiency``, no elementwise, latency or optimizer time, links at nominal speed.
    """

    matmul_efficiency: float
    attention_efficiency: float
    memory_efficiency: float
    nvlink_efficiency: float = 1.0
    network_efficiency: float = 1.0
    nvlink_latency: float = 0.0
    network_latency: float = 0.0
    flat: bool = False
    source: str = ""

    def __post_init__(self) -> None:
        for name in ("matmul_efficiency", "attention_efficiency", "memory_efficiency", "nvlink_efficiency",
                     "network_efficiency"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"TimeModel.{name}={getattr(self, name)!r}: expected a fraction in (0, 1]")
        for name in ("nvlink_latency", "network_latency"):
            if getattr(self, name) < 0:
                raise ValueError(f"TimeModel.{name}={getattr(self, name)!r}: expected seconds >= 0")

    @classmethod
    def flat_efficiency(cls, efficiency: float) -> TimeModel:
        """The first planner's model: one efficiency for every FLOP, bandwidth-only links."""
        if not 0 < efficiency <= 1:
            raise ValueError(f"compute_efficiency must be in (0, 1], got {efficiency}")
        return cls(efficiency, efficiency, 1.0, flat=True, source=f"flat efficiency {efficiency}")


# ---------------------------------------------------------------- kernels


def gemm_seconds(m: int, n: int, k: int, accelerator: Accelerator, model: TimeModel, element_bytes: int) -> float:
    """An (m×k)·(k×n) GEMM on a roofline: FLOPs at the sustained matmul rate or operand bytes at HBM speed."""
    compute = 2.0 * m * n * k / (accelerator.peak_flops * model.matmul_efficiency)
    if model.flat:
        return compute
    traffic = element_bytes * (m * k + k * n + m * n) / (accelerator.memory_bandwidth * model.memory_efficiency)
    return max(compute, traffic)


def gemm_training_seconds(m: int, n: int, k: int, accelerator: Accelerator, model: TimeModel,
                          element_bytes: int) -> tuple[float, float]:
    """(forward, backward) of a weight GEMM: backward runs the data gradient (m×n)·(n×k) and the
    weight gradient (k×m)·(m×n)."""
    forward = gemm_seconds(m, n, k, accelerator, model, element_bytes)
    backward = (gemm_seconds(m, k, n, accelerator, model, element_bytes)
                + gemm_seconds(k, n, m, accelerator, model, element_bytes))
    return forward, backward


def block_gemms(config: ModelConfig, tokens: int, tp: int) -> list[tuple[int, int, int]]:
    """(m, n, k) of one block's weight GEMMs on one tensor-parallel rank: q, k, v, output, w1 and w3, w2."""
    d, f = config.dim, config.hidden_dim
    kv = config.kv_heads * config.head_dim
    return [(tokens, d // tp, d), (tokens, kv // tp, d), (tokens, kv // tp, d), (tokens, d, d // tp),
            (tokens, f // tp, d), (tokens, f // tp, d), (tokens, d, f // tp)]


def attention_core_seconds(config: ModelConfig, batch: int, seq_len: int, tp: int, accelerator: Accelerator,
                           model: TimeModel, implementation: Implementation, element_bytes: int
                           ) -> tuple[float, float]:
    """(forward, backward) of softmax(QKᵀ)V for ``batch`` sequences on one tensor-parallel rank.

    Flash attention computes only the causal half and reruns the scores in backward; a materialized
    implementation runs QKᵀ and AV as batched GEMMs over all s² scores (the mask is applied after)
    and moves every 16-bit score through HBM for the softmax (and dropout).
    """
    heads = config.n_heads // tp
    head_dim = config.head_dim
    full_flops = 4.0 * batch * heads * seq_len * seq_len * head_dim
    if model.flat:
        forward = full_flops / (accelerator.peak_flops * model.matmul_efficiency)
        return forward, 2 * forward
    if implementation.attention == "flash":
        causal = full_flops * (seq_len + 1) / (2 * seq_len)
        forward = causal / (accelerator.peak_flops * model.attention_efficiency)
        return forward, FLASH_BACKWARD_OVER_FORWARD * forward
    scores = batch * heads
    qk_forward, qk_backward = (gemm_seconds(seq_len, seq_len, head_dim, accelerator, model, element_bytes),
                               2 * gemm_seconds(seq_len, head_dim, seq_len, accelerator, model, element_bytes))
    av_forward, av_backward = (gemm_seconds(seq_len, head_dim, seq_len, accelerator, model, element_bytes),
                               2 * gemm_seconds(seq_len, seq_len, head_dim, accelerator, model, element_bytes))
    per_score = SCORE_BYTES["softmax"] + (SCORE_BYTES["dropout"] if implementation.dropout else 0)
    traffic = scores * seq_len * seq_len * per_score / (accelerator.memory_bandwidth * model.memory_efficiency)
    return scores * (qk_forward + av_forward) + traffic, scores * (qk_backward + av_backward) + 1.5 * traffic


EAGER_BYTES_PER_ELEMENT = {"norm": (42, 96), "rotary": (50, 70), "gate": (10, 18), "residual": (6, 6)}
"""(forward, backward) HBM bytes per element of this repository's eager ops on 16-bit activations, as
``tests/planning/test_time_model.py`` counts them op by op: RMSNorm (two fp32 upcasts, square,
mean, scale, downcast, weight), rotary on q and k (upcast, four products, a sum and a difference,
stack, downcast), SwiGLU's gate (silu, product) and a residual add (its backward adds the
gradients of the two branches)."""
FUSED_BACKWARD_OVER_FORWARD = 2
"""A fused elementwise backward reads the saved inputs and the output gradient and writes the input
gradients: about twice its forward's traffic."""


def elementwise_bytes_per_token(config: ModelConfig, tp: int, sequence_parallel: bool,
                                implementation: Implementation, element_bytes: int) -> tuple[float, float]:
    """(forward, backward) HBM bytes per token of one block's elementwise work on one tensor-parallel
    rank: two norms and two residual adds over d_n (d/t under sequence parallelism), rotary over q
    and k, the SwiGLU gate over f/t, and dropout's mask where the model has it.

    Eager: ``EAGER_BYTES_PER_ELEMENT``. Fused (hand-written kernels or torch.compile): every fused
    region reads its inputs and writes its outputs once: a norm with its residual add reads two
    and writes one element of d_n, rotary rewrites q and k, the gate reads two and writes one
    element of f/t, a dropout reads one and writes one element and a mask byte.
    """
    e = element_bytes
    d, f = config.dim, config.hidden_dim
    kv = config.kv_heads * config.head_dim
    d_n = d / tp if sequence_parallel else d
    if implementation.elementwise == "fused":
        forward = 2 * 3 * e * d_n + 2 * e * (d + kv) / tp + 3 * e * f / tp
        if implementation.dropout:
            forward += 2 * (2 * e + 1) * d_n
        return forward, FUSED_BACKWARD_OVER_FORWARD * forward
    counts = {"norm": 2 * d_n, "rotary": (d + kv) / tp, "gate": f / tp, "residual": 2 * d_n}
    return tuple(sum(EAGER_BYTES_PER_ELEMENT[op][way] * count for op, count in counts.items()) for way in (0, 1))


# ---------------------------------------------------------------- collectives


def ring_seconds(kind: Literal["all_reduce", "all_gather", "reduce_scatter"], nbytes: float, ranks: int,
                 span: int, accelerator: Accelerator, model: TimeModel) -> float:
    """A ring collective of an ``nbytes`` buffer over ``ranks`` ranks that span ``span`` consecutive GPUs:
    2(k−1) steps for an all-reduce, k−1 otherwise, each a latency, plus the bus volume at the link's
    sustained bandwidth (NVLink within a node, the GPU's network link across nodes)."""
    if ranks <= 1 or nbytes <= 0:
        return 0.0
    within = span <= accelerator.devices_per_node
    if within:
        bandwidth, latency = accelerator.intra_node_bandwidth * model.nvlink_efficiency, model.nvlink_latency
    else:
        bandwidth, latency = accelerator.inter_node_bandwidth * model.network_efficiency, model.network_latency
    steps = 2 * (ranks - 1) if kind == "all_reduce" else ranks - 1
    volume = steps / ranks * nbytes
    return steps * latency + volume / bandwidth


def point_to_point_seconds(nbytes: float, within_node: bool, accelerator: Accelerator, model: TimeModel) -> float:
    if within_node:
        return model.nvlink_latency + nbytes / (accelerator.intra_node_bandwidth * model.nvlink_efficiency)
    return model.network_latency + nbytes / (accelerator.inter_node_bandwidth * model.network_efficiency)


# ---------------------------------------------------------------- one iteration


@dataclass(frozen=True)
class BlockWork:
    """Seconds of one micro-batch on one rank, by kind, split into forward and backward (which
    includes the recomputed forward). ``tp`` is TP communication left on the critical path."""

    gemm: tuple[float, float]
    attention: tuple[float, float]
    elementwise: tuple[float, float]
    tp: tuple[float, float]

    @property
    def forward(self) -> float:
        return self.gemm[0] + self.attention[0] + self.elementwise[0] + self.tp[0]

    @property
    def backward(self) -> float:
        return self.gemm[1] + self.attention[1] + self.elementwise[1] + self.tp[1]

    @property
    def total(self) -> float:
        return self.forward + self.backward

    def __add__(self, other: BlockWork) -> BlockWork:
        return BlockWork(*(tuple(a + b for a, b in zip(mine, theirs, strict=True))
                           for mine, theirs in zip(self.parts, other.parts, strict=True)))

    def __mul__(self, factor: float) -> BlockWork:
        return BlockWork(*(tuple(factor * value for value in part) for part in self.parts))

    @property
    def parts(self) -> tuple[tuple[float, float], ...]:
        return self.gemm, self.attention, self.elementwise, self.tp


def block_work(config: ModelConfig, layout: Layout, micro_batch: int, seq_len: int, accelerator: Accelerator,
               model: TimeModel, implementation: Implementation, element_bytes: int) -> BlockWork:
    """One transformer block, one micro-batch, one rank: GEMMs, attention core, elementwise traffic
    and TP collectives
    (two per pass: Shoeybi et al., 2019, §3; with SP each all-reduce becomes an all-gather and a
    reduce-scatter: Korthikanti et al., 2022, §4.2.2), with the recomputed forward in backward."""
    tokens = micro_batch * seq_len
    tp = layout.tp
    recompute = implementation.recompute(layout)
    gemm_forward = gemm_backward = 0.0
    for m, n, k in block_gemms(config, tokens, tp):
        forward, backward = gemm_training_seconds(m, n, k, accelerator, model, element_bytes)
        gemm_forward += forward
        gemm_backward += backward
    attention_forward, attention_backward = attention_core_seconds(
        config, micro_batch, seq_len, tp, accelerator, model, implementation, element_bytes)
    sequence_parallel = implementation.sequence_parallel(layout)
    elementwise_forward = elementwise_backward = 0.0
    if not model.flat:
        forward_bytes, backward_bytes = elementwise_bytes_per_token(config, tp, sequence_parallel, implementation,
                                                                    element_bytes)
        rate = accelerator.memory_bandwidth * model.memory_efficiency
        elementwise_forward, elementwise_backward = tokens * forward_bytes / rate, tokens * backward_bytes / rate
    activation = tokens * config.dim * element_bytes
    if sequence_parallel:
        collective = (ring_seconds("all_gather", activation, tp, tp, accelerator, model)
                      + ring_seconds("reduce_scatter", activation, tp, tp, accelerator, model))
    else:
        collective = ring_seconds("all_reduce", activation, tp, tp, accelerator, model)
    tp_forward = 2 * collective
    tp_backward = 2 * collective + (2 * collective if recompute.matmuls >= 1 else 0.0)
    return BlockWork(
        gemm=(gemm_forward, gemm_backward + recompute.matmuls * gemm_forward),
        attention=(attention_forward, attention_backward + recompute.attention * attention_forward),
        elementwise=(elementwise_forward, elementwise_backward + recompute.elementwise * elementwise_forward),
        tp=(tp_forward, tp_backward),
    )


def head_work(config: ModelConfig, layout: Layout, tokens: int, accelerator: Accelerator, model: TimeModel,
              element_bytes: int) -> BlockWork:
    """The output projection and the loss: a (T × d)·(d × V/t) GEMM and the fp32 log-softmax over the
    logits (the upcast, its output and its gradient)."""
    forward, backward = gemm_training_seconds(tokens, config.vocab_size // layout.tp, config.dim, accelerator,
                                              model, element_bytes)
    loss = 0.0
    if not model.flat:
        logits = tokens * config.vocab_size / layout.tp
        loss = logits * (element_bytes + 3 * FP32_BYTES) / (accelerator.memory_bandwidth * model.memory_efficiency)
    return BlockWork(gemm=(forward, backward), attention=(0.0, 0.0), elementwise=(loss / 2, loss / 2), tp=(0.0, 0.0))


def stage_layer_counts(n_layers: int, pp: int) -> tuple[int, int]:
    """Layers on the first and on the last pipeline stage (earlier stages take the remainder)."""
    if pp > n_layers:
        raise ValueError(f"pp={pp} exceeds the number of layers {n_layers}")
    return math.ceil(n_layers / pp), n_layers // pp


@dataclass(frozen=True)
class DataParallelCost:
    """Seconds of one data-parallel collective over a block's parameters: gather the 16-bit weights,
    reduce the gradients (reduce-scatter under ZeRO, all-reduce without)."""

    gather: float
    reduce: float


def data_parallel_cost(layout: Layout, block_parameters: float, accelerator: Accelerator, model: TimeModel,
                       implementation: Implementation, param_bytes: int) -> DataParallelCost:
    """One block's data-parallel collectives; the ring spans tp·dp GPUs (ranks are ordered tp, then dp)."""
    n, span = layout.dp, layout.tp * layout.dp
    reduce_bytes = block_parameters * (param_bytes if model.flat else implementation.grad_reduce_bytes)
    if layout.zero == 0:
        return DataParallelCost(0.0, ring_seconds("all_reduce", reduce_bytes, n, span, accelerator, model))
    return DataParallelCost(ring_seconds("all_gather", block_parameters * param_bytes, n, span, accelerator, model),
                            ring_seconds("reduce_scatter", reduce_bytes, n, span, accelerator, model))


def overlapped(communication: float, compute: float) -> float:
    """What communication running beside ``compute`` adds to it: the part that outlasts it."""
    return max(0.0, communication - compute)


def exposed_data_parallel_seconds(layout: Layout, n_microbatches: int, layers: int, block: BlockWork,
                                  cost: DataParallelCost, implementation: Implementation) -> float:
    """Data-parallel communication left on the critical path of one step, per block.

    ZeRO-3 gathers each block's weights before its forward and again before its backward on every
    micro-batch; ZeRO-2 gathers once per step; gradients are reduced once per step, during the
    last backward (the trainer syncs only the last micro-batch). With overlap (FSDP2 prefetches the
    next block's weights and reduces a block's gradients while the previous block computes) a
    block's communication costs only what outlasts that block's compute, plus the first gather and
    the last reduction, which nothing hides; without overlap (Megatron-LM before 2023 reduced all
    gradients after the last backward) every collective adds up.
    """
    if layout.dp == 1:
        return 0.0
    gathers = 2 * n_microbatches if layout.zero == 3 else (1 if layout.zero == 2 else 0)
    if not implementation.dp_overlap:
        return layers * (gathers * cost.gather + cost.reduce)
    exposed = cost.gather + cost.reduce
    if layout.zero == 3:
        exposed += layers * (n_microbatches * overlapped(cost.gather, block.forward)
                             + (n_microbatches - 1) * overlapped(cost.gather, block.backward)
                             + overlapped(cost.gather + cost.reduce, block.backward))
    else:
        exposed += layers * (overlapped(cost.gather, block.forward)
                             + overlapped(cost.reduce, block.backward))
    return exposed


def iteration_seconds(config: ModelConfig, layout: Layout, global_batch: int, seq_len: int,
                      accelerator: Accelerator, model: TimeModel, implementation: Implementation,
                      element_bytes: int, param_bytes: int, dp_overlap: float = 0.0) -> dict[str, float]:
    """Seconds of one iteration by component on the busiest pipeline rank.

    Each of its m micro-batches runs its blocks (and the head on the last stage); the pipeline adds
    (p−1)/v micro-batches of idle time (Narayanan et al., 2021, §2.2) and one point-to-point
    transfer per chunk boundary each way; exposed data-parallel communication and the optimizer
    step (Adam over the rank's shard, HBM-bound) follow. ``dp_overlap`` is the hidden fraction of
    data-parallel time under the flat model, which has no overlap model of its own.
    """
    m = layout.microbatches(global_batch)
    micro_batch = global_batch // (layout.dp * m)
    tokens = micro_batch * seq_len
    block = block_work(config, layout, micro_batch, seq_len, accelerator, model, implementation, element_bytes)
    head = head_work(config, layout, tokens, accelerator, model, element_bytes)
    first_layers, last_layers = stage_layer_counts(config.n_layers, layout.pp)
    if layout.pp == 1:
        layers, stage = config.n_layers, block * config.n_layers + head
    else:
        first, last = block * first_layers, block * last_layers + head
        layers, stage = (first_layers, first) if first.total >= last.total else (last_layers, last)

    pp_seconds = 0.0
    if layout.pp > 1:
        shards = layout.tp if (implementation.sequence_parallel(layout) or implementation.pipeline_scatter_gather
                               or model.flat) else 1
        message = tokens * config.dim * element_bytes / shards
        within = layout.world_size <= accelerator.devices_per_node
        pp_seconds = 2 * layout.virtual_stages * point_to_point_seconds(message, within, accelerator, model)
    per_microbatch = stage.total + pp_seconds
    bubble = (layout.pp - 1) / layout.virtual_stages * per_microbatch

    block_parameters = sum(n * k for _, n, k in block_gemms(config, 1, layout.tp))
    edge_parameters = config.vocab_size * config.dim / layout.tp * (2 if layout.pp == 1 else 1)
    cost = data_parallel_cost(layout, block_parameters, accelerator, model, implementation, param_bytes)
    edge = data_parallel_cost(layout, edge_parameters, accelerator, model, implementation, param_bytes)
    gathers = 2 * m if layout.zero == 3 else (1 if layout.zero == 2 else 0)
    if model.flat:
        dp_seconds = (layers * (min(gathers, 2) * cost.gather + cost.reduce) + min(gathers, 2) * edge.gather
                      + edge.reduce) * (1 - dp_overlap)
    else:
        dp_seconds = (exposed_data_parallel_seconds(layout, m, layers, block, cost, implementation)
                      + (gathers if not implementation.dp_overlap else min(gathers, 1)) * edge.gather + edge.reduce)
    optimizer = 0.0
    if not model.flat:
        stage_parameters = layers * block_parameters + edge_parameters
        shard = stage_parameters / layout.dp if layout.zero >= 2 else stage_parameters
        optimizer = shard * ADAM_BYTES_PER_PARAM / (accelerator.memory_bandwidth * model.memory_efficiency)
    return {"compute": m * stage.gemm[0] + m * stage.gemm[1], "attention": m * sum(stage.attention),
            "elementwise": m * sum(stage.elementwise), "tp": m * sum(stage.tp), "pp": m * pp_seconds,
            "bubble": bubble, "dp": dp_seconds, "optimizer": optimizer}
