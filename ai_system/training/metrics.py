"""Per-step training metrics: throughput, MFU and memory, to the console and a JSON-lines file.

MFU (model FLOPs utilization) = model FLOPs per token × tokens/s ÷ peak FLOP/s, where the FLOPs
per token come from ``ModelConfig.train_flops_per_token`` (6·N without the input embedding, plus
attention's 12·L·d·T) and the peak is a dense matmul measured on the same devices in the same
run, summed over ranks. Activation recomputation is not counted as useful work.
"""

from __future__ import annotations

import json
import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import torch
from tqdm import tqdm


@dataclass(frozen=True)
class StepMetrics:
    step: int
    loss: float
    lr: float
    grad_norm: float
    step_time_s: float
    tokens_per_s: float
    samples_per_s: float
    mfu: float
    peak_memory_bytes: int


def mfu(flops_per_token: float, tokens_per_s: float, peak_flops: float) -> float:
    if peak_flops <= 0:
        raise ValueError(f"peak_flops must be positive, got {peak_flops}")
    return flops_per_token * tokens_per_s / peak_flops


def peak_memory_bytes(device: torch.device) -> int:
    """Peak allocated memory on a GPU, or this process's peak resident set on CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _ends_mid_line(path: Path) -> bool:
    if not path.is_file() or path.stat().st_size == 0:
        return False
    with path.open("rb") as handle:
        handle.seek(-1, 2)
        return handle.read(1) != b"\n"


class MetricsLog:
    """Rank 0's record of the run: a progress bar plus one JSON object per line (steps and events), each
    stamped with the wall-clock ``time`` it was written (what recovery after a restart is measured by)."""

    def __init__(self, path: str | Path | None, total_steps: int, start_step: int = 0, enabled: bool = True,
                 progress: bool = True) -> None:
        self.enabled = enabled
        self._file: IO[str] | None = None
        self._bar: tqdm | None = None
        if not enabled:
            return
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            torn = _ends_mid_line(Path(path))
            self._file = Path(path).open("a")
            if torn:
                self._file.write("\n")  # the line a killed run left half-written stays alone on its line
        if progress:
            self._bar = tqdm(total=total_steps, initial=start_step, unit="step", file=sys.stderr,
                             dynamic_ncols=True)

    def event(self, kind: str, **fields: Any) -> None:
        if self.enabled:
            self._write({"event": kind, **fields})
            if self._bar is not None:
                self._bar.write(f"{kind}: {fields}")

    def step(self, metrics: StepMetrics) -> None:
        if not self.enabled:
            return
        self._write({"event": "step", **asdict(metrics)})
        if self._bar is not None:
            self._bar.set_postfix(loss=f"{metrics.loss:.4f}", tok_s=f"{metrics.tokens_per_s:,.0f}",
                                  mfu=f"{metrics.mfu:.1%}")
            self._bar.update(metrics.step - self._bar.n)

    def _write(self, record: dict[str, Any]) -> None:
        if self._file is not None:
            self._file.write(json.dumps({**record, "time": time.time()}) + "\n")
            self._file.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._file is not None:
            self._file.close()


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """Every record of a metrics log; a line a killed process left half-written is skipped."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def step_records(path: str | Path) -> dict[int, dict[str, Any]]:
    """The last logged record of each step: after a restart, the replayed steps overwrite the lost ones."""
    return {record["step"]: record for record in read_log(path) if record["event"] == "step"}


def steady_state(steps: list[dict[str, Any]], skip: int) -> dict[str, float]:
    """Median throughput after the first ``skip`` steps (allocator warmup, compilation, first gathers)."""
    kept = steps[skip:]
    if not kept:
        raise ValueError(f"need more than skip={skip} steps to measure a steady state, got {len(steps)}")
    fields = ("step_time_s", "tokens_per_s", "samples_per_s", "mfu")
    return {name: statistics.median(float(s[name]) for s in kept) for name in fields}
