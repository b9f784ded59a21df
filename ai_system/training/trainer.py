"""The one trainer: every layout, the full recipe.

data → forward/backward over micro-batches (or a pipeline schedule) → clip the global gradient
norm → AdamW with decay groups → warmup-cosine learning rate → log → DCP checkpoint → export.

``train(config)`` runs on one process (the unsharded reference) or on every rank of a process
group, under whatever ``config.layout`` says: FSDP, TP/SP, PP (GPipe, 1F1B, interleaved) and their
compositions. ``Trainer`` is one rank's share of the run; it never branches on which parallelisms
are on except where the work itself differs (a pipeline schedule instead of a micro-batch loop,
vocabulary-parallel logits). Everything that can be wrong with a config, an output path or a
checkpoint is checked before the model is built (``TrainConfig`` and ``preflight``), so a bad run
fails in seconds with a message, not mid-run.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.pipelining import PipelineStage
from torch.distributed.tensor import DTensor

from ai_system.bench.peaks import measure_peak
from ai_system.data.loader import ShardedBatches
from ai_system.data.sources import BYTE_VOCAB_SIZE, ByteCorpus, SequenceSource, SyntheticTokens, TokenizedCorpus
from ai_system.data.tokenizer import tokenizer_for_vocab
from ai_system.distributed.launch import Runtime, init_runtime, shutdown
from ai_system.distributed.parallelize import parallelize, set_gradient_sync, unwrapped_name
from ai_system.distributed.pipeline import build_schedule, next_token_loss, rank_stage_indices, stage_module
from ai_system.distributed.tensor_parallel import backward_vocab_parallel, vocab_parallel_cross_entropy
from ai_system.models.transformer import Transformer
from ai_system.training.checkpoint import Skipped, load_checkpoint, quarantine, save_checkpoint
from ai_system.training.config import TrainConfig
from ai_system.training.export import export_checkpoint
from ai_system.training.metrics import MetricsLog, StepMetrics, mfu, peak_memory_bytes
from ai_system.training.preflight import RunRefused, preflight
from ai_system.training.profiling import step_profiler
from ai_system.training.schedule import warmup_cosine_scheduler

PEAK_MATMUL_SIZES = {"cpu": (512, 1024), "cuda": (4096, 8192)}
PEAK_MIN_TIME_S = 0.2


@dataclass
class TrainResult:
    start_step: int
    steps: list[StepMetrics] = field(default_factory=list)
    peak_flops: float = 0.0
    checkpoint: Path | None = None
    export: Path | None = None

    @property
    def losses(self) -> list[float]:
        return [s.loss for s in self.steps]


def build_source(config: TrainConfig) -> SequenceSource:
    """The stdlib corpus in the model's vocabulary (bytes for 256, else the corpus BPE), or random tokens."""
    vocab_size = config.model_config().vocab_size
    if config.dataset == "synthetic":
        return SyntheticTokens(config.seq_len, vocab_size=vocab_size, seed=config.seed)
    if vocab_size == BYTE_VOCAB_SIZE:
        return ByteCorpus.stdlib(config.seq_len)
    return TokenizedCorpus.stdlib(config.seq_len, tokenizer_for_vocab(vocab_size))


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only: decaying norm gains just fights the normalization.

    The fused implementation updates each parameter in one pass over its memory (the ``foreach``
    default makes a dozen), and on FSDP's DTensor parameters it is one dispatch per group rather
    than one per elementwise op.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": config.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, fused=True)


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor behind a DTensor (a collective over its mesh), or the tensor itself."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def gradient_norm(grads: list[torch.Tensor], device: torch.device, pp_group: dist.ProcessGroup | None) -> torch.Tensor:
    """L2 norm of every gradient of the model, whichever ranks hold which shard of it.

    DTensor gradients are reduced over their own mesh (tp and dp shards), grouped by mesh since a
    stage can mix them (norm weights stay plain tensors under TP without sequence parallelism);
    pipeline stages hold disjoint parameters, so their squared norms add up over the pp group.
    """
    squares = torch.zeros((), dtype=torch.float32, device=device)
    plain = [g for g in grads if not isinstance(g, DTensor)]
    if plain:
        squares += torch.nn.utils.get_total_norm(plain).float() ** 2
    by_mesh: dict[DeviceMesh, list[torch.Tensor]] = {}
    for grad in grads:
        if isinstance(grad, DTensor):
            by_mesh.setdefault(grad.device_mesh, []).append(grad)
    for group in by_mesh.values():  # in parameter order, the same on every rank, as collectives must be
        squares += full_tensor(torch.nn.utils.get_total_norm(group)).float() ** 2
    if pp_group is not None:
        dist.all_reduce(squares, group=pp_group)
    return squares.sqrt()


