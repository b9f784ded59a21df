"""The training loop: data → forward/backward over micro-batches → clip → AdamW → schedule → log → checkpoint.

``train(config)`` runs on one process (unsharded reference) or, under torchrun, on every rank
with the model sharded by FSDP2. Everything that can be wrong with a config or a checkpoint is
checked before the model is built, so a bad run fails in seconds with a message, not mid-run.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributed.tensor import DTensor

from ai_system.bench.peaks import best_rate, matmul_workload
from ai_system.data.loader import ShardedBatches
from ai_system.data.sources import ByteCorpus, SequenceSource, SyntheticTokens
from ai_system.models.config import ModelConfig
from ai_system.models.transformer import Transformer
from ai_system.training.checkpoint import latest_checkpoint, load_checkpoint, read_meta, save_checkpoint
from ai_system.training.config import TrainConfig
from ai_system.training.metrics import MetricsLog, StepMetrics, mfu, peak_memory_bytes
from ai_system.training.parallel import (
    Runtime,
    all_reduce_mean,
    all_reduce_sum,
    barrier,
    init_runtime,
    prepare_model,
    set_gradient_sync,
    shutdown,
)
from ai_system.training.schedule import warmup_cosine_scheduler

PEAK_MATMUL_N = {"cpu": 1024, "cuda": 8192}


@dataclass
class TrainResult:
    start_step: int
    steps: list[StepMetrics] = field(default_factory=list)
    peak_flops: float = 0.0
    checkpoint: Path | None = None

    @property
    def losses(self) -> list[float]:
        return [s.loss for s in self.steps]


def build_source(config: TrainConfig) -> SequenceSource:
    if config.dataset == "stdlib":
        return ByteCorpus.stdlib(config.seq_len)
    return SyntheticTokens(config.seq_len, vocab_size=config.model_config().vocab_size, seed=config.seed)


def resolve_resume(config: TrainConfig) -> Path | None:
    """``resume="auto"``: the latest finished checkpoint if any (what a restarted job wants); a path: that one."""
    if config.resume is None:
        return None
    if config.resume == "auto":
        if config.checkpoint_path is None:
            raise ValueError("resume='auto' needs a checkpoint_dir to look in")
        return latest_checkpoint(config.checkpoint_path)
    path = Path(config.resume)
    read_meta(path)
    return path


def check_compatible(meta: dict[str, Any], model_config: ModelConfig, path: Path) -> None:
    if meta["model_config"] != asdict(model_config):
        raise ValueError(f"checkpoint {path} holds a model of shape {meta['model_config']}, "
                         f"but this run builds {asdict(model_config)}")


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only: decaying norm gains just fights the normalization."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": config.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas)


def clip_gradients(model: nn.Module, max_norm: float) -> float:
    """Global gradient norm over all shards, clipped to ``max_norm`` (0 disables clipping)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    total = torch.nn.utils.get_total_norm(grads)
    if isinstance(total, DTensor):
        total = total.full_tensor()
    if max_norm > 0:
        torch.nn.utils.clip_grads_with_norm_(model.parameters(), max_norm, total)
    return float(total)


def measure_peak_flops(runtime: Runtime, dtype: str) -> float:
    """Dense-matmul FLOP/s of all ranks together, each measured while the others measure too."""
    rate = best_rate(matmul_workload(PEAK_MATMUL_N[runtime.device.type], dtype, runtime.device))
    return float(all_reduce_sum(torch.tensor(rate, dtype=torch.float64, device=runtime.device), runtime))


def train_step(model: nn.Module, batch: torch.Tensor, micro_batch: int) -> torch.Tensor:
    """Forward and backward over ``batch`` in micro-batches; returns the mean loss (gradients accumulate).

    Each micro-batch's loss is divided by their count, so the summed gradient is that of the mean
    over the whole batch, the same as one big batch would give.
    """
    inputs, targets = batch[:, :-1], batch[:, 1:]
    chunks = list(zip(inputs.split(micro_batch), targets.split(micro_batch), strict=True))
    total = torch.zeros((), device=batch.device)
    for index, (x, y) in enumerate(chunks):
        set_gradient_sync(model, index == len(chunks) - 1)
        logits = model(x)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten()) / len(chunks)
        loss.backward()
        total += loss.detach()
    return total


