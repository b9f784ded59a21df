"""Measured hardware peaks: the denominators for every "fraction of peak" on the site.

A vendor datasheet says what silicon could do; these say what this machine, with this torch build,
actually does on the simplest possible workload. A utilization is only believable if its peak is:
each peak here is the best rate over several sizes (small ones miss the peak, and on a CPU a size
that fits in cache can beat one that does not) and over repeated timed trials after a warm-up, with
the thread count of the workload it will divide. ``MeasuredPeaks.remeasure_*`` measures again next
to that workload and keeps the better of the two, so a quiet moment early in a run and a busy one
later cannot make a ratio impossible.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from ai_system.bench.metrics import Baseline, Spread

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "tf32": torch.float32, "bfloat16": torch.bfloat16,
                                  "float16": torch.float16}
# How each kind of peak is published: the unit and the factor from its SI rate (FLOP/s, bytes/s).
UNITS: dict[str, tuple[str, float]] = {"matmul": ("TFLOP/s", 1e-12), "copy": ("GB/s", 1e-9)}
MIN_TRIALS = 5
MIN_TIME_S = 0.5


@dataclass(frozen=True)
class Workload:
    """A callable plus the amount of work one call does (FLOPs or bytes moved)."""

    run: Callable[[], object]
    work: float
    device: torch.device


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_workload(n: int, dtype: str, device: str | torch.device) -> Workload:
    """An n×n by n×n matmul: 2·n³ FLOPs. ``tf32`` is fp32 storage with TF32 tensor-core math allowed."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if n <= 0:
        raise ValueError(f"matrix size n must be positive, got {n}")
    device = torch.device(device)
    a = torch.randn(n, n, device=device, dtype=DTYPES[dtype])
    b = torch.randn(n, n, device=device, dtype=DTYPES[dtype])
    out = torch.empty(n, n, device=device, dtype=DTYPES[dtype])
    allow_tf32 = dtype == "tf32"

    def run() -> torch.Tensor:
        previous = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = allow_tf32
        try:
            result = torch.mm(a, b, out=out)
            synchronize(device)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = previous
        return result

    return Workload(run=run, work=2.0 * n**3, device=device)


