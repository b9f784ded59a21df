"""Model serving, measured like MLPerf: latency vs offered load, capacity within p99 bounds, server overhead.

The request shape every figure is stated for: the shared transformer at ``debug`` size with random
weights from seed 0 (the system is measured, not text quality), a 32-byte prompt (32 tokens under
the byte tokenizer) and 16 generated tokens, streamed. The server runs as its own process
(``ai-system serve``, one torch thread) and the client in this one, on the same machine.

Two bounds judge a load point, each on the 99th percentile: the seed's end-to-end 50 ms for this
request shape, and the pair MLPerf Inference sets LLM servers, time to first token and time per
output token, at its values for Llama 3.1 8B interactive (500 ms and 30 ms, ``mlperf.conf``).
Offered rates climb geometrically from 1% of each configuration's saturation throughput, measured
first in the same run, so both batching modes have lightly loaded points and the sweep fits
whatever machine runs it. Every ratio is taken against a limit measured in the same run: served
against the same engine offline, batching against batch size 1, LoadGen's Server scenario against
its Offline scenario.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import psutil
import pytest
import torch

from ai_system.bench.metrics import Baseline, Projection, Spread
from ai_system.inference.engine import EngineConfig, EngineThread, load_model
from ai_system.inference.generate import SamplingParams
from ai_system.serving.loadgen import LatencyBound, LoadReport, geometric_rates, open_loop, saturate, submit_and_wait
from ai_system.serving.mlperf import run_mlperf

MODEL = "debug"
PROMPT = "x" * 32
MAX_TOKENS = 16
E2E = LatencyBound("e2e_50ms", e2e_s=0.050)
INTERACTIVE = LatencyBound("mlperf_interactive", ttft_s=0.500, tpot_s=0.030)
BOUNDS = (E2E, INTERACTIVE)
BOUNDS_BY_NAME = {bound.name: bound for bound in BOUNDS}
BOUND_PARAMS = {E2E.name: {"slo_ms": 50.0}, INTERACTIVE.name: {"ttft_ms": 500.0, "tpot_ms": 30.0}}
BOUND_SOURCES = {E2E.name: "the seed's Inference Latency target for this request shape",
                 INTERACTIVE.name: "MLPerf Inference's Llama 3.1 8B interactive Server bounds (mlperf.conf)"}
DYNAMIC_BATCH = 16
QUEUE = 1024
SATURATION_CONCURRENCY = 4 * DYNAMIC_BATCH
LOADGEN_SERVER_FRACTION = 0.5
SEED_QPS = 1_000_000
REPLICA_USD_PER_HOUR = 0.08925
REPLICA_PRICE_SOURCE = "AWS EC2 c7i.large (2 vCPU) on-demand, us-east-1, Linux: $0.08925/h (2024 list price)"
SCALE = f"{MODEL} model, {len(PROMPT)}-byte prompt, {MAX_TOKENS} output tokens"
BURSTY = 0.25
WHERE = {"thread": "thread of the server process", "process": "child process of the server"}


@contextmanager
def served(max_batch_size: int, engine: str = "thread") -> Iterator[tuple[str, int]]:
    """``ai-system serve`` in its own process on a free loopback port, as (url, pid); SIGTERM afterwards."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "ai_system.cli", "serve", "--config", MODEL, "--port", str(port),
               "--max-batch-size", str(max_batch_size), "--max-queue-size", str(QUEUE), "--threads", "1",
               "--engine", engine]
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while not ready(url):
            if process.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise RuntimeError(f"server did not become ready: {log.read().decode(errors='replace')}")
            time.sleep(0.1)
        open_loop(url, rate=math.inf, count=2 * max_batch_size, prompt=PROMPT, max_tokens=MAX_TOKENS)
        yield url, process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz").status_code == 200
    except httpx.TransportError:
        return False


def saturation(url: str, count: int, stream: bool = True) -> LoadReport:
    """The server's throughput when it never waits for work (requests always outstanding)."""
    return saturate(url, count, PROMPT, MAX_TOKENS, concurrency=SATURATION_CONCURRENCY, slo_s=E2E.e2e_s,
                    stream=stream)


