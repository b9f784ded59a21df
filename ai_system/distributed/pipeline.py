"""Pipeline parallelism of the shared transformer with ``torch.distributed.pipelining``.

The model is cut by layers into ``num_stages`` stages; stage 0 keeps the embedding, the last stage
the final norm and output head (the transformer's forward skips whatever a stage set to None).
A batch is split into micro-batches and a schedule interleaves their forwards and backwards:

* GPipe: all forwards, then all backwards; holds m micro-batches of activations.
* 1F1B: after p warm-up forwards, alternate one forward and one backward; holds at most p.
* Interleaved 1F1B: each rank owns v non-adjacent stages, which cuts the bubble by v.

With p stages and m micro-batches of equal cost the idle fraction of a step (the bubble) is
(p-1)/(m+p-1) for GPipe and 1F1B and (p-1)/(v·m+p-1) interleaved (Narayanan et al., 2021, §2.2).
Real stages are neither equal nor free to talk to each other: ``simulate_pipeline`` replays each
rank's order of work with given durations and transfer times, which is the prediction the
measured bubble is held to (``ai_system.training.bubble``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe, ScheduleInterleaved1F1B

from ai_system.distributed.layout import SCHEDULES
from ai_system.models.transformer import Transformer


def bubble_fraction(num_stages: int, n_microbatches: int, stages_per_rank: int = 1) -> float:
    """Idle fraction of a pipeline step: (p-1)/(v·m+p-1) with p ranks, m micro-batches, v stages per rank."""
    if num_stages < 1 or n_microbatches < 1 or stages_per_rank < 1:
        raise ValueError(f"stages, micro-batches and stages per rank must be >= 1, got "
                         f"{num_stages}, {n_microbatches}, {stages_per_rank}")
    return (num_stages - 1) / (stages_per_rank * n_microbatches + num_stages - 1)


@dataclass(frozen=True)
class Work:
    """One piece of a rank's pipeline step: stage ``stage``'s forward ("F"), loss ("L", last stage only)
    or backward ("B") of micro-batch ``microbatch``, or its gradient scaling at the end ("R", microbatch -1)."""

    kind: str
    stage: int
    microbatch: int


def input_of(work: Work, num_stages: int) -> Work | None:
    """The work whose output ``work`` consumes (on whatever rank), or None."""
    if work.kind == "F" and work.stage > 0:
        return Work("F", work.stage - 1, work.microbatch)
    if work.kind == "L":
        return Work("F", work.stage, work.microbatch)
    if work.kind == "B":
        return Work("B", work.stage + 1, work.microbatch) if work.stage < num_stages - 1 else \
            Work("L", work.stage, work.microbatch)
    return None


def simulate_pipeline(programs: Sequence[Sequence[Work]], seconds: Mapping[Work, float],
                      transfer_seconds: float, num_stages: int, overhead_seconds: float = 0.0
                      ) -> tuple[float, list[float]]:
    """Step time and per-rank busy time of a pipeline step, from each rank's order of work.

    Each piece starts as soon as its rank is free and its input is there: a neighbour's forward
    output or gradient arrives ``transfer_seconds`` after it is computed (no delay on the same
    rank); ``seconds[work]`` is how long each piece takes, and ``overhead_seconds`` what the
    schedule itself spends on a rank between two pieces (posting sends and receives, bookkeeping).
    """
    rank_of = {work.stage: rank for rank, program in enumerate(programs) for work in program}
    done: dict[Work, float] = {}
    free = [0.0] * len(programs)
    position = [0] * len(programs)
    while any(position[rank] < len(program) for rank, program in enumerate(programs)):
        progressed = False
        for rank, program in enumerate(programs):
            while position[rank] < len(program):
                work = program[position[rank]]
                needed = input_of(work, num_stages)
                if needed is not None and needed not in done:
                    break
                arrival = 0.0 if needed is None else \
                    done[needed] + (transfer_seconds if rank_of[needed.stage] != rank else 0.0)
                free[rank] = max(free[rank] + (overhead_seconds if position[rank] else 0.0), arrival) \
                    + seconds[work]
                done[work] = free[rank]
                position[rank] += 1
                progressed = True
        if not progressed:
            raise ValueError(f"the programs deadlock: every rank waits for work no rank has done ({position})")
    busy = [sum(seconds[work] for work in program) for program in programs]
    return max(free), busy


def stage_layer_ranges(n_layers: int, num_stages: int) -> list[range]:
    """Contiguous, balanced layer ranges: earlier stages take the remainder."""
    if not 1 <= num_stages <= n_layers:
        raise ValueError(f"num_stages must be between 1 and n_layers={n_layers}, got {num_stages}")
    base, extra = divmod(n_layers, num_stages)
    bounds = [0]
    for stage in range(num_stages):
        bounds.append(bounds[-1] + base + (stage < extra))
    return [range(bounds[i], bounds[i + 1]) for i in range(num_stages)]


def stage_module(model: Transformer, stage_index: int, num_stages: int) -> Transformer:
    """A copy of ``model`` keeping only what stage ``stage_index`` of ``num_stages`` computes."""
    if not 0 <= stage_index < num_stages:
        raise ValueError(f"stage_index must be in [0, {num_stages}), got {stage_index}")
    owned = stage_layer_ranges(model.config.n_layers, num_stages)[stage_index]
    stage = copy.deepcopy(model)
    for name in list(stage.layers.keys()):
        if int(name) not in owned:
            del stage.layers[name]
    if stage_index > 0:
        stage.tok_embeddings = None
    if stage_index < num_stages - 1:
        stage.norm = None
        stage.output = None
    return stage


def next_token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of logits (batch, seq, vocab) against token ids (batch, seq)."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())


def rank_stage_indices(rank: int, pp_size: int, stages_per_rank: int) -> list[int]:
    """Stages a rank owns: with v per rank, the loop-around assignment rank, rank+p, rank+2p, ..."""
    return [rank + i * pp_size for i in range(stages_per_rank)]


def build_schedule(stages: list[PipelineStage], schedule: str, n_microbatches: int,
                   loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = next_token_loss,
                   ) -> ScheduleGPipe | Schedule1F1B | ScheduleInterleaved1F1B:
    """The schedule over this rank's ``stages`` (one, or v for interleaved 1F1B).

    Drive it with ``schedule.step(tokens, target=targets, losses=losses)`` on the first and last
    stage ranks (others call ``step()``); gradients are averaged over micro-batches.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if schedule != "interleaved-1f1b" and len(stages) != 1:
        raise ValueError(f"{schedule} runs one stage per rank; got {len(stages)}")
    if schedule == "gpipe":
        return ScheduleGPipe(stages[0], n_microbatches, loss_fn=loss_fn)
    if schedule == "1f1b":
        return Schedule1F1B(stages[0], n_microbatches, loss_fn=loss_fn)
    return ScheduleInterleaved1F1B(stages, n_microbatches, loss_fn=loss_fn)