def data_parallel_rank(mesh: DeviceMesh | None) -> int:
    """This rank's index among the data-parallel replicas (0 without a mesh)."""
    if mesh is None:
        return 0
    return mesh["dp_replicate"].get_local_rank() * mesh["dp_shard"].size() + mesh["dp_shard"].get_local_rank()


class Trainer:
    """One rank's share of a run under ``config.layout``: its model parts, optimizers and schedule.

    Without a pipeline a rank holds one part, the (TP/FSDP-sharded) whole model; with one it holds
    its stage(s), each cut from the model on the meta device before any weight exists. Every part
    is initialized from the seed by parameter name before it is sharded, so all layouts start from
    the same weights. ``mesh`` is None for a single process without a process group.
    ``stage_type`` and ``pipeline_loss`` let a measurement time the pipeline's pieces (``bubble.py``).
    """

    def __init__(self, config: TrainConfig, device: torch.device, mesh: DeviceMesh | None,
                 stage_type: type[PipelineStage] = PipelineStage,
                 pipeline_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = next_token_loss) -> None:
        layout = config.layout
        if mesh is None and layout.world_size > 1:
            raise ValueError(f"layout {layout} needs {layout.world_size} ranks; this process has no process group")
        if mesh is not None and mesh.size() != layout.world_size:
            raise ValueError(f"layout {layout} needs {layout.world_size} ranks, the process group has {mesh.size()}")
        self.config, self.layout, self.device, self.mesh = config, layout, device, mesh
        self.model_config = config.model_config()
        self.n_microbatches = layout.microbatches(config.batch_size)
        self.micro_batch = config.batch_size // (layout.dp * self.n_microbatches)
        self.dp_rank = data_parallel_rank(mesh)
        if mesh is None:
            self.pp_rank = self.tp_rank = 0
        else:
            self.pp_rank, self.tp_rank = mesh["pp"].get_local_rank(), mesh["tp"].get_local_rank()
        self.is_first_stage, self.is_last_stage = self.pp_rank == 0, self.pp_rank == layout.pp - 1
        self.pp_group = mesh["pp"].get_group() if mesh is not None and layout.pp > 1 else None

        with torch.device("meta"):
            whole = Transformer(self.model_config)
        if layout.pp > 1:
            stage_indices = rank_stage_indices(self.pp_rank, layout.pp, layout.virtual_stages)
            parts = [stage_module(whole, index, layout.num_stages) for index in stage_indices]
        else:
            stage_indices, parts = [0], [whole]
        for part in parts:
            part.to_empty(device=device)
            part.init_weights(seed=config.seed)
            parallelize(part, mesh, layout, config.param_dtype, config.compile)
        self.parts: list[Transformer] = parts
        self.optimizers = [build_optimizer(part, config) for part in parts]
        self.schedulers = [warmup_cosine_scheduler(optimizer, config.warmup_steps, config.steps, config.min_lr_ratio)
                           for optimizer in self.optimizers]
        self.pipeline = None
        if layout.pp > 1:
            self.stages = [stage_type(part, index, layout.num_stages, device, group=self.pp_group)
                           for part, index in zip(parts, stage_indices, strict=True)]
            self.pipeline = build_schedule(self.stages, layout.schedule, self.n_microbatches, pipeline_loss)

    def replica_batch(self, global_batch: torch.Tensor) -> torch.Tensor:
        """This rank's data-parallel slice of a global batch (tp and pp peers get the same slice)."""
        return global_batch.chunk(self.layout.dp)[self.dp_rank]

    def forward_backward(self, batch: torch.Tensor) -> float:
        """Gradients of the mean next-token loss over this replica's batch (sequences of seq_len + 1
        tokens); returns the loss averaged over every replica."""
        inputs, targets = batch[:, :-1], batch[:, 1:]
        if self.pipeline is not None:
            losses: list[torch.Tensor] = []
            kwargs = {"target": targets, "losses": losses} if self.is_last_stage else {}
            self.pipeline.step(*((inputs,) if self.is_first_stage else ()), **kwargs)
            local = torch.stack(losses).mean().detach() if self.is_last_stage else None
        else:
            model = self.parts[0]
            chunks = list(zip(inputs.split(self.micro_batch), targets.split(self.micro_batch), strict=True))
            local = torch.zeros((), device=self.device)
            for index, (x, y) in enumerate(chunks):
                set_gradient_sync(model, index == len(chunks) - 1)
                logits = model(x)
                loss = vocab_parallel_cross_entropy(logits, y) / len(chunks)
                backward_vocab_parallel(loss) if isinstance(logits, DTensor) else loss.backward()
                local += full_tensor(loss).detach()
        return self.mean_over_replicas(local)

    def mean_over_replicas(self, local: torch.Tensor | None) -> float:
        """The last stage's loss (replicated over tp) averaged over dp replicas, known on every rank."""
        if self.mesh is None:
            return float(local)
        owner = self.is_last_stage and self.tp_rank == 0
        value = local.float().clone() if owner else torch.zeros((), device=self.device)
        dist.all_reduce(value)
        return float(value) / self.layout.dp

    def clip_gradients(self) -> float:
        """Global gradient norm before clipping; clipped to ``grad_clip`` (0 disables clipping)."""
        grads = [p.grad for part in self.parts for p in part.parameters() if p.grad is not None]
        total = float(gradient_norm(grads, self.device, self.pp_group))
        scale = self.config.grad_clip / (total + 1e-6)
        if self.config.grad_clip > 0 and scale < 1:
            for grad in grads:  # one by one: a stage may mix DTensor and plain gradients
                grad.mul_(scale)
        return total

    def optimizer_step(self) -> float:
        """Apply the gradients and advance the schedule; returns the learning rate that was used."""
        lr = self.schedulers[0].get_last_lr()[0]
        for optimizer, scheduler in zip(self.optimizers, self.schedulers, strict=True):
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        return lr

    def step(self, batch: torch.Tensor) -> tuple[float, float, float]:
        """One optimizer step on this replica's batch: (mean loss, gradient norm, learning rate)."""
        loss = self.forward_backward(batch)
        grad_norm = self.clip_gradients()
        return loss, grad_norm, self.optimizer_step()

    def named_gradients(self) -> dict[str, torch.Tensor]:
        """Copies of the whole gradients of this rank's parameters, by their plain-model names (a collective)."""
        return {unwrapped_name(name): full_tensor(p.grad).detach().clone() for part in self.parts
                for name, p in part.named_parameters() if p.grad is not None}