@dataclass(frozen=True)
class PointSize:
    """How long a load point runs: ``seconds`` of traffic, topped up to ``min_requests`` unless that
    would take longer than ``max_seconds`` (the lowest rates of a sweep from 1% of saturation)."""

    seconds: float
    min_requests: int
    max_seconds: float

    def count(self, rate: float) -> int:
        return max(int(rate * self.seconds), min(self.min_requests, int(rate * self.max_seconds) + 1), 3)


def load_point(url: str, rate: float, size: PointSize, seed: int) -> LoadReport:
    return open_loop(url, rate=round(rate, 2), count=size.count(rate), prompt=PROMPT, max_tokens=MAX_TOKENS,
                     slo_s=E2E.e2e_s, seed=seed)


def best_within(bound: LatencyBound, reports: list[LoadReport]) -> LoadReport | None:
    """The highest offered rate of the sweep that met ``bound`` (p99s within it and no failed request)."""
    meeting = [report for report in reports if bound.met(report)]
    return max(meeting, key=lambda report: report.offered_qps) if meeting else None


def sweep(url: str, saturation_rps: float, size: PointSize, per_decade: int, refinements: int) -> list[LoadReport]:
    """Geometric rates from 1% of saturation up, stopped after two points that meet no bound; then, for
    each bound, ``refinements`` geometric bisections between its best rate and the next one up."""
    reports: list[LoadReport] = []
    misses = 0
    for rate in geometric_rates(saturation_rps, 0.01, per_decade):
        reports.append(load_point(url, rate, size, seed=len(reports)))
        misses = 0 if any(bound.met(reports[-1]) for bound in BOUNDS) else misses + 1
        if misses == 2:
            break
    for bound in BOUNDS:
        for _ in range(refinements):
            best = best_within(bound, reports)
            above = [r.offered_qps for r in reports if best is not None and r.offered_qps > best.offered_qps]
            if best is None or not above:
                break
            reports.append(load_point(url, math.sqrt(best.offered_qps * min(above)), size, seed=len(reports)))
    return sorted(reports, key=lambda report: report.offered_qps)


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User + system CPU time of a process and of its children (the engine child, if any)."""
    process = psutil.Process(pid)
    children = sum(sum(child.cpu_times()[:2]) for child in process.children(recursive=True))
    return sum(process.cpu_times()[:2]), children


@dataclass(frozen=True)
class OfflineRun:
    rps: float
    cpu_s: float


def offline_throughput(count: int, model: str = MODEL, batch: int = DYNAMIC_BATCH, device: str = "cpu"
                       ) -> OfflineRun:
    """The engine in this process with every request queued at once (no HTTP): requests/s and CPU s."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        engine = EngineThread(load_model(model, seed=0, device=device),
                              EngineConfig(max_batch_size=batch, max_queue_size=max(QUEUE, count)))
        engine.start()
        params = SamplingParams(max_new_tokens=MAX_TOKENS)
        submit_and_wait(engine, [list(PROMPT.encode())] * (2 * batch), params)
        start, cpu_start = time.perf_counter(), time.process_time()
        submit_and_wait(engine, [list(PROMPT.encode())] * count, params)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        engine.stop()
    finally:
        torch.set_num_threads(threads)
    return OfflineRun(rps=count / elapsed, cpu_s=cpu)


@dataclass(frozen=True)
class OverheadRound:
    """One served saturation run next to one offline run of the same requests, with CPU seconds per request."""

    served: LoadReport
    offline: OfflineRun
    server_cpu: float
    engine_child_cpu: float
    client_cpu: float

    @property
    def ratio(self) -> float:
        return self.served.throughput_rps / self.offline.rps


def alternating_rounds(url: str, pid: int, count: int, rounds: int, stream: bool = True) -> list[OverheadRound]:
    """Offline and served saturation runs taken in turns, so a busy spell of the machine hits both."""
    results = []
    for _ in range(rounds):
        offline = offline_throughput(count)
        server_before, child_before = cpu_seconds(pid)
        client_before = time.process_time()
        report = saturation(url, count, stream)
        client = time.process_time() - client_before
        server_after, child_after = cpu_seconds(pid)
        server = server_after + child_after - server_before - child_before
        results.append(OverheadRound(report, offline, server / count, (child_after - child_before) / count,
                                     client / count))
    return results


