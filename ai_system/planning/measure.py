"""Measure what the planner predicts, on the layouts that run here: peak memory and step time.

CPU tensors have no allocator statistics, so ``LiveTensorMemory`` counts the bytes of live tensor
storages itself: every op's outputs are seen through a dispatch mode, a storage is counted once
however many views share it, and it is uncounted when Python frees it or FSDP resizes it to zero.
That is the quantity the planner models (tensor bytes, not allocator caching or fragmentation).
On a GPU the caching allocator's own peak (``torch.cuda.max_memory_allocated``) is read instead.
"""

from __future__ import annotations

import gc
import itertools
import math
import statistics
import time
import weakref
from typing import Any

import psutil
import torch
import torch.distributed as dist
from torch.utils._python_dispatch import TorchDispatchMode, is_traceable_wrapper_subclass
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

from ai_system.bench.peaks import synchronize
from ai_system.models.transformer import Transformer
from ai_system.parallel.compose import Layout
from ai_system.parallel.pipeline import next_token_loss
from ai_system.parallel.runs import LayoutTrainer, RunSpec, batch_tokens
from ai_system.planning.accelerators import Accelerator
from ai_system.planning.planner import PRECISIONS, Job, Parallelism, estimate


def _storages(tensor: torch.Tensor) -> list[torch.UntypedStorage]:
    if is_traceable_wrapper_subclass(tensor):
        inner_names, _ = tensor.__tensor_flatten__()
        inner = [getattr(tensor, name) for name in inner_names]
        return [storage for part in inner if isinstance(part, torch.Tensor) for storage in _storages(part)]
    return [tensor.untyped_storage()]


class LiveTensorMemory(TorchDispatchMode):
    """Current and peak bytes of tensor storages alive while the mode is active (any device)."""

    def __init__(self) -> None:
        super().__init__()
        self.current = 0
        self.peak = 0
        self._tokens: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self._sizes: dict[int, int] = {}
        self._next_token = itertools.count()
        self._original_resize = torch.UntypedStorage.resize_

    def track(self, *tensors: torch.Tensor) -> None:
        """Count tensors that exist before the mode starts (parameters, buffers)."""
        for tensor in tensors:
            for storage in _storages(tensor):
                self._count(storage)

    def _count(self, storage: torch.UntypedStorage) -> None:
        if storage in self._tokens:
            return
        token = next(self._next_token)
        self._tokens[storage] = token
        self._resized(token, storage.nbytes())
        weakref.finalize(storage, self._resized, token, 0)

    def _resized(self, token: int, nbytes: int) -> None:
        self.current += nbytes - self._sizes.get(token, 0)
        self._sizes[token] = nbytes
        self.peak = max(self.peak, self.current)

    def reset_peak(self) -> None:
        self.peak = self.current

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for leaf in tree_flatten(out)[0]:
            if isinstance(leaf, torch.Tensor):
                for storage in _storages(leaf):
                    self._count(storage)
        return out

    def __enter__(self) -> LiveTensorMemory:
        tracker, original = self, self._original_resize

        def resize(storage: torch.UntypedStorage, nbytes: int) -> torch.UntypedStorage:
            result = original(storage, nbytes)
            if storage in tracker._tokens:
                tracker._resized(tracker._tokens[storage], nbytes)
            else:
                tracker._count(storage)
            return result

        torch.UntypedStorage.resize_ = resize
        return super().__enter__()

    def __exit__(self, *exc: object) -> None:
        torch.UntypedStorage.resize_ = self._original_resize
        super().__exit__(*exc)


