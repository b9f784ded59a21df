"""The pipeline bubble as the trainer runs it: measured idle fraction of a step next to the formula.

A rank is busy while one of its stages computes a micro-batch's forward or backward; the rest of
the step it waits for a neighbour (or sends and receives). ``TimedStage`` is a ``PipelineStage``
that adds up that compute time, and ``measure_bubble`` runs the real trainer with it:
bubble = 1 - busy / step time, averaged over the pipeline ranks.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.pipelining import PipelineStage

from ai_system.bench.peaks import synchronize
from ai_system.distributed.launch import init_runtime
from ai_system.distributed.pipeline import bubble_fraction
from ai_system.training.config import TrainConfig
from ai_system.training.parity import global_batches
from ai_system.training.trainer import Trainer


class TimedStage(PipelineStage):
    """A pipeline stage that records the seconds its forward and backward chunks compute."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.busy_seconds = 0.0

    def forward_one_chunk(self, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return super().forward_one_chunk(*args, **kwargs)
        finally:
            synchronize(self.device)
            self.busy_seconds += time.perf_counter() - start

    def backward_one_chunk(self, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return super().backward_one_chunk(*args, **kwargs)
        finally:
            synchronize(self.device)
            self.busy_seconds += time.perf_counter() - start


def measure_bubble(config: TrainConfig, repeats: int = 3) -> dict[str, float]:
    """Median measured bubble over ``repeats`` steps (after one warm-up step), next to the formula.

    Run on every rank of a pipeline-only layout (``config.layout.pp`` ranks).
    """
    layout = config.layout
    if layout.pp < 2 or layout.world_size != layout.pp:
        raise ValueError(f"measure_bubble wants a pipeline-only layout (pp >= 2, dp = tp = 1), got {layout}")
    device = init_runtime().device
    trainer = Trainer(config, device, layout.build_mesh(device.type), stage_type=TimedStage)
    batch = global_batches(config).next_batch().to(device)
    fractions, step_seconds = [], []
    for repeat in range(repeats + 1):
        for stage in trainer.stages:
            stage.busy_seconds = 0.0
        dist.barrier()
        start = time.perf_counter()
        trainer.forward_backward(batch)
        synchronize(device)
        dist.barrier()
        elapsed = time.perf_counter() - start
        trainer.optimizer_step()
        if repeat:
            fractions.append(1.0 - sum(stage.busy_seconds for stage in trainer.stages) / elapsed)
            step_seconds.append(elapsed)
    fraction = torch.tensor(statistics.median(fractions))
    dist.all_reduce(fraction)
    return {"measured": fraction.item() / layout.pp,
            "formula": bubble_fraction(layout.pp, trainer.n_microbatches, layout.virtual_stages),
            "step_seconds": statistics.median(step_seconds)}


def measure_bubbles(configs: list[TrainConfig]) -> list[dict[str, float]]:
    """``measure_bubble`` for several pipeline configs of one world size in one process group."""
    return [measure_bubble(config) for config in configs]
