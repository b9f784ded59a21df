"""Data-parallel scaling, judged against the ceiling measured next to it in the same process group.

Two ranks on one machine never reach twice one rank, even with no communication at all: they share
memory bandwidth, caches and the clock the package can hold with every core busy. So FSDP scaling
is judged against a ceiling measured in the same run with the same threads: every rank training
its own unsharded copy on its own per-rank batch at the same time, with no communication at all.
``measure_scaling`` runs, interleaved over several rounds so that a busy moment on a shared
machine hits all three alike:

* **alone**: rank 0 trains the unsharded model on its per-rank batch while the others wait in a
  barrier (blocked in a socket read, not spinning);
* **independent**: every rank trains its own unsharded model on its per-rank batch at once, the
  ceiling;
* **sharded**: the config's layout (FSDP over all ranks) trains the global batch.

Every variant runs the whole optimizer step (forward, backward, clipping, AdamW) on the same batch
sizes. To say why the ceiling is below the ranks' count, it also measures the copy bandwidth and
the matmul rate of one rank alone and of all ranks at once.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
import torch.distributed as dist

from ai_system.bench.peaks import copy_workload, matmul_workload, synchronize
from ai_system.distributed.launch import init_runtime
from ai_system.distributed.layout import Layout
from ai_system.training.config import TrainConfig
from ai_system.training.parity import global_batches
from ai_system.training.profiling import step_profiler
from ai_system.training.trainer import Trainer

COPY_BYTES = 64 << 20
MATMUL_N = 512


@dataclass(frozen=True)
class ScalingRound:
    """One round's global samples/s of each variant, on ``ranks`` ranks."""

    alone: float
    independent: float
    sharded: float
    ranks: int

    @property
    def efficiency(self) -> float:
        """Sharded samples/s over perfect scaling: ranks × one rank alone."""
        return self.sharded / (self.ranks * self.alone)

    @property
    def ceiling(self) -> float:
        """The no-communication ceiling over perfect scaling: what sharing the machine costs."""
        return self.independent / (self.ranks * self.alone)

    @property
    def of_ceiling(self) -> float:
        """Sharded samples/s over the ceiling: what communicating costs."""
        return self.sharded / self.independent


@dataclass(frozen=True)
class Scaling:
    """Every round, and the copy bandwidth and matmul rate of rank 0 alone and of all ranks at once (summed)."""

    rounds: list[ScalingRound]
    copy_bytes_per_s: dict[str, float]
    matmul_flops: dict[str, float]


def _timed(run: Callable[[], object], device: torch.device) -> float:
    start = time.perf_counter()
    run()
    synchronize(device)
    return time.perf_counter() - start


def _together(run: Callable[[], object], steps: int, warmup: int, device: torch.device) -> float:
    """This rank's median seconds of ``run``, every rank starting each repeat at the same moment."""
    seconds = []
    for index in range(warmup + steps):
        dist.barrier()
        elapsed = _timed(run, device)
        if index >= warmup:
            seconds.append(elapsed)
    return statistics.median(seconds)


def _alone(run: Callable[[], object], steps: int, warmup: int, device: torch.device) -> float:
    """Rank 0's median seconds of ``run`` while the other ranks wait (blocked in a collective); on every rank."""
    seconds = torch.zeros((), dtype=torch.float64)
    dist.barrier()
    if dist.get_rank() == 0:
        seconds += statistics.median([_timed(run, device) for _ in range(warmup + steps)][warmup:])
    dist.all_reduce(seconds)
    return float(seconds)


def _summed(value: float) -> float:
    total = torch.tensor(value, dtype=torch.float64)
    dist.all_reduce(total)
    return float(total)


def measure_scaling(config: TrainConfig, steps: int = 4, warmup: int = 2, rounds: int = 3,
                    profile_dir: str | None = None) -> Scaling:
    """Run on every rank of a ``config.layout.world_size`` group (see the module doc); the same answer on all.

    ``profile_dir``: also write a ``step_profiler`` trace of the sharded steps of the last round.
    """
    device = init_runtime().device
    ranks = dist.get_world_size()
    per_rank = config.batch_size // config.layout.dp
    sharded = Trainer(config, device, config.layout.build_mesh(device.type))
    unsharded = Trainer(replace(config, layout=Layout(), batch_size=per_rank), device, mesh=None)
    batch = sharded.replica_batch(global_batches(config).next_batch().to(device))
    results = []
    for index in range(rounds):
        alone = per_rank / _alone(lambda: unsharded.step(batch), steps, warmup, device)
        independent = _summed(per_rank / _together(lambda: unsharded.step(batch), steps, warmup, device))
        with step_profiler(profile_dir if index == rounds - 1 else None, dist.get_rank()) as profiled_step:
            sharded_seconds = _together(lambda: (sharded.step(batch), profiled_step()), steps, warmup, device)
        results.append(ScalingRound(alone=alone, independent=independent,
                                    sharded=config.batch_size / sharded_seconds, ranks=ranks))
    copy = copy_workload(COPY_BYTES, device)
    matmul = matmul_workload(MATMUL_N, "float32", device)
    return Scaling(rounds=results,
                   copy_bytes_per_s={"alone": copy.work / _alone(copy.run, 5, 2, device),
                                     "together": _summed(copy.work / _together(copy.run, 5, 2, device))},
                   matmul_flops={"alone": matmul.work / _alone(matmul.run, 5, 2, device),
                                 "together": _summed(matmul.work / _together(matmul.run, 5, 2, device))})