class CudaPeakMemory:
    """Peak bytes the CUDA caching allocator handed out while active: the GPU's counterpart."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak = 0

    def __enter__(self) -> CudaPeakMemory:
        torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc: object) -> None:
        self.peak = torch.cuda.max_memory_allocated(self.device)


def measure_layout(layout: Layout, spec: RunSpec) -> dict[str, float]:
    """Peak tensor bytes (max over ranks) and median step seconds of ``spec.steps`` steps.

    Run on every rank of a ``layout.world_size`` group. The first step (optimizer state creation,
    pipeline shape inference) is left out of the time; the peak covers every step.
    """
    torch.manual_seed(spec.seed)
    device = spec.torch_device
    trainer = LayoutTrainer(Transformer(spec.config).to(device), layout, spec)
    gc.collect()
    inputs, targets = batch_tokens(spec)
    if device.type == "cuda":
        tracker: LiveTensorMemory | CudaPeakMemory = CudaPeakMemory(device)
    else:
        tracker = LiveTensorMemory()
        tracker.track(*(t for module in trainer.modules
                        for t in itertools.chain(module.parameters(), module.buffers())))
    step_seconds = []
    with tracker:
        for _ in range(spec.steps):
            dist.barrier()
            start = time.perf_counter()
            trainer.step(inputs, targets)
            trainer.optimizer.step()
            trainer.optimizer.zero_grad(set_to_none=True)
            synchronize(device)
            dist.barrier()
            step_seconds.append(time.perf_counter() - start)
    peak = torch.tensor(float(tracker.peak), device=device)
    dist.all_reduce(peak, op=dist.ReduceOp.MAX)
    return {"peak_bytes": peak.item(), "step_seconds": statistics.median(step_seconds[1:] or step_seconds)}


def planned_layout(layout: Layout, spec: RunSpec) -> tuple[Job, Parallelism]:
    """The planner's description of a runnable layout: fp32 AdamW, FSDP (ZeRO-3) over dp."""
    n_microbatches = layout.n_microbatches if layout.pp > 1 else 1
    job = Job(spec.config, seq_len=spec.seq_len, global_batch=spec.batch, precision=PRECISIONS["fp32"])
    interleaved = layout.schedule == "interleaved-1f1b" and layout.pp > 1
    return job, Parallelism(
        tp=layout.tp, pp=layout.pp, dp=layout.dp, micro_batch=spec.batch // (layout.dp * n_microbatches),
        zero=3 if layout.dp > 1 else 0, recompute="full" if layout.checkpoint else "none",
        sequence_parallel=layout.uses_sequence_parallel, schedule=layout.schedule if layout.pp > 1 else "1f1b",
        virtual_stages=2 if interleaved else 1, vocab_parallel=layout.uses_vocab_parallel_loss)


def measured_machine(spec: RunSpec, allreduce_bytes: int = 16 << 20, repeats: int = 3) -> Accelerator:
    """This machine as the planner sees it, measured on this rank: effective FLOP/s of one rank's
    single-process training step of ``spec`` and the all-reduce bus bandwidth of the group
    (unbounded for a single rank, which never communicates)."""
    torch.manual_seed(spec.seed)
    device = spec.torch_device
    model = Transformer(spec.config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.lr)
    inputs, targets = batch_tokens(spec)
    seconds = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        next_token_loss(model(inputs), targets).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    flops = spec.config.train_flops_per_token(spec.seq_len) * spec.batch * spec.seq_len
    buffer = torch.zeros(allreduce_bytes // 4, device=device)
    world = dist.get_world_size()
    transfers = []
    for _ in range(repeats + 1):
        dist.barrier()
        start = time.perf_counter()
        dist.all_reduce(buffer)
        synchronize(device)
        transfers.append(time.perf_counter() - start)
    bus_bandwidth = 2 * (world - 1) / world * allreduce_bytes / statistics.median(transfers[1:]) or math.inf
    return Accelerator(name=f"{device.type}-{dist.get_backend()}", peak_flops=flops / statistics.median(seconds[1:]),
                       memory_bytes=float(torch.cuda.get_device_properties(device).total_memory
                                          if device.type == "cuda" else psutil.virtual_memory().total),
                       intra_node_bandwidth=bus_bandwidth, inter_node_bandwidth=bus_bandwidth,
                       devices_per_node=world,
                       source="measured in this run: one rank's single-process training step (FLOP/s) and an "
                              "all-reduce over the group (bus bandwidth)")


def validate_layouts(layouts: list[Layout], spec: RunSpec) -> list[dict[str, float | str]]:
    """Planner predictions next to measurements for layouts of one world size, in one process group.

    The planner's compute rate and bandwidth are measured first (``measured_machine``, efficiency 1),
    so the time error is the planner's model of parallel overheads, not a hardware guess.
    """
    accelerator = measured_machine(spec)
    rows: list[dict[str, float | str]] = []
    for layout in layouts:
        measured = measure_layout(layout, spec)
        job, parallelism = planned_layout(layout, spec)
        predicted = estimate(job, parallelism, accelerator, compute_efficiency=1.0)
        rows.append({"layout": layout.label(), "ranks": layout.world_size,
                     "schedule": layout.schedule if layout.pp > 1 else "none",
                     "sequence_parallel": layout.uses_sequence_parallel, "checkpoint": layout.checkpoint,
                     "measured_bytes": measured["peak_bytes"], "predicted_bytes": predicted.memory.total,
                     "measured_seconds": measured["step_seconds"], "predicted_seconds": predicted.iteration_seconds,
                     "rank_flops": accelerator.peak_flops, "bus_bandwidth": accelerator.intra_node_bandwidth})
    return rows
