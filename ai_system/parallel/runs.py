"""Train the shared transformer under a layout and compare it with the single-process model.

Every rank also runs the unsharded reference on the whole batch, so a run answers the parity
questions directly: how far the sharded logits, loss and (gathered) gradients are from the
reference, and whether the loss curves of a few optimizer steps track each other. Tests assert on
the answer, benchmarks publish its timings, the case study prints it.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor

from ai_system.bench.peaks import synchronize
from ai_system.models.config import ModelConfig
from ai_system.models.transformer import Transformer
from ai_system.parallel.compose import Layout, layout_mesh, parallelize_stage, unwrapped_name
from ai_system.parallel.pipeline import bubble_fraction, build_pipeline, next_token_loss
from ai_system.parallel.tensor_parallel import backward_vocab_parallel, vocab_parallel_cross_entropy
from ai_system.parallel.tensor_parallel_explicit import shard_explicitly


@dataclass(frozen=True)
class RunSpec:
    """What to train: model shape, global batch (sequences × tokens), steps, AdamW learning rate, and
    the device: "cpu" (gloo) or "cuda" (NCCL, each rank on the GPU ``run_distributed`` selected)."""

    config: ModelConfig
    batch: int = 8
    seq_len: int = 32
    steps: int = 10
    lr: float = 3e-3
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"RunSpec.device must be 'cpu' or 'cuda', got {self.device!r}")

    @property
    def torch_device(self) -> torch.device:
        return torch.device("cuda", torch.cuda.current_device()) if self.device == "cuda" else torch.device("cpu")


@dataclass
class Comparison:
    """A layout's run next to the reference: worst absolute differences and both loss curves."""

    layout: str
    logits_max_diff: float
    loss_diff: float
    grad_max_diff: float
    grad_max_abs: float
    losses: list[float]
    reference_losses: list[float]
    missing_grads: list[str] = field(default_factory=list)
    step_seconds: list[float] = field(default_factory=list)