def measure_peak_flops(runtime: Runtime, dtype: str) -> float:
    """Dense-matmul FLOP/s of all ranks together, each measured with its own thread count while the
    others measure too (``bench.peaks.measure_peak``: the best rate over sizes and timed trials)."""
    peak = measure_peak("matmul", str(runtime.device), dtype, PEAK_MATMUL_SIZES[runtime.device.type],
                        threads=torch.get_num_threads(), min_time_s=PEAK_MIN_TIME_S)
    rate = torch.tensor(peak.rate, dtype=torch.float64, device=runtime.device)
    if runtime.distributed:
        dist.all_reduce(rate)
    return float(rate)


def train(config: TrainConfig) -> TrainResult:
    """Run (or resume) training; in a process group, call it on every rank."""
    owns_group = not dist.is_initialized()
    runtime = init_runtime()
    try:
        if config.layout.world_size != runtime.world_size:
            raise RunRefused(f"layout {config.layout} needs {config.layout.world_size} ranks, got {runtime.world_size}")
        if config.param_dtype != "float32" and not runtime.distributed:
            raise RunRefused(f"param_dtype={config.param_dtype!r} needs FSDP's mixed precision, which needs a process "
                             "group: start one rank with torchrun (torchrun --nproc-per-node 1 -m ai_system.cli train "
                             "...)")
        mesh = config.layout.build_mesh(runtime.device.type) if runtime.distributed else None
        return run_training(config, runtime, mesh)
    finally:
        if owns_group:
            shutdown(runtime)


