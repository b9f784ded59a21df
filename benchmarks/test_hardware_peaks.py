"""Measured peaks of this machine: dense matmul FLOP/s and memory copy bandwidth.

Every later "fraction of peak" divides by these, taken in the same run. A peak is the fastest
round (``stats.min``), the best the hardware showed; ordinary benchmarks report medians.
"""

from __future__ import annotations

import pytest

from ai_system.bench.peaks import copy_workload, matmul_workload

GPU_MATMUL_DTYPES = ("bfloat16", "tf32", "float32")


def _measure_matmul(benchmark, record, peaks, device: str, dtype: str, rounds: int) -> None:
    workload = matmul_workload(peaks.matmul_n, dtype, device)
    benchmark.pedantic(workload.run, rounds=rounds, iterations=1, warmup_rounds=2)
    flops = workload.work / benchmark.stats.stats.min
    peaks.store("matmul", device, dtype, flops)
    record(name=f"matmul_peak_{device}_{dtype}", value=flops / 1e12, unit="TFLOP/s", better="higher",
           area="hardware", scale=f"{peaks.matmul_n}×{peaks.matmul_n} @ {peaks.matmul_n}×{peaks.matmul_n}",
           params={"device": device, "dtype": dtype, "n": peaks.matmul_n},
           description=f"dense {dtype} torch.mm on {device}, 2·n³ FLOPs over the fastest round")


def _measure_copy(benchmark, record, peaks, device: str, rounds: int) -> None:
    workload = copy_workload(peaks.copy_bytes, device)
    benchmark.pedantic(workload.run, rounds=rounds, iterations=1, warmup_rounds=2)
    bandwidth = workload.work / benchmark.stats.stats.min
    peaks.store("copy", device, "bytes", bandwidth)
    record(name=f"copy_bandwidth_{device}", value=bandwidth / 1e9, unit="GB/s", better="higher",
           area="hardware", scale=f"{peaks.copy_bytes >> 20} MiB buffer",
           params={"device": device, "bytes": peaks.copy_bytes},
           description=f"tensor.copy_ on {device}, read + write bytes over the fastest round")


def test_matmul_peak_cpu_fp32(benchmark, record, peaks, profile):
    _measure_matmul(benchmark, record, peaks, "cpu", "float32", rounds=profile.pick(quick=5, full=20))


def test_copy_bandwidth_cpu(benchmark, record, peaks, profile):
    _measure_copy(benchmark, record, peaks, "cpu", rounds=profile.pick(quick=5, full=20))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", GPU_MATMUL_DTYPES)
def test_matmul_peak_gpu(benchmark, record, peaks, dtype):
    _measure_matmul(benchmark, record, peaks, "cuda", dtype, rounds=50)


@pytest.mark.gpu
def test_copy_bandwidth_gpu(benchmark, record, peaks):
    _measure_copy(benchmark, record, peaks, "cuda", rounds=50)
