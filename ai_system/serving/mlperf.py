"""The MLPerf Inference LoadGen driver: LoadGen issues queries to an in-process engine and judges the run.

LoadGen (``mlcommons-loadgen``) is MLPerf's own traffic generator and referee: it times every
completion itself and says VALID or INVALID against the scenario's settings, so a figure from
here is LoadGen-measured rather than self-reported.
"""

from __future__ import annotations

import re
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from ai_system.inference.engine import Engine, EngineClosedError, Event, QueueFullError, Request
from ai_system.inference.generate import SamplingParams


@dataclass(frozen=True)
class MLPerfResult:
    """LoadGen's own verdict and figures, parsed from ``mlperf_log_summary.txt``."""

    scenario: str
    valid: bool
    samples_per_second: float
    latency_p99_ns: float | None
    summary: str


def run_mlperf(engine: Engine, scenario: str, prompt: list[int], max_tokens: int, target_qps: float,
               latency_slo_s: float = 0.05, min_duration_s: float = 5.0, min_query_count: int = 100,
               output_dir: str | None = None) -> MLPerfResult:
    """Drive an engine with MLPerf LoadGen in the ``Server`` or ``Offline`` scenario.

    LoadGen issues the queries (Poisson arrivals at ``target_qps`` in Server; everything at once in
    Offline), times every completion itself and judges the run VALID or INVALID against its
    settings: in Server, the 99th-percentile latency must stay within ``latency_slo_s``. The run is
    far shorter than a submission run (600 s minimum), so these results are not MLPerf results.
    """
    import mlperf_loadgen as lg

    scenarios = {"Server": lg.TestScenario.Server, "Offline": lg.TestScenario.Offline}
    if scenario not in scenarios:
        raise ValueError(f"scenario must be one of {sorted(scenarios)}, got {scenario!r}")
    params = SamplingParams(max_new_tokens=max_tokens)

    # LoadGen must hear of each sample once, and never after its test has ended: completing a
    # sample then (say, one the engine rejects while stopping) crashes the process.
    live = threading.Lock()
    running = True
    rejected: list[int] = []

    def complete(sample_id: int) -> None:
        with live:
            if running:
                lg.QuerySamplesComplete([lg.QuerySampleResponse(sample_id, 0, 0)])

    def issue_queries(samples: list) -> None:
        for sample in samples:
            def on_event(event: Event, sample_id: int = sample.id) -> None:
                if event.kind != "token":
                    complete(sample_id)
            try:
                engine.submit(Request(list(prompt), params, on_event))
            except (QueueFullError, EngineClosedError):
                rejected.append(sample.id)
                complete(sample.id)

    settings = lg.TestSettings()
    settings.scenario = scenarios[scenario]
    settings.mode = lg.TestMode.PerformanceOnly
    settings.min_duration_ms = int(min_duration_s * 1000)
    settings.min_query_count = min_query_count
    if scenario == "Server":
        settings.server_target_qps = target_qps
        settings.server_target_latency_ns = int(latency_slo_s * 1e9)
        settings.server_target_latency_percentile = 0.99
    else:
        settings.offline_expected_qps = target_qps
    outdir = Path(output_dir or tempfile.mkdtemp(prefix=f"mlperf-{scenario.lower()}-"))
    outdir.mkdir(parents=True, exist_ok=True)
    log_settings = lg.LogSettings()
    log_settings.log_output.outdir = str(outdir)
    log_settings.log_output.copy_summary_to_stdout = False
    sut = lg.ConstructSUT(issue_queries, lambda: None)
    qsl = lg.ConstructQSL(1, 1, lambda _: None, lambda _: None)
    try:
        lg.StartTestWithLogSettings(sut, qsl, settings, log_settings)
    finally:
        with live:
            running = False
        lg.DestroyQSL(qsl)
        lg.DestroySUT(sut)
    if rejected:
        raise RuntimeError(f"the engine rejected {len(rejected)} of LoadGen's samples (queue full or closed): "
                           "give it a max_queue_size above the scenario's sample count")
    return parse_mlperf_summary(scenario, (outdir / "mlperf_log_summary.txt").read_text())


def parse_mlperf_summary(scenario: str, summary: str) -> MLPerfResult:
    """Pull the verdict, throughput and p99 latency out of LoadGen's summary text."""
    valid = re.search(r"Result is\s*:\s*(\w+)", summary)
    throughput = re.search(r"(?:Completed samples per second|Samples per second)\s*:\s*([\d.eE+-]+)", summary)
    p99 = re.search(r"99\.00 percentile latency \(ns\)\s*:\s*(\d+)", summary)
    if valid is None or throughput is None:
        raise ValueError(f"not a LoadGen summary (no 'Result is' or samples-per-second line): {summary[:300]!r}")
    return MLPerfResult(scenario=scenario, valid=valid.group(1) == "VALID",
                        samples_per_second=float(throughput.group(1)),
                        latency_p99_ns=float(p99.group(1)) if p99 else None, summary=summary)