def run_training(config: TrainConfig, runtime: Runtime, mesh: DeviceMesh | None) -> TrainResult:
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    model_config = config.model_config()
    entered = time.perf_counter()
    resume = preflight(config, runtime)
    preflight_seconds = time.perf_counter() - entered
    torch.manual_seed(config.seed)
    loader = ShardedBatches(build_source(config), config.batch_size, data_parallel_rank(mesh), config.layout.dp,
                            config.seed)
    start_step = 0
    if resume is not None:
        try:
            loader.load_state_dict(resume.meta["data"])
        except ValueError as error:
            raise RunRefused(f"checkpoint {resume.path}: {error}") from None
        start_step = resume.step
    quarantined: list[tuple[Skipped, Path]] = []
    if runtime.is_main and resume is not None:
        for skipped in resume.skipped:
            quarantined.append((skipped, quarantine(skipped.path)))
            print(f"ai-system train: skipped checkpoint {skipped.path} (moved to {quarantined[-1][1].name}): "
                  f"{skipped.reason}", file=sys.stderr)
    trainer = Trainer(config, runtime.device, mesh)
    if resume is not None:
        load_checkpoint(resume.path, trainer.parts, trainer.optimizers, runtime, resume.meta)
        for scheduler in trainer.schedulers:
            scheduler.load_state_dict(resume.meta["scheduler"])

    result = TrainResult(start_step=start_step, peak_flops=measure_peak_flops(runtime, config.param_dtype))
    flops_per_token = model_config.train_flops_per_token(config.seq_len)
    tokens_per_step = config.batch_size * config.seq_len
    log = MetricsLog(config.log_file, config.steps, start_step, enabled=runtime.is_main, progress=config.progress)
    for skipped, target in quarantined:
        log.event("skipped_checkpoint", path=str(skipped.path), moved_to=str(target), reason=skipped.reason)
    log.event("resume" if resume is not None else "start", step=start_step, world_size=runtime.world_size,
              layout=config.layout.label(), device=str(runtime.device), params=model_config.num_params(),
              peak_flops=result.peak_flops, flops_per_token=flops_per_token,
              checkpoint=str(resume.path) if resume is not None else None,
              preflight_seconds=preflight_seconds, setup_seconds=time.perf_counter() - entered)
    try:
        with step_profiler(config.profile_dir, runtime.rank) as profiled_step:
            for step in range(start_step + 1, config.steps + 1):
                started = time.perf_counter()
                batch = loader.next_batch().to(runtime.device, non_blocking=True)
                loss, grad_norm, lr = trainer.step(batch)
                elapsed = time.perf_counter() - started
                if not math.isfinite(loss):
                    raise FloatingPointError(f"loss became {loss} at step {step}")
                metrics = StepMetrics(
                    step=step, loss=loss, lr=lr, grad_norm=grad_norm, step_time_s=elapsed,
                    tokens_per_s=tokens_per_step / elapsed, samples_per_s=config.batch_size / elapsed,
                    mfu=mfu(flops_per_token, tokens_per_step / elapsed, result.peak_flops),
                    peak_memory_bytes=peak_memory_bytes(runtime.device))
                result.steps.append(metrics)
                if step % config.log_every == 0 or step == config.steps:
                    log.step(metrics)
                due = config.checkpoint_every and step % config.checkpoint_every == 0
                if config.checkpoint_path is not None and (due or step == config.steps):
                    meta_out = {"model_config": asdict(model_config), "train_config": config.to_dict(),
                                "layout": config.layout.label(), "scheduler": trainer.schedulers[0].state_dict(),
                                "data": loader.state_dict(), "loss": loss}
                    saving = time.perf_counter()
                    result.checkpoint = save_checkpoint(config.checkpoint_path, step, trainer.parts,
                                                        trainer.optimizers, runtime, meta_out, config.keep_checkpoints)
                    log.event("checkpoint", step=step, path=str(result.checkpoint),
                              seconds=time.perf_counter() - saving)
                profiled_step()
        if config.export_dir is not None and result.checkpoint is not None and runtime.is_main:
            result.export = export_checkpoint(result.checkpoint, Path(config.export_dir))
            log.event("export", step=config.steps, path=str(result.export))
        log.event("done", step=config.steps, loss=result.losses[-1] if result.steps else None)
    finally:
        log.close()
    return result
