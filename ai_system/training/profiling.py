"""Where a training step's time goes: a ``torch.profiler`` trace of a few steps, and what it says.

``--profile-dir DIR`` records steps 3 to 5 of a run (step 1 is skipped, step 2 warms the profiler
up) on every rank as a Chrome trace, ``DIR/rank{r}.json``: open it in Perfetto or chrome://tracing.
``summarize_trace`` reads one back into the figures the docs publish: the wall time of each
profiled step, the ops that took it (by self time, on the thread that runs the step), and, for a
data-parallel run, how long collectives were in flight and how much of that the step's own thread
spent computing rather than waiting: communication hidden behind compute.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile, schedule

WAIT_STEPS, WARMUP_STEPS, ACTIVE_STEPS = 1, 1, 3
STEP_EVENT = "ProfilerStep#"
# Host-side events of a collective in flight: FSDP2's all-gather / reduce-scatter record functions,
# c10d's async work objects and the gloo/NCCL kernels they run.
COLLECTIVE_MARKERS = ("gloo:", "nccl:", "c10d::", "record_param_comms")
WAIT_MARKERS = ("wait", "Work::")


@contextmanager
def step_profiler(directory: str | None, rank: int) -> Iterator[Callable[[], None]]:
    """Yields ``step()``, to call after each training step; without ``directory`` it does nothing."""
    if directory is None:
        yield lambda: None
        return
    path = Path(directory) / f"rank{rank}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities,
                 schedule=schedule(wait=WAIT_STEPS, warmup=WARMUP_STEPS, active=ACTIVE_STEPS, repeat=1),
                 on_trace_ready=lambda prof: prof.export_chrome_trace(str(path))) as profiler:
        yield profiler.step


@dataclass(frozen=True)
class TraceSummary:
    """One rank's profiled steps: seconds per step, top ops by self time, collective time and overlap."""

    step_seconds: list[float]
    top_ops: list[tuple[str, float]]
    collective_seconds: float
    hidden_collective_seconds: float
    wait_seconds: float

    @property
    def overlap(self) -> float:
        """Fraction of the time collectives were in flight that the step's thread spent computing."""
        return self.hidden_collective_seconds / self.collective_seconds if self.collective_seconds else 0.0


def _union(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _length(intervals: list[tuple[float, float]]) -> float:
    return sum(end - start for start, end in intervals)


def _intersection(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> float:
    total, j = 0.0, 0
    for start, end in a:
        while j < len(b) and b[j][1] <= start:
            j += 1
        k = j
        while k < len(b) and b[k][0] < end:
            total += min(end, b[k][1]) - max(start, b[k][0])
            k += 1
    return total


def _self_times(events: list[dict[str, Any]]) -> dict[str, float]:
    """Self time (microseconds) per op name, on one thread: an event's duration minus its children's."""
    totals: dict[str, float] = defaultdict(float)
    stack: list[dict[str, Any]] = []
    for event in sorted(events, key=lambda e: (e["ts"], -e["dur"])):
        while stack and stack[-1]["ts"] + stack[-1]["dur"] <= event["ts"]:
            stack.pop()
        if stack:
            totals[stack[-1]["name"]] -= event["dur"]
        totals[event["name"]] += event["dur"]
        stack.append(event)
    return totals


def summarize_trace(path: Path, top: int = 8) -> TraceSummary:
    """Read a ``step_profiler`` trace back (see the module doc)."""
    events = [e for e in json.loads(path.read_text())["traceEvents"] if e.get("ph") == "X" and "dur" in e]
    steps = [e for e in events if e["name"].startswith(STEP_EVENT)]
    if not steps:
        raise ValueError(f"{path} has no {STEP_EVENT} events: it is not a step_profiler trace")
    main_thread = steps[0]["tid"]
    window = (min(e["ts"] for e in steps), max(e["ts"] + e["dur"] for e in steps))
    inside = [e for e in events if window[0] <= e["ts"] < window[1]]
    on_main = [e for e in inside if e["tid"] == main_thread and not e["name"].startswith(STEP_EVENT)]
    collectives = _union([(e["ts"], e["ts"] + e["dur"]) for e in inside
                          if any(marker in e["name"] for marker in COLLECTIVE_MARKERS)])
    waits = _union([(e["ts"], e["ts"] + e["dur"]) for e in on_main
                    if any(marker in e["name"] for marker in WAIT_MARKERS)])
    compute = [(e["ts"], e["ts"] + e["dur"]) for e in on_main if e.get("cat") == "cpu_op"
               and not any(marker in e["name"] for marker in (*COLLECTIVE_MARKERS, *WAIT_MARKERS))]
    busy = _union(compute)
    self_times = _self_times(on_main)
    ranked = sorted(self_times.items(), key=lambda item: -item[1])[:top]
    return TraceSummary(step_seconds=[e["dur"] / 1e6 for e in sorted(steps, key=lambda e: e["ts"])],
                        top_ops=[(name, seconds / 1e6) for name, seconds in ranked],
                        collective_seconds=_length(collectives) / 1e6,
                        hidden_collective_seconds=_intersection(collectives, busy) / 1e6,
                        wait_seconds=_length(waits) / 1e6)
