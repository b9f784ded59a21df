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
from dataclasses import replace
from typing import Any

import psutil
import torch
import torch.distributed as dist
from torch.utils._python_dispatch import TorchDispatchMode, is_traceable_wrapper_subclass
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

from ai_system.bench.peaks import synchronize
from ai_system.distributed.launch import init_runtime
from ai_system.distributed.layout import Layout
from ai_system.planning.accelerators import Accelerator
from ai_system.planning.planner import PRECISIONS, Job, estimate, search
from ai_system.training.config import TrainConfig
from ai_system.training.parity import global_batches
from ai_system.training.trainer import Trainer


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


def measure_layout(config: TrainConfig, repeats: int = 3) -> dict[str, float]:
    """Peak tensor bytes (max over ranks) and median step seconds of the trainer under ``config.layout``.

    Run on every rank of a ``config.layout.world_size`` group. The first step (optimizer state
    creation, pipeline shape inference) is left out of the time; the peak covers every step.
    """
    device = init_runtime().device
    trainer = Trainer(config, device, config.layout.build_mesh(device.type))
    batches = global_batches(config)
    gc.collect()
    if device.type == "cuda":
        tracker: LiveTensorMemory | CudaPeakMemory = CudaPeakMemory(device)
    else:
        tracker = LiveTensorMemory()
        tracker.track(*(t for part in trainer.parts for t in itertools.chain(part.parameters(), part.buffers())))
    step_seconds = []
    with tracker:
        for _ in range(repeats + 1):
            batch = trainer.replica_batch(batches.next_batch().to(device))
            dist.barrier()
            start = time.perf_counter()
            trainer.step(batch)
            synchronize(device)
            dist.barrier()
            step_seconds.append(time.perf_counter() - start)
    peak = torch.tensor(float(tracker.peak), device=device)
    dist.all_reduce(peak, op=dist.ReduceOp.MAX)
    return {"peak_bytes": peak.item(), "step_seconds": statistics.median(step_seconds[1:])}


def planned_job(config: TrainConfig) -> Job:
    """The planner's description of a training config: its model, batch and precision."""
    return Job(config.model_config(), seq_len=config.seq_len, global_batch=config.batch_size,
               precision=PRECISIONS["bf16-mixed" if config.param_dtype == "bfloat16" else "fp32"])


def measured_machine(config: TrainConfig, allreduce_bytes: int = 16 << 20, repeats: int = 3) -> Accelerator:
    """This machine as the planner sees it, measured on this rank: effective FLOP/s of one rank's
    single-process training step of ``config`` and the all-reduce bus bandwidth of the group
    (unbounded for a single rank, which never communicates)."""
    device = init_runtime().device
    single = Trainer(replace(config, layout=Layout()), device, mesh=None)
    batch = global_batches(config).next_batch().to(device)
    seconds = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        single.step(batch)
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    flops = config.model_config().train_flops_per_token(config.seq_len) * config.batch_size * config.seq_len
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
    memory = (torch.cuda.get_device_properties(device).total_memory if device.type == "cuda"
              else psutil.virtual_memory().total / world)
    measured = torch.tensor([flops / statistics.median(seconds[1:]), bus_bandwidth, memory], dtype=torch.float64,
                            device=device)
    dist.broadcast(measured, src=0)  # every rank plans with the same machine, so their plans agree
    rank_flops, bus_bandwidth, memory = measured.tolist()
    return Accelerator(name=f"{device.type}-{dist.get_backend()}", peak_flops=rank_flops,
                       memory_bytes=memory, intra_node_bandwidth=bus_bandwidth,
                       inter_node_bandwidth=bus_bandwidth, devices_per_node=world,
                       source="measured in this run: one rank's single-process training step (FLOP/s), an "
                              "all-reduce over the group (bus bandwidth), memory per rank")


def top_plans(config: TrainConfig, count: int) -> list[Layout]:
    """The planner's fastest layout of each parallelism (dp × tp × pp split and schedule) for this group,
    best first, ``count`` of them: what ``ai-system plan --gpu this-machine`` would recommend."""
    accelerator = measured_machine(config)
    ranked = search(planned_job(config), accelerator, dist.get_world_size(), compute_efficiency=1.0)
    chosen: dict[tuple[int, int, int, str], Layout] = {}
    for result in ranked:
        layout = result.layout
        chosen.setdefault((layout.dp, layout.tp, layout.pp, layout.schedule if layout.pp > 1 else ""), layout)
    return list(chosen.values())[:count]


def plan_and_verify(config: TrainConfig, count: int) -> list[dict[str, float | str]]:
    """Plan this machine, then run the top plans with the trainer: predicted next to measured, per plan."""
    return validate_layouts([replace(config, layout=layout) for layout in top_plans(config, count)])


def validate_layouts(configs: list[TrainConfig]) -> list[dict[str, float | str]]:
    """Planner predictions next to measurements for configs of one world size, in one process group.

    The planner's compute rate and bandwidth are measured first (``measured_machine``, efficiency 1),
    so the time error is the planner's model of parallel overheads, not a hardware guess.
    """
    accelerator = measured_machine(configs[0])
    rows: list[dict[str, float | str]] = []
    for config in configs:
        measured = measure_layout(config)
        predicted = estimate(planned_job(config), config.layout, accelerator, compute_efficiency=1.0)
        layout = config.layout
        rows.append({"layout": layout.label(), "ranks": layout.world_size,
                     "schedule": layout.schedule if layout.pp > 1 else "none",
                     "sequence_parallel": layout.uses_sequence_parallel, "recompute": layout.recompute,
                     "measured_bytes": measured["peak_bytes"], "predicted_bytes": predicted.memory.total,
                     "measured_seconds": measured["step_seconds"], "predicted_seconds": predicted.iteration_seconds,
                     "rank_flops": accelerator.peak_flops, "bus_bandwidth": accelerator.intra_node_bandwidth})
    return rows