def cpu_ceiling_rps(rounds: list[OverheadRound], engine: str, cores: int) -> float:
    """The served throughput the measured CPU costs allow: every core busy, and no single-threaded part
    (the engine child, or a server process whose Python shares one GIL) past one core."""
    server = statistics.median(r.server_cpu for r in rounds)
    child = statistics.median(r.engine_child_cpu for r in rounds)
    client = statistics.median(r.client_cpu for r in rounds)
    single_core_parts = [child, server - child] if engine == "process" else [server]
    return min(cores / (server + client), *(1 / part for part in single_core_parts if part > 0))


def record_curve(record: Callable[..., object], reports: list[LoadReport], batching: str) -> None:
    for report in reports:
        params = {"qps": report.offered_qps, "batching": batching}
        series = (("serving_latency_p50", report.latency_p50_s, None, "median end-to-end latency"),
                  ("serving_latency_p99", report.latency_p99_s, E2E.e2e_s, "p99 end-to-end latency"),
                  ("serving_ttft_p99", report.ttft_p99_s, INTERACTIVE.ttft_s, "p99 time to first token"),
                  ("serving_tpot_p50", report.tpot_p50_s, None, "median time per output token after the first"),
                  ("serving_tpot_p99", report.tpot_p99_s, INTERACTIVE.tpot_s,
                   "p99 over requests of the time per output token after the first"))
        for name, value, bound, what in series:
            if math.isfinite(value):
                record(name=name, value=value * 1e3, unit="ms", better="lower", area="serving", scale=SCALE,
                       params=params, x="qps", goal=None if bound is None else bound * 1e3,
                       description=f"{what} of streamed completions at an offered Poisson rate"
                                   + ("" if bound is None else f"; the bound is {bound * 1e3:g} ms"))
        record(name="serving_throughput", value=report.throughput_rps, unit="req/s", better="higher",
               area="serving", scale=SCALE, params=params, x="qps",
               baseline=Baseline("offered load", report.offered_qps, "req/s", "limit"),
               description="completed requests per second at the offered rate")
        record(name="serving_goodput", value=report.goodput_rps, unit="req/s", better="higher", area="serving",
               scale=SCALE, params=params, x="qps",
               description=f"completed requests per second with latency <= {E2E.e2e_s * 1e3:.0f} ms")
        record(name="serving_failed_requests", value=report.failed, unit="requests", better="lower",
               area="serving", scale=SCALE, params=params, x="qps",
               description=f"requests that failed or were lost out of {report.sent} sent")


