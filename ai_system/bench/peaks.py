"""Measured hardware peaks: the denominators for every "fraction of peak" on the site.

A vendor datasheet says what silicon could do; these say what this machine, with this torch build,
actually does on the simplest possible workload. Later benchmarks divide by them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "tf32": torch.float32, "bfloat16": torch.bfloat16,
                                  "float16": torch.float16}


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


def best_rate(workload: Workload, repeats: int = 5, warmup: int = 2) -> float:
    """Work per second of the fastest of ``repeats`` calls: a peak is the best the machine did."""
    for _ in range(warmup):
        workload.run()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        workload.run()
        best = min(best, time.perf_counter() - start)
    return workload.work / best


class MeasuredPeaks:
    """Peaks measured in this process, shared by every benchmark of one run.

    The peak benchmarks store what they measure; a benchmark that needs a peak the run has not
    measured yet gets one measured on the spot, so a ratio's numerator and denominator always come
    from the same run on the same machine.
    """

    def __init__(self, matmul_n: int, copy_bytes: int) -> None:
        self.matmul_n = matmul_n
        self.copy_bytes = copy_bytes
        self._values: dict[tuple[str, str, str], float] = {}

    def store(self, what: str, device: str, dtype: str, value: float) -> None:
        self._values[(what, device, dtype)] = value

    def matmul_flops(self, device: str = "cpu", dtype: str = "float32") -> float:
        key = ("matmul", device, dtype)
        if key not in self._values:
            self._values[key] = best_rate(matmul_workload(self.matmul_n, dtype, device))
        return self._values[key]

    def copy_bandwidth(self, device: str = "cpu") -> float:
        key = ("copy", device, "bytes")
        if key not in self._values:
            self._values[key] = best_rate(copy_workload(self.copy_bytes, device))
        return self._values[key]
