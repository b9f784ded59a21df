"""Peaks: best over sizes and trials, with the workload's thread count, never lowered by a re-measure."""

import pytest
import torch

from ai_system.bench import peaks as peaks_module
from ai_system.bench.metrics import Metric, Spread
from ai_system.bench.peaks import MeasuredPeaks, Peak, matmul_workload, measure_peak, torch_threads, trial_rates


def test_trials_run_until_both_count_and_time_are_reached():
    workload = matmul_workload(16, "float32", "cpu")
    assert len(trial_rates(workload, min_trials=3, min_time_s=0.0)) == 3
    assert len(trial_rates(workload, min_trials=1, min_time_s=0.02)) > 1


def test_measure_peak_takes_the_best_size_and_restores_threads():
    before = torch.get_num_threads()
    peak = measure_peak("matmul", "cpu", "float32", sizes=(8, 64), threads=1, min_time_s=0.01)
    assert torch.get_num_threads() == before
    assert peak.threads == 1 and set(peak.rates_by_size) == {8, 64}
    assert peak.rate == max(peak.rates_by_size.values()) == peak.rates_by_size[peak.size]
    assert peak.spread.max == pytest.approx(peak.rate) and peak.unit == "TFLOP/s"
    copy = measure_peak("copy", "cpu", "bytes", sizes=(1 << 16,), min_time_s=0.01)
    assert copy.unit == "GB/s" and copy.value == pytest.approx(copy.rate / 1e9)


def test_bad_peak_requests_are_named():
    with pytest.raises(ValueError, match="'flops'"):
        measure_peak("flops", "cpu", "float32", sizes=(8,))
    with pytest.raises(ValueError, match="threads must be at least 1"):
        with torch_threads(0):
            pass


def _peak(rate: float, threads: int = 2) -> Peak:
    return Peak(what="matmul", device="cpu", dtype="float32", threads=threads, size=64, rate=rate,
                spread=Spread(rate / 2, rate * 0.9, rate, 3), rates_by_size={64: rate})


def test_peaks_are_cached_per_thread_count_and_a_remeasure_keeps_the_better(monkeypatch):
    rates = iter([1e11, 0.5e11, 2e11])
    monkeypatch.setattr(peaks_module, "measure_peak", lambda what, device, dtype, sizes, threads, min_time_s:
                        _peak(next(rates), threads))
    peaks = MeasuredPeaks(matmul_n=64, copy_bytes=1 << 16)
    assert peaks.matmul_flops("cpu", "float32", threads=2) == 1e11
    assert peaks.matmul_flops("cpu", "float32", threads=2) == 1e11
    assert peaks.remeasure_matmul("cpu", "float32", threads=2).rate == 1e11
    assert peaks.matmul("cpu", "float32", threads=1).rate == 2e11


def test_a_utilization_above_the_peak_cannot_be_recorded():
    peak = _peak(1e11)
    fine = Metric(name="mfu", value=60.0, unit="%", better="higher", area="training", scale="x",
                  baseline=peak.baseline(achieved=0.6e11))
    assert fine.baseline.ours == pytest.approx(0.06) and fine.baseline.kind == "peak"
    with pytest.raises(ValueError, match="impossible"):
        Metric(name="mfu", value=108.4, unit="%", better="higher", area="training", scale="x",
               baseline=peak.baseline(achieved=1.084e11))