def record_overhead(record: Callable[..., object], overhead: dict[tuple[str, bool], list[OverheadRound]],
                    count: int) -> None:
    """Served vs offline: throughput ratio per engine and answer format, CPU per request, the CPU ceiling."""
    cores = len(os.sched_getaffinity(0))
    offline = [r.offline for rounds in overhead.values() for r in rounds]
    offline_rps = Spread.of([run.rps for run in offline])
    offline_cpu = statistics.median(run.cpu_s / count for run in offline)
    params = {"batch": DYNAMIC_BATCH, "requests": count}
    record(name="serving_offline_throughput", value=offline_rps.median, unit="req/s", better="higher",
           area="serving", scale=SCALE, params=params, spread=offline_rps,
           description=f"engine in this process, one torch thread, all requests queued at once, no HTTP; median "
                       f"of {offline_rps.repeats} runs interleaved with the served ones")
    record(name="serving_cpu_per_request", value=1e3 * offline_cpu, unit="ms CPU", better="lower", area="serving",
           scale=SCALE, params={**params, "path": "offline"},
           description="CPU time of the engine's process per request, offline (median of the runs)")
    for (engine, stream), rounds in overhead.items():
        run_params = {**params, "engine": engine, "stream": stream}
        answer = "SSE, one event per token" if stream else "one JSON body"
        ratios = Spread.of([r.ratio for r in rounds])
        served_rps = statistics.median(r.served.throughput_rps for r in rounds)
        record(name="serving_served_over_offline", value=ratios.median, unit="ratio", better="higher",
               area="serving", scale=SCALE, params=run_params, spread=ratios, goal=0.85,
               question="How close does the HTTP server come to the engine's own throughput?",
               baseline=Baseline("the same requests queued in-process", statistics.median(
                   r.offline.rps for r in rounds), "req/s", ours=served_rps),
               description=f"served throughput at saturation (HTTP, {answer}, engine in a {WHERE[engine]}, "
                           f"{SATURATION_CONCURRENCY} requests kept outstanding on reused connections) / offline, "
                           f"paired runs taken in turns, median of {len(rounds)}; the client shares the CPUs")
        served_cpu = statistics.median(r.server_cpu for r in rounds)
        client_cpu = statistics.median(r.client_cpu for r in rounds)
        record(name="serving_cpu_per_request", value=1e3 * served_cpu, unit="ms CPU", better="lower",
               area="serving", scale=SCALE, params={**run_params, "path": "served"},
               description=f"CPU time of the server process{' and its engine child' if engine == 'process' else ''} "
                           "per request at saturation (median of the runs), HTTP and SSE included")
        record(name="serving_cpu_per_request", value=1e3 * client_cpu, unit="ms CPU", better="lower",
               area="serving", scale=SCALE, params={**run_params, "path": "client"},
               description="CPU time of the load generator per request during the served runs")
        record(name="serving_cpu_efficiency", value=offline_cpu / served_cpu, unit="ratio", better="higher",
               area="serving", scale=SCALE, params=run_params,
               description="offline / served CPU per request: the throughput ratio CPU alone would allow on a "
                           "single core, steadier than wall-clock ratios on a shared machine")
        ceiling = cpu_ceiling_rps(rounds, engine, cores)
        inputs = {"cores": cores, "offline_cpu_ms": round(1e3 * offline_cpu, 4),
                  "server_cpu_ms": round(1e3 * served_cpu, 4), "client_cpu_ms": round(1e3 * client_cpu, 4),
                  "engine_child_cpu_ms": round(1e3 * statistics.median(r.engine_child_cpu for r in rounds), 4)}
        record(name="serving_served_over_offline_ceiling", value=min(ceiling * offline_cpu, 1.0), unit="ratio",
               better="higher", area="serving", scale=SCALE, params=run_params, kind="projected",
               projection=Projection(model="CPU budget: served rps <= min(cores / (server + client CPU per request), "
                                           "1 / CPU per request of each single-threaded part); offline rps = "
                                           "1 / offline CPU per request", inputs=inputs),
               description="the served/offline ratio the measured CPU costs leave possible on this machine, with "
                           "the load generator on the same cores: the physical limit of serving_served_over_offline")


def record_capacity(record: Callable[..., object], results: dict[str, tuple[LoadReport, list[LoadReport]]]) -> None:
    best: dict[tuple[str, str], LoadReport | None] = {}
    for batching, (saturated, reports) in results.items():
        record_curve(record, reports, batching)
        record(name="serving_saturation_throughput", value=saturated.throughput_rps, unit="req/s",
               better="higher", area="serving", scale=SCALE, params={"batching": batching},
               description=f"{saturated.sent} requests with {SATURATION_CONCURRENCY} always outstanding; "
                           f"{saturated.failed} failed")
        for bound in BOUNDS:
            best[batching, bound.name] = found = best_within(bound, reports)
            record(name="serving_max_qps_at_slo", value=found.offered_qps if found else 0.0, unit="req/s",
                   better="higher", area="serving", scale=SCALE,
                   params={"batching": batching, **BOUND_PARAMS[bound.name]},
                   question="What load does each batching mode serve within the p99 bound?",
                   baseline=Baseline("saturation throughput", saturated.throughput_rps, "req/s", "limit"),
                   description=f"highest offered rate of the sweep (geometric from 1% of saturation) with "
                               f"{bound.describe()} and no failed request, 0 if none; {BOUND_SOURCES[bound.name]}")
        below = [r for r in reports if r.offered_qps < saturated.throughput_rps]
        record(name="serving_failed_below_saturation", value=sum(r.failed for r in below), unit="requests",
               better="lower", area="serving", scale=SCALE, params={"batching": batching}, goal=0,
               question="Does the server fail or lose any request below saturation?",
               description=f"failed or lost requests over the sweep points below saturation "
                           f"({sum(r.sent for r in below)} sent)")
    for bound in BOUNDS:
        dynamic, single = best["dynamic", bound.name], best["off", bound.name]
        if single is None:
            continue
        dynamic_qps = dynamic.offered_qps if dynamic else 0.0
        record(name="serving_batching_gain_at_slo", value=dynamic_qps / single.offered_qps, unit="x",
               better="higher", area="serving", scale=SCALE, params=BOUND_PARAMS[bound.name], goal=4.0,
               question="How much more load does dynamic batching serve than batch size 1 within the same bound?",
               baseline=Baseline("batch size 1", single.offered_qps, "req/s", ours=dynamic_qps),
               description=f"max offered rate with {bound.describe()}: dynamic batching / batch size 1")
    record_seed_row(record, results, best)


