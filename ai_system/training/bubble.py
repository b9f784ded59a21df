"""The pipeline bubble as the trainer runs it: measured, predicted from the same run, and by the formula.

A rank is busy while one of its stages computes: a micro-batch's forward or backward, the loss on
the last stage, the gradient scaling at the end of the step. The rest of the step it waits for a
neighbour, sends, receives or runs the schedule's own bookkeeping. ``TimedStage`` is a
``PipelineStage`` that records each of those pieces as it runs (the loss through a timed loss
function), and ``measure_bubble`` runs the real trainer with it:

* **measured**: bubble = 1 - busy / step time, averaged over the pipeline ranks;
* **predicted**: ``pipeline.simulate_pipeline`` replays every rank's order of work with the
  seconds each piece took, the point-to-point transfer time and the schedule's own overhead
  between two pieces, all measured in the same step, and reads the bubble off the simulated step;
* **formula**: (p-1)/(v·m+p-1), which assumes equal stages that never communicate; its error is
  the capacity planner's business.

The measured bubble is within a few points of the prediction when nothing else is going on; what
is left between them is per-piece Python overhead and, on a shared CPU, ranks slowing each other.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.pipelining import PipelineStage

from ai_system.bench.peaks import synchronize
from ai_system.distributed.launch import init_runtime
from ai_system.distributed.pipeline import Work, bubble_fraction, input_of, next_token_loss, simulate_pipeline
from ai_system.training.config import TrainConfig
from ai_system.training.parity import global_batches
from ai_system.training.trainer import Trainer

TRANSFER_REPEATS = 20


class TimedStage(PipelineStage):
    """A pipeline stage that records each piece of work it computes, in order, with its seconds."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.record: list[tuple[Work, float, float]] = []
        """(work, start time, seconds) of each piece since the list was last emptied."""

    def timed(self, kind: str, microbatch: int, run: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        try:
            return run()
        finally:
            synchronize(self.device)
            self.record.append((Work(kind, self.stage_index, microbatch), start, time.perf_counter() - start))

    def forward_one_chunk(self, fwd_chunk_id: int, *args: Any, **kwargs: Any) -> Any:
        return self.timed("F", fwd_chunk_id, lambda: super(TimedStage, self).forward_one_chunk(
            fwd_chunk_id, *args, **kwargs))

    def backward_one_chunk(self, bwd_chunk_id: int, *args: Any, **kwargs: Any) -> Any:
        return self.timed("B", bwd_chunk_id, lambda: super(TimedStage, self).backward_one_chunk(
            bwd_chunk_id, *args, **kwargs))

    def perform_reduce_grad(self, *args: Any, **kwargs: Any) -> Any:
        return self.timed("R", -1, lambda: super(TimedStage, self).perform_reduce_grad(*args, **kwargs))


class TimedLoss:
    """The schedule's loss function, timed into the last stage's record (called once per micro-batch, in order)."""

    def __init__(self) -> None:
        self.stage: TimedStage | None = None
        self.microbatch = 0

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        assert self.stage is not None, "TimedLoss.stage must be set to the last stage"
        self.microbatch += 1
        return self.stage.timed("L", self.microbatch - 1, lambda: next_token_loss(logits, targets))


def transfer_seconds(shape: tuple[int, ...], device: torch.device, repeats: int = TRANSFER_REPEATS) -> float:
    """One-way seconds to send a tensor of ``shape`` from rank 0 to rank 1 (median round trip / 2); collective."""
    buffer = torch.zeros(shape, device=device)
    rank = dist.get_rank()
    round_trips = []
    for _ in range(repeats + 1):
        dist.barrier()
        start = time.perf_counter()
        if rank == 0:
            dist.send(buffer, 1)
            dist.recv(buffer, 1)
        elif rank == 1:
            dist.recv(buffer, 0)
            dist.send(buffer, 0)
        synchronize(device)
        round_trips.append(time.perf_counter() - start)
    seconds = torch.tensor(statistics.median(round_trips[1:]) / 2, dtype=torch.float64)
    dist.broadcast(seconds, src=0)
    return float(seconds)


def schedule_overhead(ranks: list[list[tuple[Work, float, float]]], transfer: float, num_stages: int) -> list[float]:
    """Gaps between consecutive pieces on a rank whose input was already there: what the schedule itself
    spends between two pieces. ``ranks[r]`` is rank r's record of one step (clocks are shared: the
    same machine's monotonic clock)."""
    rank_of = {work.stage: rank for rank, record in enumerate(ranks) for work, _, _ in record}
    ended = {work: start + took for record in ranks for work, start, took in record}
    gaps = []
    for rank, record in enumerate(ranks):
        for (_, start, took), (work, next_start, _) in zip(record, record[1:], strict=False):
            needed = input_of(work, num_stages)
            ready = 0.0 if needed is None else ended[needed] + (transfer if rank_of[needed.stage] != rank else 0.0)
            if ready <= start + took:
                gaps.append(next_start - start - took)
    return gaps


def _summarize(ranks: list[list[list[tuple[Work, float, float]]]], step_seconds: list[float],
               transfer: float, num_stages: int, formula: float) -> dict[str, Any]:
    """Measured and predicted bubble of each step (medians over the steps); ``ranks[r][i]`` is rank r's
    record of step i in the order it ran. The prediction replays every rank's order of work with the
    seconds each piece took in that step, the measured transfer time and the schedule's median
    overhead between two pieces."""
    overhead = statistics.median(gap for step in range(len(step_seconds))
                                 for gap in schedule_overhead([rank[step] for rank in ranks], transfer, num_stages))
    measured, predicted, simulated = [], [], []
    for step, seconds in enumerate(step_seconds):
        pieces = [rank[step] for rank in ranks]
        makespan, busy = simulate_pipeline([[work for work, _, _ in record] for record in pieces],
                                           {work: took for record in pieces for work, _, took in record},
                                           transfer, num_stages, overhead)
        measured.append(1 - statistics.mean(busy) / seconds)
        predicted.append(1 - statistics.mean(busy) / makespan)
        simulated.append(makespan)
    by_kind: dict[str, list[float]] = {}
    for record in (record for rank in ranks for record in rank):
        for work, _, took in record:
            by_kind.setdefault(f"{work.kind}{work.stage}", []).append(took)
    return {"measured": statistics.median(measured), "measured_steps": measured,
            "predicted": statistics.median(predicted), "predicted_steps": predicted, "formula": formula,
            "error_steps": [abs(m / p - 1) for m, p in zip(measured, predicted, strict=True)],
            "step_seconds": statistics.median(step_seconds), "predicted_step_seconds": statistics.median(simulated),
            "transfer_seconds": transfer, "overhead_seconds": overhead,
            "work_seconds": {name: statistics.median(values) for name, values in sorted(by_kind.items())}}


def measure_bubble(config: TrainConfig, repeats: int = 3) -> dict[str, Any]:
    """Measured, predicted and formula bubble of ``config``'s pipeline (medians over ``repeats`` steps after a
    warm-up step), with the step time measured and simulated, each kind of work's median seconds and the
    one-way transfer time of a micro-batch's activations.

    Run on every rank of a pipeline-only layout (``config.layout.pp`` ranks).
    """
    layout = config.layout
    if layout.pp < 2 or layout.world_size != layout.pp:
        raise ValueError(f"measure_bubble wants a pipeline-only layout (pp >= 2, dp = tp = 1), got {layout}")
    device = init_runtime().device
    loss = TimedLoss()
    trainer = Trainer(config, device, layout.build_mesh(device.type), stage_type=TimedStage, pipeline_loss=loss)
    stages: list[TimedStage] = trainer.stages  # type: ignore[assignment]
    if trainer.is_last_stage:
        loss.stage = next(stage for stage in stages if stage.is_last)
    batch = global_batches(config).next_batch().to(device)
    records, step_seconds = [], []
    for repeat in range(repeats + 1):
        for stage in stages:
            stage.record = []
        loss.microbatch = 0
        dist.barrier()
        start = time.perf_counter()
        trainer.forward_backward(batch)
        synchronize(device)
        dist.barrier()
        elapsed = torch.tensor(time.perf_counter() - start, dtype=torch.float64)
        dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
        trainer.optimizer_step()
        if repeat:
            records.append(sorted((piece for stage in stages for piece in stage.record), key=lambda piece: piece[1]))
            step_seconds.append(float(elapsed))
    gathered: list[list[list[tuple[Work, float, float]]] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, records)
    activation = (config.batch_size // trainer.n_microbatches, config.seq_len, trainer.model_config.dim)
    return _summarize(gathered, step_seconds, transfer_seconds(activation, device), layout.num_stages,
                      bubble_fraction(layout.pp, trainer.n_microbatches, layout.virtual_stages))


def measure_bubbles(configs: list[TrainConfig]) -> list[dict[str, Any]]:
    """``measure_bubble`` for several pipeline configs of one world size in one process group."""
    return [measure_bubble(config) for config in configs]
