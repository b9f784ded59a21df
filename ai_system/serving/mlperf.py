"""The MLPerf Inference LoadGen driver: LoadGen issues queries to an in-process engine and judges the run.

LoadGen (``mlcommons-loadgen``) is MLPerf's own traffic generator and referee: it times every
completion itself and says VALID or INVALID against the scenario's settings, so a figure from
here is LoadGen-measured rather than self-reported. A Server run is judged either on the
end-to-end p99 latency or, as MLPerf judges its LLM benchmarks, on token latencies: the engine
reports each query's first token (``FirstTokenComplete``) and its token count, and LoadGen holds
the p99 time to first token and p99 time per output token to their bounds.
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
    ttft_p99_ns: float | None = None
    tpot_p99_ns: float | None = None


def run_mlperf(engine: Engine, scenario: str, prompt: list[int], max_tokens: int, target_qps: float,
               latency_slo_s: float = 0.05, min_duration_s: float = 5.0, min_query_count: int = 100,
               output_dir: str | None = None, token_bounds_s: tuple[float, float] | None = None) -> MLPerfResult:
    """Drive an engine with MLPerf LoadGen in the ``Server`` or ``Offline`` scenario.

    LoadGen issues the queries (Poisson arrivals at ``target_qps`` in Server; everything at once in
    Offline), times every completion itself and judges the run VALID or INVALID against its
    settings: in Server, the 99th-percentile latency must stay within ``latency_slo_s``, or, with
    ``token_bounds_s = (ttft_s, tpot_s)``, the p99 time to first token and p99 time per output token
    within those (LoadGen's ``use_token_latencies``, as MLPerf runs its LLM benchmarks). The run is
    far shorter than a submission run (600 s minimum), so these results are not MLPerf results.
    """
    import mlperf_loadgen as lg

    scenarios = {"Server": lg.TestScenario.Server, "Offline": lg.TestScenario.Offline}
    if scenario not in scenarios:
        raise ValueError(f"scenario must be one of {sorted(scenarios)}, got {scenario!r}")
    if token_bounds_s is not None and (scenario != "Server" or len(token_bounds_s) != 2
                                       or not all(bound > 0 for bound in token_bounds_s)):
        raise ValueError(f"token_bounds_s is (ttft_s, tpot_s), both positive, for the Server scenario; got "
                         f"{token_bounds_s!r} for {scenario}")
    params = SamplingParams(max_new_tokens=max_tokens)

    # LoadGen must hear of each sample once, and never after its test has ended: completing a
    # sample then (say, one the engine rejects while stopping) crashes the process.
    live = threading.Lock()
    running = True
    rejected: list[int] = []

    def complete(sample_id: int, tokens: int) -> None:
        with live:
            if running:
                lg.QuerySamplesComplete([lg.QuerySampleResponse(sample_id, 0, 0, tokens)])

    def first_token(sample_id: int) -> None:
        with live:
            if running:
                lg.FirstTokenComplete([lg.QuerySampleResponse(sample_id, 0, 0)])

    def issue_queries(samples: list) -> None:
        for sample in samples:
            tokens = [0]

            def on_event(event: Event, sample_id: int = sample.id, tokens: list[int] = tokens) -> None:
                if event.kind == "token":
                    tokens[0] += 1
                    if tokens[0] == 1 and token_bounds_s is not None:
                        first_token(sample_id)
                else:
                    complete(sample_id, tokens[0])
            try:
                engine.submit(Request(list(prompt), params, on_event))
            except (QueueFullError, EngineClosedError):
                rejected.append(sample.id)
                complete(sample.id, 0)

    settings = lg.TestSettings()
    settings.scenario = scenarios[scenario]
    settings.mode = lg.TestMode.PerformanceOnly
    settings.min_duration_ms = int(min_duration_s * 1000)
    settings.min_query_count = min_query_count
    if scenario == "Server":
        settings.server_target_qps = target_qps
        settings.server_target_latency_ns = int(latency_slo_s * 1e9)
        settings.server_target_latency_percentile = 0.99
        if token_bounds_s is not None:
            settings.use_token_latencies = True
            settings.ttft_latency, settings.tpot_latency = (int(bound * 1e9) for bound in token_bounds_s)
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
    if valid is None or throughput is None:
        raise ValueError(f"not a LoadGen summary (no 'Result is' or samples-per-second line): {summary[:300]!r}")

    def p99(what: str) -> float | None:
        found = re.search(rf"99\.00 percentile {what} \(ns\)\s*:\s*(\d+)", summary)
        return float(found.group(1)) if found else None

    return MLPerfResult(scenario=scenario, valid=valid.group(1) == "VALID",
                        samples_per_second=float(throughput.group(1)), latency_p99_ns=p99("latency"),
                        summary=summary, ttft_p99_ns=p99("first token latency"),
                        tpot_p99_ns=p99("time to output token"))