def record_seed_row(record: Callable[..., object], results: dict[str, tuple[LoadReport, list[LoadReport]]],
                    best: dict[tuple[str, str], LoadReport | None]) -> None:
    """The seed's Inference Latency row: p99 at the highest QPS within 50 ms, and the 1M-QPS fleet it implies."""
    meeting = {batching: best[batching, E2E.name] for batching in results if best[batching, E2E.name] is not None}
    slo = Baseline("p99 SLO", E2E.e2e_s * 1e3, "ms", "limit")
    if not meeting:
        lightest = min(results["dynamic"][1], key=lambda report: report.offered_qps)
        record(name="serving_p99_at_max_qps", value=lightest.latency_p99_s * 1e3, unit="ms", better="lower",
               area="serving", scale=f"one replica at {lightest.offered_qps} req/s; {SCALE}",
               seed_row="inference_latency", params={"qps": lightest.offered_qps, "batching": "dynamic"},
               baseline=slo, goal=E2E.e2e_s * 1e3,
               description="no offered rate met the 50 ms p99 in either mode; this is the p99 at the lightest load "
                           "of the dynamic sweep (1% of saturation)")
        return
    batching = max(meeting, key=lambda name: meeting[name].offered_qps)
    chosen = meeting[batching]
    record(name="serving_p99_at_max_qps", value=chosen.latency_p99_s * 1e3, unit="ms", better="lower",
           area="serving", scale=f"one replica at {chosen.offered_qps} req/s; {SCALE}",
           seed_row="inference_latency", params={"qps": chosen.offered_qps, "batching": batching},
           baseline=slo, goal=E2E.e2e_s * 1e3,
           description="measured p99 end-to-end latency at the highest offered QPS that meets the 50 ms SLO, "
                       "with whichever batching mode reached the higher QPS")
    replicas = math.ceil(SEED_QPS / chosen.offered_qps)
    inputs = {"replica_qps_at_slo": chosen.offered_qps, "batching": batching,
              "replica_p99_ms": round(chosen.latency_p99_s * 1e3, 2),
              "target_qps": SEED_QPS, "usd_per_replica_hour_assumed": REPLICA_USD_PER_HOUR,
              "price_source": REPLICA_PRICE_SOURCE}
    model = ("independent replicas behind an ideal load balancer, each at its measured max QPS at the SLO: "
             "replicas = ceil(target / replica QPS), fleet p99 = replica p99")
    record(name="serving_fleet_replicas_1m_qps", value=replicas, unit="replicas", better="lower", area="serving",
           scale=f"{SEED_QPS:,} QPS; {SCALE}", kind="projected", seed_row="inference_latency",
           projection=Projection(model=model, inputs=inputs),
           description="replicas of this server needed for the seed's 1M QPS at p99 <= 50 ms")
    record(name="serving_fleet_cost_1m_qps", value=replicas * REPLICA_USD_PER_HOUR, unit="USD/h", better="lower",
           area="serving", scale=f"{SEED_QPS:,} QPS; {SCALE}", kind="projected", seed_row="inference_latency",
           projection=Projection(model=model + "; cost = replicas x assumed price per replica-hour", inputs=inputs),
           description="hourly cost of that fleet at the assumed on-demand price")
    record(name="serving_fleet_p99_1m_qps", value=chosen.latency_p99_s * 1e3, unit="ms", better="lower",
           area="serving", scale=f"{SEED_QPS:,} QPS; {SCALE}", kind="projected", seed_row="inference_latency",
           projection=Projection(model=model, inputs=inputs),
           description="fleet p99 if every replica runs at its measured max QPS at the SLO")