def _full(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def batch_tokens(spec: RunSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed (inputs, next-token targets) batch a run trains on, the same on every rank."""
    generator = torch.Generator().manual_seed(spec.seed + 1)
    tokens = torch.randint(0, spec.config.vocab_size, (spec.batch, spec.seq_len + 1), generator=generator)
    tokens = tokens.to(spec.torch_device)
    return tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()


class LayoutTrainer:
    """One rank's share of a layout: a plain (TP/FSDP) module or this rank's pipeline stages."""

    def __init__(self, reference: Transformer, layout: Layout, spec: RunSpec) -> None:
        self.layout = layout
        mesh = layout_mesh(layout, spec.torch_device.type)
        self.pp_rank, self.dp_rank = mesh["pp"].get_local_rank(), mesh["dp"].get_local_rank()
        self.dp_group = mesh["dp"].get_group()
        if layout.pp > 1:
            self.schedule, stages = build_pipeline(
                reference, layout.schedule, layout.n_microbatches, group=mesh["pp"].get_group(),
                stages_per_rank=2 if layout.schedule == "interleaved-1f1b" else 1, device=spec.torch_device,
                prepare=lambda stage: parallelize_stage(stage, mesh, layout))
            self.modules = [stage.submod for stage in stages]
        else:
            self.modules = [parallelize_stage(copy.deepcopy(reference), mesh, layout)]
        self.params = [p for module in self.modules for p in module.parameters()]
        self.optimizer = torch.optim.AdamW(self.params, lr=spec.lr)

    def shard(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.chunk(self.layout.dp)[self.dp_rank]

    def step(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[float | None, torch.Tensor | None]:
        """Forward and backward on this rank's data shard: (global mean loss, local logits) where known."""
        inputs, targets = self.shard(inputs), self.shard(targets)
        if self.layout.pp == 1:
            logits = self.modules[0](inputs)
            loss = vocab_parallel_cross_entropy(logits, targets)
            backward_vocab_parallel(loss) if isinstance(logits, DTensor) else loss.backward()
            value = _full(loss).detach().clone()
            dist.all_reduce(value, group=self.dp_group)
            return value.item() / self.layout.dp, _full(logits).detach()
        losses: list[torch.Tensor] = []
        is_first, is_last = self.pp_rank == 0, self.pp_rank == self.layout.pp - 1
        kwargs = {"target": targets, "losses": losses} if is_last else {}
        output = self.schedule.step(*((inputs,) if is_first else ()), **kwargs)
        if not is_last:
            return None, None
        value = torch.stack(losses).mean().detach()
        dist.all_reduce(value, group=self.dp_group)
        return value.item() / self.layout.dp, output.detach()

    def named_full_grads(self) -> dict[str, torch.Tensor]:
        return {unwrapped_name(name): _full(p.grad) for module in self.modules
                for name, p in module.named_parameters() if p.grad is not None}


def compare_with_reference(layout: Layout, spec: RunSpec) -> Comparison:
    """Run on every rank of a ``layout.world_size`` group; returns the comparison (same on all ranks)."""
    if dist.get_world_size() != layout.world_size:
        raise ValueError(f"layout {layout.label()} needs {layout.world_size} ranks, "
                         f"the process group has {dist.get_world_size()}")
    if spec.batch % (layout.dp * layout.n_microbatches):
        raise ValueError(f"batch={spec.batch} must divide into dp={layout.dp} × "
                         f"n_microbatches={layout.n_microbatches} equal parts")
    torch.manual_seed(spec.seed)
    reference = Transformer(spec.config).to(spec.torch_device)
    trainer = LayoutTrainer(reference, layout, spec)
    reference_optimizer = torch.optim.AdamW(reference.parameters(), lr=spec.lr)
    inputs, targets = batch_tokens(spec)
    losses, reference_losses, step_seconds = [], [], []
    diffs = {"logits": 0.0, "loss": 0.0, "grad": 0.0, "grad_abs": 0.0}
    for step in range(spec.steps):
        dist.barrier()
        start = time.perf_counter()
        loss, logits = trainer.step(inputs, targets)
        if step == 0:
            grads = trainer.named_full_grads()
        trainer.optimizer.step()
        trainer.optimizer.zero_grad()
        synchronize(spec.torch_device)
        dist.barrier()
        step_seconds.append(time.perf_counter() - start)

        reference_logits = reference(inputs)
        reference_loss = next_token_loss(reference_logits, targets)
        reference_loss.backward()
        if step == 0:
            reference_grads = {name: p.grad for name, p in reference.named_parameters()}
            if logits is not None:
                diffs["logits"] = (logits - trainer.shard(reference_logits.detach())).abs().max().item()
                diffs["loss"] = abs(loss - reference_loss.item())
            diffs["grad"] = max((grad - reference_grads[name]).abs().max().item() for name, grad in grads.items())
            diffs["grad_abs"] = max(grad.abs().max().item() for grad in reference_grads.values())
        reference_optimizer.step()
        reference_optimizer.zero_grad()
        reference_losses.append(reference_loss.item())
        losses.append(loss)
    gathered: list[tuple[dict[str, float], list[float | None], list[str]] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, (diffs, losses, sorted(grads)))
    compared = {name for _, _, names in gathered for name in names}
    return Comparison(
        layout=layout.label(),
        logits_max_diff=max(d["logits"] for d, _, _ in gathered),
        loss_diff=max(d["loss"] for d, _, _ in gathered),
        grad_max_diff=max(d["grad"] for d, _, _ in gathered),
        grad_max_abs=gathered[0][0]["grad_abs"],
        losses=next(curve for _, curve, _ in gathered if curve[0] is not None),
        reference_losses=reference_losses,
        missing_grads=sorted(set(reference_grads) - compared),
        step_seconds=step_seconds,
    )


def compare_layouts(layouts: list[Layout], spec: RunSpec) -> list[Comparison]:
    """``compare_with_reference`` for several layouts of one world size in one process group."""
    return [compare_with_reference(layout, spec) for layout in layouts]


def compare_explicit_tensor_parallel(spec: RunSpec) -> Comparison:
    """One forward and backward of ``shard_explicitly`` over all ranks against the reference.

    Each rank's weight gradient is compared with its slice of the reference gradient.
    """
    torch.manual_seed(spec.seed)
    reference = Transformer(spec.config).to(spec.torch_device)
    model = shard_explicitly(copy.deepcopy(reference))
    rank, size = dist.get_rank(), dist.get_world_size()
    inputs, targets = batch_tokens(spec)
    logits = model(inputs)
    loss = next_token_loss(logits, targets)
    loss.backward()
    reference_logits = reference(inputs)
    reference_loss = next_token_loss(reference_logits, targets)
    reference_loss.backward()
    reference_grads = {name: p.grad for name, p in reference.named_parameters()}
    grad_diff = 0.0
    for name, param in model.named_parameters():
        plain_name = name.replace("inner.", "")
        full = reference_grads[plain_name]
        if full.shape != param.grad.shape:
            dim = 0 if full.shape[0] != param.grad.shape[0] else 1
            full = full.chunk(size, dim=dim)[rank]
        grad_diff = max(grad_diff, (param.grad - full).abs().max().item())
    return Comparison(layout=f"explicit-tp{size}",
                      logits_max_diff=(logits - reference_logits).abs().max().item(),
                      loss_diff=abs(loss.item() - reference_loss.item()), grad_max_diff=grad_diff,
                      grad_max_abs=max(g.abs().max().item() for g in reference_grads.values()),
                      losses=[loss.item()], reference_losses=[reference_loss.item()])


def _timed(method: Callable[..., Any], totals: list[float], device: torch.device) -> Callable[..., Any]:
    def run(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            synchronize(device)
            totals.append(time.perf_counter() - start)

    return run


def measure_bubble(spec: RunSpec, schedule: str, n_microbatches: int, repeats: int = 3) -> dict[str, float]:
    """Measured idle fraction of a pipeline step, averaged over the ranks, next to the formula.

    A rank is busy while its stages compute a micro-batch's forward or backward (their
    ``forward_one_chunk``/``backward_one_chunk`` calls, timed in place during the real step); the
    rest of the step it waits for a neighbour. Bubble = 1 - busy / step time.
    """
    pp = dist.get_world_size()
    stages_per_rank = 2 if schedule == "interleaved-1f1b" else 1
    torch.manual_seed(spec.seed)
    pipeline, stages = build_pipeline(Transformer(spec.config).to(spec.torch_device), schedule, n_microbatches,
                                      stages_per_rank=stages_per_rank, device=spec.torch_device)
    busy: list[float] = []
    for stage in stages:
        stage.forward_one_chunk = _timed(stage.forward_one_chunk, busy, spec.torch_device)
        stage.backward_one_chunk = _timed(stage.backward_one_chunk, busy, spec.torch_device)
    inputs, targets = batch_tokens(spec)
    rank = dist.get_rank()
    fractions, step_seconds = [], []
    for repeat in range(repeats + 1):
        busy.clear()
        dist.barrier()
        start = time.perf_counter()
        losses: list[torch.Tensor] = []
        kwargs = {"target": targets, "losses": losses} if rank == pp - 1 else {}
        pipeline.step(*((inputs,) if rank == 0 else ()), **kwargs)
        synchronize(spec.torch_device)
        dist.barrier()
        elapsed = time.perf_counter() - start
        if repeat:
            fractions.append(1.0 - sum(busy) / elapsed)
            step_seconds.append(elapsed)
    fraction = torch.tensor(statistics.median(fractions))
    dist.all_reduce(fraction)
    return {"measured": fraction.item() / pp, "formula": bubble_fraction(pp, n_microbatches, stages_per_rank),
            "step_seconds": statistics.median(step_seconds)}


def measure_bubbles(cases: list[tuple[RunSpec, str, int]]) -> list[dict[str, float]]:
    """``measure_bubble`` for several (spec, schedule, micro-batches) cases in one process group."""
    return [measure_bubble(spec, schedule, n_microbatches) for spec, schedule, n_microbatches in cases]


def time_tensor_parallel_variants(spec: RunSpec, repeats: int = 3) -> dict[str, float]:
    """Median forward+backward seconds of one batch: unsharded, explicit collectives, DTensor plan
    without and with sequence parallelism (the last two also shard embedding and head).

    Run on every rank of the tensor-parallel group; the unsharded model runs on each rank alone.
    """
    torch.manual_seed(spec.seed)
    reference = Transformer(spec.config).to(spec.torch_device)
    mesh = layout_mesh(Layout(tp=dist.get_world_size()), spec.torch_device.type)
    variants = {
        "unsharded": copy.deepcopy(reference),
        "explicit": shard_explicitly(copy.deepcopy(reference)),
        "dtensor": parallelize_stage(copy.deepcopy(reference), mesh, Layout(tp=mesh.size(), sequence_parallel=False)),
        "dtensor-sp": parallelize_stage(copy.deepcopy(reference), mesh, Layout(tp=mesh.size())),
    }
    inputs, targets = batch_tokens(spec)
    seconds = {}
    for name, model in variants.items():
        samples = []
        for _ in range(repeats + 1):
            dist.barrier()
            start = time.perf_counter()
            logits = model(inputs)
            loss = vocab_parallel_cross_entropy(logits, targets)
            backward_vocab_parallel(loss) if isinstance(logits, DTensor) else loss.backward()
            synchronize(spec.torch_device)
            samples.append(time.perf_counter() - start)
        elapsed = torch.tensor(statistics.median(samples[1:]))
        dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
        seconds[name] = elapsed.item()
    return seconds
