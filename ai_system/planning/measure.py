"""Measure what the planner predicts, on the layouts that run here: peak memory and step time.

CPU tensors have no allocator statistics, so ``LiveTensorMemory`` counts the bytes of live tensor
storages itself: every op's outputs are seen through a dispatch mode, a storage is counted once
however many views share it, and it is uncounted when Python frees it or FSDP resizes it to zero.
That is the quantity the planner models (tensor bytes, not allocator caching or fragmentation).
"""

from __future__ import annotations

import gc
import itertools
import statistics
import time
import weakref
from typing import Any

import torch
import torch.distributed as dist
from torch.utils._python_dispatch import TorchDispatchMode, is_traceable_wrapper_subclass
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

from ai_system.models.transformer import Transformer
from ai_system.parallel.compose import Layout
from ai_system.parallel.runs import LayoutTrainer, RunSpec, batch_tokens
from ai_system.planning.planner import PRECISIONS, Job, Parallelism


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


def measure_layout(layout: Layout, spec: RunSpec) -> dict[str, float]:
    """Peak live tensor bytes (max over ranks) and median step seconds of ``spec.steps`` steps.

    Run on every rank of a ``layout.world_size`` group. The first step (optimizer state creation,
    pipeline shape inference) is left out of the time; the peak covers every step.
    """
    torch.manual_seed(spec.seed)
    trainer = LayoutTrainer(Transformer(spec.config), layout, spec)
    gc.collect()
    inputs, targets = batch_tokens(spec)
    tracker = LiveTensorMemory()
    tracker.track(*(t for module in trainer.modules for t in itertools.chain(module.parameters(), module.buffers())))
    step_seconds = []
    with tracker:
        for _ in range(spec.steps):
            dist.barrier()
            start = time.perf_counter()
            trainer.step(inputs, targets)
            trainer.optimizer.step()
            trainer.optimizer.zero_grad(set_to_none=True)
            dist.barrier()
            step_seconds.append(time.perf_counter() - start)
    peak = torch.tensor(float(tracker.peak))
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
        virtual_stages=2 if interleaved else 1)


def measure_layouts(layouts: list[Layout], spec: RunSpec) -> list[dict[str, float]]:
    """``measure_layout`` for several layouts of one world size in one process group."""
    return [measure_layout(layout, spec) for layout in layouts]