def test_serving_latency_throughput_curve(benchmark, record, profile):
    """p50/p99, TTFT and TPOT vs offered QPS with dynamic batching and with batch size 1; capacity within the
    bounds; and the server's overhead: saturation throughput over the same requests run offline in this
    process, with the engine in a server thread (the default) and in a child process."""
    size = profile.pick(quick=PointSize(3.0, 25, 8.0), full=PointSize(10.0, 100, 30.0))
    per_decade, refinements = profile.pick(quick=(2, 1), full=(4, 2))
    burst = profile.pick(quick=200, full=1000)
    rounds = profile.pick(quick=2, full=4)
    results: dict[str, tuple[LoadReport, list[LoadReport]]] = {}
    overhead: dict[tuple[str, bool], list[OverheadRound]] = {}
    bursty: dict[str, LoadReport] = {}

    def run() -> None:
        with served(DYNAMIC_BATCH, engine="process") as (url, pid):
            overhead["process", True] = alternating_rounds(url, pid, burst, rounds)
        for batching, batch in (("dynamic", DYNAMIC_BATCH), ("off", 1)):
            with served(batch) as (url, pid):
                if batch == 1:
                    saturated = saturation(url, burst // 4)
                else:
                    overhead["thread", True] = alternating_rounds(url, pid, burst, rounds)
                    overhead["thread", False] = alternating_rounds(url, pid, burst, rounds, stream=False)
                    saturated = max((r.served for r in overhead["thread", True]), key=lambda r: r.throughput_rps)
                results[batching] = (saturated, sweep(url, saturated.throughput_rps, size, per_decade, refinements))
                if batch > 1:
                    rate = round(0.5 * saturated.throughput_rps, 1)
                    bursty["report"] = open_loop(url, rate=rate, count=size.count(rate), prompt=PROMPT,
                                                 max_tokens=MAX_TOKENS, burstiness=BURSTY, slo_s=E2E.e2e_s)

    benchmark.pedantic(run, rounds=1, iterations=1)
    record_capacity(record, results)
    report = bursty["report"]
    record(name="serving_latency_p99_bursty", value=report.latency_p99_s * 1e3, unit="ms", better="lower",
           area="serving", scale=SCALE,
           params={"qps": report.offered_qps, "batching": "dynamic", "burstiness": BURSTY},
           description=f"p99 at half the saturation rate with Gamma gaps of shape {BURSTY} (coefficient of "
                       f"variation {BURSTY ** -0.5:.0f}, Poisson is 1); {report.failed} failed")
    record_overhead(record, overhead, burst)


def test_serving_mlperf_loadgen(benchmark, record, profile, tmp_path):
    """MLPerf LoadGen drives the in-process engine: Offline first, then Server at half the Offline throughput,
    judged once on the 50 ms end-to-end p99 and once on MLPerf's interactive TTFT/TPOT bounds.

    A short Offline probe sizes the Offline run (LoadGen calls a run that ends before ``min_duration``
    INVALID, so it expects 2.5x the probe's rate). A Server claim with no query over its bound needs
    about 460 queries before LoadGen's early-stopping check can accept it.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    engine = EngineThread(load_model(MODEL, seed=0), EngineConfig(max_batch_size=DYNAMIC_BATCH, max_queue_size=1 << 20))
    engine.start()
    prompt = list(PROMPT.encode())
    runs = {}
    server_duration = profile.pick(quick=2.0, full=60.0)
    server_queries = profile.pick(quick=480, full=5000)

    def run() -> None:
        probe = run_mlperf(engine, "Offline", prompt, MAX_TOKENS, target_qps=100.0, min_duration_s=0.5,
                           min_query_count=100, output_dir=str(tmp_path / "probe"))
        runs["Offline"] = run_mlperf(engine, "Offline", prompt, MAX_TOKENS,
                                     target_qps=round(2.5 * probe.samples_per_second, 1),
                                     min_duration_s=profile.pick(quick=1.0, full=60.0), min_query_count=100,
                                     output_dir=str(tmp_path / "offline"))
        target = round(LOADGEN_SERVER_FRACTION * runs["Offline"].samples_per_second, 1)
        runs[E2E.name] = run_mlperf(engine, "Server", prompt, MAX_TOKENS, target_qps=target, latency_slo_s=E2E.e2e_s,
                                    min_duration_s=server_duration, min_query_count=server_queries,
                                    output_dir=str(tmp_path / "server"))
        runs[INTERACTIVE.name] = run_mlperf(engine, "Server", prompt, MAX_TOKENS, target_qps=target,
                                            min_duration_s=server_duration, min_query_count=server_queries,
                                            output_dir=str(tmp_path / "server-tokens"),
                                            token_bounds_s=(INTERACTIVE.ttft_s, INTERACTIVE.tpot_s))

    try:
        benchmark.pedantic(run, rounds=1, iterations=1)
    finally:
        engine.stop()
        torch.set_num_threads(threads)
    note = "MLPerf LoadGen PerformanceOnly, shortened run (not an MLPerf submission)"
    offline = runs["Offline"]
    target = round(LOADGEN_SERVER_FRACTION * offline.samples_per_second, 1)
    for key in ("Offline", E2E.name, INTERACTIVE.name):
        result = runs[key]
        params = {"scenario": result.scenario} if key in ("Offline", E2E.name) else {
            "scenario": "Server", "bound": INTERACTIVE.name}
        verdict = "VALID" if result.valid else "INVALID"
        judged = "" if key == "Offline" else f"; target {target} samples/s, {BOUNDS_BY_NAME[key].describe()}"
        record(name="serving_mlperf_samples_per_second", value=result.samples_per_second, unit="samples/s",
               better="higher", area="serving", scale=SCALE, params=params,
               description=f"{note}; LoadGen result {verdict}{judged}")
        record(name="serving_mlperf_valid", value=float(result.valid), unit="1 = VALID", better="higher",
               area="serving", scale=SCALE, params=params, goal=1.0,
               question="Does MLPerf LoadGen judge the run VALID (Server at half the Offline throughput)?",
               description=f"{note}: LoadGen's verdict{judged}")
        if key == "Offline":
            continue
        record(name="serving_mlperf_server_over_offline", value=result.samples_per_second / offline.samples_per_second
               if result.valid else 0.0, unit="ratio", better="higher", area="serving", scale=SCALE, params=params,
               goal=LOADGEN_SERVER_FRACTION,
               question="What share of its Offline throughput does the engine serve in LoadGen's Server scenario?",
               baseline=Baseline("LoadGen Offline scenario", offline.samples_per_second, "samples/s",
                                 ours=result.samples_per_second),
               description=f"{note}: Server samples/s over Offline samples/s when LoadGen says VALID, else 0; "
                           f"Server targets {LOADGEN_SERVER_FRACTION} x Offline")
        bounds = ((("serving_mlperf_server_p99", result.latency_p99_ns, E2E.e2e_s),) if key == E2E.name else
                  (("serving_mlperf_server_ttft_p99", result.ttft_p99_ns, INTERACTIVE.ttft_s),
                   ("serving_mlperf_server_tpot_p99", result.tpot_p99_ns, INTERACTIVE.tpot_s)))
        for name, nanoseconds, bound_s in bounds:
            if nanoseconds is not None:
                record(name=name, value=nanoseconds / 1e6, unit="ms", better="lower", area="serving", scale=SCALE,
                       params={**params, "target_qps": target},
                       baseline=Baseline("LoadGen's bound", bound_s * 1e3, "ms", "limit"),
                       description=f"{note}: LoadGen's 99th percentile (bound {bound_s * 1e3:g} ms)")


@pytest.mark.gpu
@pytest.mark.parametrize("model", ["debug", "small"])
def test_serving_offline_throughput_gpu(benchmark, record, model):
    """The engine alone on a CUDA device: requests/s with 64 slots, every request queued at once."""
    batch, count = 64, 2048
    measured = {}
    benchmark.pedantic(lambda: measured.update(rps=offline_throughput(count, model, batch, "cuda").rps),
                       rounds=1, iterations=1)
    record(name="serving_offline_throughput_gpu", value=measured["rps"], unit="req/s", better="higher",
           area="serving", scale=f"{model} model, {len(PROMPT)}-byte prompt, {MAX_TOKENS} output tokens",
           params={"model": model, "batch": batch, "requests": count, "device": "cuda"},
           question="How many requests per second does the engine complete on one GPU?",
           description="engine in-process on one GPU, fp32, all requests queued at once, no HTTP")
