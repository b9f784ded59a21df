"""Measured peaks of this machine: dense matmul FLOP/s and memory copy bandwidth.

Every later "fraction of peak" divides by these, taken in the same run. A peak is the best rate
over several sizes and over timed trials after a warm-up (``ai_system.bench.peaks``); the published
spread is over the trials at the best size, and the curve shows that the sizes reach a plateau.
Ordinary benchmarks report medians.
"""

from __future__ import annotations

import pytest

from ai_system.bench.peaks import MeasuredPeaks, Peak

GPU_MATMUL_DTYPES = ("bfloat16", "tf32", "float32")


def _record_peak(record, peak: Peak, name: str, question: str, size_name: str, size_scale: float) -> None:
    factor = peak.value / peak.rate
    sizes = sorted(peak.rates_by_size)
    record(name=name, value=peak.value, unit=peak.unit, better="higher", area="hardware",
           scale=f"best of {', '.join(f'{size * size_scale:g}' for size in sizes)} {size_name}; "
                 f"reached at {peak.size * size_scale:g}",
           params={"device": peak.device, **({"dtype": peak.dtype} if peak.what == "matmul" else {}),
                   "threads": peak.threads},
           curve={size_name: [size * size_scale for size in sizes],
                  peak.unit: [peak.rates_by_size[size] * factor for size in sizes]},
           spread=peak.spread.scaled(factor), question=question,
           description=f"{peak.label}: fastest timed trial after a warm-up, over the sizes tried; "
                       "the denominator of every utilization on this hardware")


def _matmul(benchmark, record, peaks: MeasuredPeaks, device: str, dtype: str) -> None:
    peak = benchmark.pedantic(peaks.remeasure_matmul, args=(device, dtype), rounds=1, iterations=1)
    _record_peak(record, peak, f"matmul_peak_{device}_{dtype}",
                 f"How fast does a dense {dtype} matmul run on this {device.upper()}?", "n", 1)


def _copy(benchmark, record, peaks: MeasuredPeaks, device: str) -> None:
    peak = benchmark.pedantic(peaks.remeasure_copy, args=(device,), rounds=1, iterations=1)
    _record_peak(record, peak, f"copy_bandwidth_{device}",
                 f"How fast does this {device.upper()} copy memory?", "MiB", 1 / 2**20)


def test_matmul_peak_cpu_fp32(benchmark, record, peaks):
    _matmul(benchmark, record, peaks, "cpu", "float32")


def test_copy_bandwidth_cpu(benchmark, record, peaks):
    _copy(benchmark, record, peaks, "cpu")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", GPU_MATMUL_DTYPES)
def test_matmul_peak_gpu(benchmark, record, peaks, dtype):
    _matmul(benchmark, record, peaks, "cuda", dtype)


@pytest.mark.gpu
def test_copy_bandwidth_gpu(benchmark, record, peaks):
    _copy(benchmark, record, peaks, "cuda")
