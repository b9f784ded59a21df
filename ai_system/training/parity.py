"""Does a layout train the same model as one process? The trainer under a layout next to itself unsharded.

Every rank runs two ``Trainer``s on the same global batches: one under the layout (sharded over the
process group) and the single-process reference (``Layout()``, no mesh). The answer says how far
the layout's first loss and (gathered) gradients are from the reference, and whether the loss
curves of a few optimizer steps track each other, with the full recipe (AdamW with decay groups,
clipping, warmup-cosine schedule) on both sides. Tests assert on it, benchmarks publish it, the case
study prints it. ``time_tensor_parallel_variants`` times the tensor-parallel implementations.
"""

from __future__ import annotations

import copy
import statistics
import time
from dataclasses import dataclass, field, replace

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor

from ai_system.bench.peaks import synchronize
from ai_system.data.loader import ShardedBatches
from ai_system.distributed.launch import init_runtime
from ai_system.distributed.layout import Layout
from ai_system.distributed.parallelize import parallelize
from ai_system.distributed.pipeline import next_token_loss
from ai_system.distributed.tensor_parallel import backward_vocab_parallel, vocab_parallel_cross_entropy
from ai_system.distributed.tensor_parallel_explicit import shard_explicitly
from ai_system.models.transformer import Transformer
from ai_system.training.config import TrainConfig
from ai_system.training.trainer import Trainer, build_source


@dataclass
class Comparison:
    """A layout's run next to the reference: worst absolute differences and both loss curves."""

    layout: str
    loss_diff: float
    grad_max_diff: float
    grad_max_abs: float
    losses: list[float]
    reference_losses: list[float]
    missing_grads: list[str] = field(default_factory=list)
    step_seconds: list[float] = field(default_factory=list)


def global_batches(config: TrainConfig) -> ShardedBatches:
    """The run's global batches (every sequence of each step), the same on every rank."""
    return ShardedBatches(build_source(config), config.batch_size, seed=config.seed)


def compare_with_reference(config: TrainConfig) -> Comparison:
    """Run on every rank of a ``config.layout.world_size`` group; returns the comparison (same on all ranks)."""
    runtime = init_runtime()
    layout = config.layout
    trainer = Trainer(config, runtime.device, layout.build_mesh(runtime.device.type))
    reference = Trainer(replace(config, layout=Layout()), runtime.device, mesh=None)
    batches = global_batches(config)
    losses, reference_losses, step_seconds = [], [], []
    loss_diff = grad_diff = grad_abs = 0.0
    for step in range(config.steps):
        batch = batches.next_batch().to(runtime.device)
        dist.barrier()
        start = time.perf_counter()
        loss = trainer.forward_backward(trainer.replica_batch(batch))
        if step == 0:
            grads = trainer.named_gradients()
        trainer.clip_gradients()
        trainer.optimizer_step()
        synchronize(runtime.device)
        dist.barrier()
        step_seconds.append(time.perf_counter() - start)

        reference_loss = reference.forward_backward(batch)
        if step == 0:
            reference_grads = reference.named_gradients()
            loss_diff = abs(loss - reference_loss)
            grad_diff = max((grad - reference_grads[name]).abs().max().item() for name, grad in grads.items())
            grad_abs = max(grad.abs().max().item() for grad in reference_grads.values())
        reference.clip_gradients()
        reference.optimizer_step()
        losses.append(loss)
        reference_losses.append(reference_loss)
    gathered: list[tuple[float, list[str]] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, (grad_diff, sorted(grads)))
    compared = {name for _, names in gathered for name in names}
    return Comparison(layout=layout.label(), loss_diff=loss_diff, grad_max_diff=max(d for d, _ in gathered),
                      grad_max_abs=grad_abs, losses=losses, reference_losses=reference_losses,
                      missing_grads=sorted(set(reference_grads) - compared), step_seconds=step_seconds)


def compare_layouts(configs: list[TrainConfig]) -> list[Comparison]:
    """``compare_with_reference`` for several configs (layouts of one world size) in one process group."""
    return [compare_with_reference(config) for config in configs]


def fixed_batch(config: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The first global batch as (inputs, next-token targets), for one-shot forward/backward comparisons."""
    batch = global_batches(config).next_batch().to(init_runtime().device)
    return batch[:, :-1].contiguous(), batch[:, 1:].contiguous()


def compare_explicit_tensor_parallel(config: TrainConfig) -> Comparison:
    """One forward and backward of ``shard_explicitly`` over all ranks against the unsharded model.

    Each rank's weight gradient is compared with its slice of the reference gradient.
    """
    device = init_runtime().device
    reference = Transformer(config.model_config()).to(device)
    reference.init_weights(seed=config.seed)
    model = shard_explicitly(copy.deepcopy(reference))
    rank, size = dist.get_rank(), dist.get_world_size()
    inputs, targets = fixed_batch(config)
    loss = next_token_loss(model(inputs), targets)
    loss.backward()
    reference_loss = next_token_loss(reference(inputs), targets)
    reference_loss.backward()
    reference_grads = {name: p.grad for name, p in reference.named_parameters()}
    grad_diff = 0.0
    for name, param in model.named_parameters():
        full = reference_grads[name.replace("inner.", "")]
        if full.shape != param.grad.shape:
            dim = 0 if full.shape[0] != param.grad.shape[0] else 1
            full = full.chunk(size, dim=dim)[rank]
        grad_diff = max(grad_diff, (param.grad - full).abs().max().item())
    return Comparison(layout=f"explicit-tp{size}", loss_diff=abs(loss.item() - reference_loss.item()),
                      grad_max_diff=grad_diff, grad_max_abs=max(g.abs().max().item() for g in reference_grads.values()),
                      losses=[loss.item()], reference_losses=[reference_loss.item()])


def time_tensor_parallel_variants(config: TrainConfig, repeats: int = 3) -> dict[str, float]:
    """Median forward+backward seconds of one batch: unsharded, explicit collectives, DTensor plan
    without and with sequence parallelism (the last two also shard embedding and head).

    Run on every rank of the tensor-parallel group; the unsharded model runs on each rank alone.
    """
    device = init_runtime().device
    reference = Transformer(config.model_config()).to(device)
    reference.init_weights(seed=config.seed)
    size = dist.get_world_size()
    mesh = Layout(tp=size).build_mesh(device.type)
    variants = {
        "unsharded": copy.deepcopy(reference),
        "explicit": shard_explicitly(copy.deepcopy(reference)),
        "dtensor": parallelize(copy.deepcopy(reference), mesh, Layout(tp=size, sequence_parallel=False)),
        "dtensor-sp": parallelize(copy.deepcopy(reference), mesh, Layout(tp=size)),
    }
    inputs, targets = fixed_batch(config)
    seconds = {}
    for name, model in variants.items():
        samples = []
        for _ in range(repeats + 1):
            dist.barrier()
            start = time.perf_counter()
            logits = model(inputs)
            loss = vocab_parallel_cross_entropy(logits, targets)
            backward_vocab_parallel(loss) if isinstance(logits, DTensor) else loss.backward()
            synchronize(device)
            samples.append(time.perf_counter() - start)
        elapsed = torch.tensor(statistics.median(samples[1:]), device=device)
        dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
        seconds[name] = elapsed.item()
    return seconds