def train(config: TrainConfig) -> TrainResult:
    """Run (or resume) training; under torchrun, call it on every rank."""
    runtime = init_runtime()
    try:
        result = run_training(config, runtime)
        # No rank may tear down its gloo pairs while a peer still has work in flight with it.
        barrier(runtime)
        return result
    finally:
        shutdown(runtime)


def run_training(config: TrainConfig, runtime: Runtime) -> TrainResult:
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    micro_batch = config.micro_batch_size(runtime.world_size)
    model_config = config.model_config()
    resume_path = resolve_resume(config)
    meta = read_meta(resume_path) if resume_path is not None else None
    if meta is not None:
        check_compatible(meta, model_config, resume_path)
    loader = ShardedBatches(build_source(config), config.batch_size, runtime.rank, runtime.world_size, config.seed)
    if meta is not None:
        loader.load_state_dict(meta["data"])

    torch.manual_seed(config.seed)
    with torch.device("meta"):
        model = Transformer(model_config)
    model.to_empty(device=runtime.device)
    model.init_weights(seed=config.seed)
    model = prepare_model(model, runtime, config.param_dtype, config.activation_checkpointing, config.compile)
    optimizer = build_optimizer(model, config)
    scheduler = warmup_cosine_scheduler(optimizer, config.warmup_steps, config.steps, config.min_lr_ratio)
    start_step = 0
    if meta is not None:
        load_checkpoint(resume_path, model, optimizer, runtime)
        scheduler.load_state_dict(meta["scheduler"])
        start_step = meta["step"]

    result = TrainResult(start_step=start_step, peak_flops=measure_peak_flops(runtime, config.param_dtype))
    flops_per_token = model_config.train_flops_per_token(config.seq_len)
    tokens_per_step = config.batch_size * config.seq_len
    log = MetricsLog(config.log_file, config.steps, start_step, enabled=runtime.is_main, progress=config.progress)
    log.event("resume" if meta is not None else "start", step=start_step, world_size=runtime.world_size,
              device=str(runtime.device), params=model_config.num_params(), peak_flops=result.peak_flops,
              flops_per_token=flops_per_token, checkpoint=str(resume_path) if resume_path else None)
    try:
        for step in range(start_step + 1, config.steps + 1):
            started = time.perf_counter()
            batch = loader.next_batch().to(runtime.device, non_blocking=True)
            loss = train_step(model, batch, micro_batch)
            grad_norm = clip_gradients(model, config.grad_clip)
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            mean_loss = float(all_reduce_mean(loss, runtime))
            elapsed = time.perf_counter() - started
            if not math.isfinite(mean_loss):
                raise FloatingPointError(f"loss became {mean_loss} at step {step}")
            metrics = StepMetrics(
                step=step, loss=mean_loss, lr=lr, grad_norm=grad_norm, step_time_s=elapsed,
                tokens_per_s=tokens_per_step / elapsed, samples_per_s=config.batch_size / elapsed,
                mfu=mfu(flops_per_token, tokens_per_step / elapsed, result.peak_flops),
                peak_memory_bytes=peak_memory_bytes(runtime.device))
            result.steps.append(metrics)
            if step % config.log_every == 0 or step == config.steps:
                log.step(metrics)
            due = config.checkpoint_every and step % config.checkpoint_every == 0
            if config.checkpoint_path is not None and (due or step == config.steps):
                meta_out = {"model_config": asdict(model_config), "train_config": config.to_dict(),
                            "scheduler": scheduler.state_dict(), "data": loader.state_dict(), "loss": mean_loss}
                result.checkpoint = save_checkpoint(config.checkpoint_path, step, model, optimizer, runtime,
                                                    meta_out, config.keep_checkpoints)
                log.event("checkpoint", step=step, path=str(result.checkpoint))
        log.event("done", step=config.steps, loss=result.losses[-1] if result.steps else None)
    finally:
        log.close()
    return result