def copy_workload(nbytes: int, device: str | torch.device) -> Workload:
    """A device-to-device copy of ``nbytes``: it reads and writes each byte once, so 2·nbytes move."""
    if nbytes <= 0:
        raise ValueError(f"nbytes must be positive, got {nbytes}")
    device = torch.device(device)
    src = torch.empty(nbytes // 4, device=device, dtype=torch.float32).uniform_()
    dst = torch.empty_like(src)

    def run() -> torch.Tensor:
        result = dst.copy_(src)
        synchronize(device)
        return result

    return Workload(run=run, work=2.0 * src.numel() * 4, device=device)


def trial_rates(workload: Workload, min_trials: int = MIN_TRIALS, min_time_s: float = MIN_TIME_S,
                warmup: int = 2) -> list[float]:
    """Work per second of each timed call, after ``warmup`` untimed calls.

    Trials continue until there are ``min_trials`` of them and they took ``min_time_s`` together,
    so a fast workload is timed often enough to catch the machine at its best.
    """
    if min_trials < 1:
        raise ValueError(f"min_trials must be at least 1, got {min_trials}")
    for _ in range(warmup):
        workload.run()
    rates: list[float] = []
    spent = 0.0
    while len(rates) < min_trials or spent < min_time_s:
        start = time.perf_counter()
        workload.run()
        elapsed = time.perf_counter() - start
        spent += elapsed
        rates.append(workload.work / elapsed)
    return rates


def best_rate(workload: Workload, repeats: int = MIN_TRIALS, warmup: int = 2, min_time_s: float = 0.0) -> float:
    """Work per second of the fastest of ``repeats`` calls (more when ``min_time_s`` asks): the best the machine did."""
    return max(trial_rates(workload, min_trials=repeats, min_time_s=min_time_s, warmup=warmup))


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the block with ``threads`` intra-op threads, then restore the previous count."""
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@dataclass(frozen=True)
class Peak:
    """A measured ceiling: the best rate (FLOP/s or bytes/s) over sizes and trials, and how it was taken.

    ``size`` is where the best rate was reached (n of the n×n matmul, or bytes copied), ``spread``
    the per-trial rates at that size, ``rates_by_size`` the best rate at every size tried.
    """

    what: str
    device: str
    dtype: str
    threads: int
    size: int
    rate: float
    spread: Spread
    rates_by_size: dict[int, float]

    @property
    def unit(self) -> str:
        return UNITS[self.what][0]

    @property
    def value(self) -> float:
        """The rate in the published unit (TFLOP/s or GB/s)."""
        return self.rate * UNITS[self.what][1]

    @property
    def label(self) -> str:
        kind = f"{self.dtype} matmul peak" if self.what == "matmul" else "copy bandwidth"
        return f"measured {self.device} {kind}, {self.threads} thread{'s' if self.threads > 1 else ''}"

    def baseline(self, achieved: float | None = None) -> Baseline:
        """This peak as the ``Baseline`` of a utilization metric; ``achieved`` is our rate in FLOP/s or bytes/s.

        Recording a metric with it fails when the utilization exceeds 100 %.
        """
        ours = None if achieved is None else achieved * UNITS[self.what][1]
        return Baseline(name=self.label, value=self.value, unit=self.unit, kind="peak", ours=ours)


def measure_peak(what: str, device: str, dtype: str, sizes: Sequence[int], threads: int | None = None,
                 min_time_s: float = MIN_TIME_S) -> Peak:
    """The best rate of ``what`` ("matmul" or "copy") over ``sizes``, with ``threads`` CPU threads.

    ``threads`` defaults to the current torch thread count; match it to the workload this peak will
    divide (1 per rank for a multi-process job on one CPU).
    """
    if what not in UNITS:
        raise ValueError(f"peak kind must be one of {sorted(UNITS)}, got {what!r}")
    if not sizes:
        raise ValueError("measure_peak needs at least one size")
    threads = threads or torch.get_num_threads()
    trials: dict[int, list[float]] = {}
    with torch_threads(threads):
        for size in sizes:
            workload = matmul_workload(size, dtype, device) if what == "matmul" else copy_workload(size, device)
            trials[size] = trial_rates(workload, min_time_s=min_time_s)
            del workload
    best_size = max(trials, key=lambda size: max(trials[size]))
    return Peak(what=what, device=str(device), dtype=dtype, threads=threads, size=best_size,
                rate=max(trials[best_size]), spread=Spread.of(trials[best_size]),
                rates_by_size={size: max(rates) for size, rates in trials.items()})


class MeasuredPeaks:
    """Peaks measured in this process, shared by every benchmark of one run.

    A benchmark that needs a peak the run has not measured yet gets one measured on the spot, so a
    ratio's numerator and denominator always come from the same run on the same machine. Matmul
    peaks are tried at n/4, n/2 and n; copies at a quarter of ``copy_bytes`` and at ``copy_bytes``.
    """

    def __init__(self, matmul_n: int, copy_bytes: int, min_time_s: float = MIN_TIME_S) -> None:
        self.matmul_n = matmul_n
        self.copy_bytes = copy_bytes
        self.min_time_s = min_time_s
        self._peaks: dict[tuple[str, str, str, int], Peak] = {}

    def _sizes(self, what: str) -> tuple[int, ...]:
        if what == "matmul":
            return tuple(sorted({max(self.matmul_n // 4, 1), max(self.matmul_n // 2, 1), self.matmul_n}))
        return tuple(sorted({max(self.copy_bytes // 4, 4), self.copy_bytes}))

    def _get(self, what: str, device: str, dtype: str, threads: int | None, again: bool) -> Peak:
        threads = threads or torch.get_num_threads()
        key = (what, device, dtype, threads)
        stored = self._peaks.get(key)
        if stored is None or again:
            fresh = measure_peak(what, device, dtype, self._sizes(what), threads, self.min_time_s)
            self._peaks[key] = fresh if stored is None or fresh.rate > stored.rate else stored
        return self._peaks[key]

    def matmul(self, device: str = "cpu", dtype: str = "float32", threads: int | None = None) -> Peak:
        return self._get("matmul", device, dtype, threads, again=False)

    def copy(self, device: str = "cpu", threads: int | None = None) -> Peak:
        return self._get("copy", device, "bytes", threads, again=False)

    def remeasure_matmul(self, device: str = "cpu", dtype: str = "float32", threads: int | None = None) -> Peak:
        """Measure the matmul peak again now, next to the workload it divides; keep the better of the two."""
        return self._get("matmul", device, dtype, threads, again=True)

    def remeasure_copy(self, device: str = "cpu", threads: int | None = None) -> Peak:
        """Measure the copy bandwidth again now, next to the workload it divides; keep the better of the two."""
        return self._get("copy", device, "bytes", threads, again=True)

    def matmul_flops(self, device: str = "cpu", dtype: str = "float32", threads: int | None = None) -> float:
        """The matmul peak in FLOP/s."""
        return self.matmul(device, dtype, threads).rate

    def copy_bandwidth(self, device: str = "cpu", threads: int | None = None) -> float:
        """The copy bandwidth in bytes/s."""
        return self.copy(device, threads).rate
