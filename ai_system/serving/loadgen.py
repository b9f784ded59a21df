"""Load generation for the model server: an open-loop HTTP client and offline submission to an engine.

Open loop means requests leave on a fixed schedule whatever the server does, so a slow server sees
its queue grow, as real traffic would make it; a closed-loop client (send, wait, send) would slow
down with the server and hide its saturation (Schroeder et al., "Open versus closed", NSDI 2006).
Gaps between requests are Gamma-distributed with mean 1/rate: ``burstiness == 1`` is a Poisson
process, smaller values are burstier (the coefficient of variation is 1/sqrt(burstiness)), the same
knob as vLLM's ``benchmark_serving``.

Every request streams, so the client sees the time to first token and the gap between tokens.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import threading
import time
from collections.abc import AsyncIterator, Coroutine, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import numpy as np

from ai_system.cli import number
from ai_system.inference.engine import Engine, Event, Request
from ai_system.inference.generate import SamplingParams

T = TypeVar("T")


@dataclass(frozen=True)
class RequestRecord:
    """One request as the client saw it; times are seconds since the run started."""

    sent: float
    end: float
    first_token: float | None
    tokens: int
    status: int
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200 and not self.error


@dataclass(frozen=True)
class LoadReport:
    """Summary of one run: throughput, latency percentiles (s), and goodput under ``slo_s``."""

    offered_qps: float
    duration_s: float
    sent: int
    completed: int
    failed: int
    throughput_rps: float
    tokens_per_s: float
    latency_p50_s: float
    latency_p90_s: float
    latency_p99_s: float
    ttft_p50_s: float
    ttft_p99_s: float
    tpot_p50_s: float
    tpot_p99_s: float
    slo_s: float
    goodput_rps: float
    errors: dict[str, int]

    @classmethod
    def from_records(cls, records: Sequence[RequestRecord], offered_qps: float, slo_s: float) -> LoadReport:
        """Throughput counts completions over the span from first send to last completion."""
        if not records:
            raise ValueError("a load report needs at least one request record, got none")
        ok = [r for r in records if r.ok]
        span = max(r.end for r in records) - min(r.sent for r in records)
        latency = [r.end - r.sent for r in ok]
        ttft = [r.first_token - r.sent for r in ok if r.first_token is not None]
        tpot = [(r.end - r.first_token) / (r.tokens - 1) for r in ok if r.first_token is not None and r.tokens > 1]
        errors: dict[str, int] = {}
        for record in records:
            if not record.ok:
                kind = str(record.status) if record.status else record.error.split(":")[0]
                errors[kind] = errors.get(kind, 0) + 1

        def pct(values: list[float], q: float) -> float:
            return float(np.percentile(values, q)) if values else math.nan

        return cls(offered_qps=offered_qps, duration_s=span, sent=len(records), completed=len(ok),
                   failed=len(records) - len(ok), throughput_rps=len(ok) / span if span > 0 else math.nan,
                   tokens_per_s=sum(r.tokens for r in ok) / span if span > 0 else math.nan,
                   latency_p50_s=pct(latency, 50), latency_p90_s=pct(latency, 90), latency_p99_s=pct(latency, 99),
                   ttft_p50_s=pct(ttft, 50), ttft_p99_s=pct(ttft, 99), tpot_p50_s=pct(tpot, 50),
                   tpot_p99_s=pct(tpot, 99), slo_s=slo_s,
                   goodput_rps=sum(x <= slo_s for x in latency) / span if span > 0 else math.nan,
                   errors=errors)


@dataclass(frozen=True)
class LatencyBound:
    """A p99 service bound a load point meets or misses: end to end, or MLPerf's LLM pair (TTFT, TPOT).

    MLPerf Inference states LLM server bounds as the 99th percentile of the time to first token and
    of the time per output token after it (``mlperf.conf``: ``ttft_latency``, ``tpot_latency``); a
    single end-to-end bound (the seed's 50 ms) only means something for a stated request shape.
    A point with a failed request never meets a bound.
    """

    name: str
    e2e_s: float | None = None
    ttft_s: float | None = None
    tpot_s: float | None = None

    def __post_init__(self) -> None:
        limits = (self.e2e_s, self.ttft_s, self.tpot_s)
        if all(limit is None for limit in limits) or any(limit is not None and not limit > 0 for limit in limits):
            raise ValueError(f"LatencyBound {self.name!r} needs positive seconds for e2e_s and/or ttft_s/tpot_s, "
                             f"got {limits}")

    def met(self, report: LoadReport) -> bool:
        checks = ((self.e2e_s, report.latency_p99_s), (self.ttft_s, report.ttft_p99_s),
                  (self.tpot_s, report.tpot_p99_s))
        return report.failed == 0 and all(limit is None or value <= limit for limit, value in checks)

    def describe(self) -> str:
        parts = [f"{label} p99 <= {1e3 * limit:g} ms" for label, limit in
                 (("end-to-end", self.e2e_s), ("TTFT", self.ttft_s), ("TPOT", self.tpot_s)) if limit is not None]
        return " and ".join(parts)


def geometric_rates(saturation_rps: float, lowest_fraction: float = 0.01, per_decade: int = 4) -> list[float]:
    """Offered rates from ``lowest_fraction`` of saturation up to saturation, ``per_decade`` per factor of 10.

    Starting far below saturation guarantees points where queueing is negligible, so every
    configuration shows the latency it has when lightly loaded; the geometric spacing gives each
    decade of load the same number of points.
    """
    if not saturation_rps > 0 or not 0 < lowest_fraction < 1 or per_decade < 1:
        raise ValueError(f"need saturation_rps > 0, 0 < lowest_fraction < 1 and per_decade >= 1, got "
                         f"{saturation_rps}, {lowest_fraction}, {per_decade}")
    steps = math.ceil(per_decade * math.log10(1 / lowest_fraction))
    return [saturation_rps * lowest_fraction ** (1 - step / steps) for step in range(steps + 1)]


def arrival_times(rate: float, count: int, burstiness: float = 1.0, seed: int = 0) -> list[float]:
    """Send offsets (s) of ``count`` requests at mean ``rate`` per second; ``rate=inf`` sends all at once."""
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    if not rate > 0:
        raise ValueError(f"rate must be positive requests/s (or inf for one burst), got {rate}")
    if not burstiness > 0:
        raise ValueError(f"burstiness must be positive (1 = Poisson, < 1 = burstier), got {burstiness}")
    if math.isinf(rate):
        return [0.0] * count
    rng = random.Random(seed)
    now, times = 0.0, []
    for _ in range(count):
        times.append(now)
        now += rng.gammavariate(burstiness, 1.0 / (rate * burstiness))
    return times


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    status = int((await reader.readline()).split()[1])
    headers = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


async def _chunks(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    """The body of a ``Transfer-Encoding: chunked`` response, chunk by chunk."""
    while size := int((await reader.readline()).split(b";")[0], 16):
        yield await reader.readexactly(size)
        await reader.readexactly(2)
    await reader.readline()


class ConnectionPool:
    """Idle keep-alive connections to one server, reused by later requests, opened on demand.

    A request never waits for a connection (the load stays open-loop): it takes an idle one or
    opens its own, and returns it once the whole response has been read. Reusing connections, as
    real clients do, keeps the TCP handshake and the server's per-connection setup out of every
    request, on both sides of a two-core machine.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def take(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bool]:
        """A connection and whether it was reused (a reused one may have been closed by the server meanwhile)."""
        while self._idle:
            reader, writer = self._idle.pop()
            if not writer.is_closing() and not reader.at_eof():
                return reader, writer, True
            writer.close()
        reader, writer = await asyncio.open_connection(self.host, self.port)
        return reader, writer, False

    def give_back(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._idle.append((reader, writer))

    def close(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()


async def _send(pool: ConnectionPool, request: bytes, t0: float) -> RequestRecord:
    """One completion, timed from send to ``[DONE]`` (or to the whole JSON body), on a pooled connection.

    A bare HTTP/1.1 client on asyncio streams: at hundreds of requests per second a general-purpose
    client's own CPU time would be the bottleneck on a two-core machine and inflate the latencies.
    A reused connection that the server closed while idle fails before any byte of the answer; the
    request is then sent again on a new connection.
    """
    sent = time.perf_counter() - t0
    first_token, tokens = None, 0
    writer = None
    keep_alive = finished = False
    try:
        reader, writer, reused = await pool.take()
        try:
            writer.write(request)
            status, headers = await _read_response(reader)
        except (OSError, asyncio.IncompleteReadError, IndexError, ValueError):
            if not reused:
                raise
            writer.close()
            reader, writer = await asyncio.open_connection(pool.host, pool.port)
            writer.write(request)
            status, headers = await _read_response(reader)
        keep_alive = headers.get("connection", "").lower() != "close"
        if status != 200:
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            finished = True
            return RequestRecord(sent, time.perf_counter() - t0, None, 0, status, body.decode(errors="replace")[:200])
        if "content-length" in headers:
            body = json.loads(await reader.readexactly(int(headers["content-length"])))
            finished = True
            return RequestRecord(sent, time.perf_counter() - t0, None, body["usage"]["completion_tokens"], 200)
        pending = b""
        async for chunk in _chunks(reader):
            pending += chunk
            *events, pending = pending.split(b"\n\n")
            for event in events:
                if event.startswith(b'data: {"error"'):
                    message = json.loads(event[6:])["error"]["message"]
                    return RequestRecord(sent, time.perf_counter() - t0, first_token, tokens, 200,
                                         f"stream error: {message}")
                if event.endswith(b'"finish_reason": null}]}'):
                    tokens += 1
                    if first_token is None:
                        first_token = time.perf_counter() - t0
        finished = True
    except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as error:
        return RequestRecord(sent, time.perf_counter() - t0, first_token, tokens, 0,
                             f"{type(error).__name__}: {error}")
    finally:
        if writer is not None:
            if keep_alive and finished:
                pool.give_back(reader, writer)
            else:
                writer.close()
    return RequestRecord(sent, time.perf_counter() - t0, first_token, tokens, 200)


def completion_request(host: str, port: int, prompt: str, max_tokens: int, stream: bool = True) -> bytes:
    """The raw bytes of a ``POST /v1/completions`` on a keep-alive connection."""
    body = json.dumps({"prompt": prompt, "max_tokens": max_tokens, "stream": stream}).encode()
    head = (f"POST /v1/completions HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


def _address(base_url: str) -> tuple[str, int]:
    url = urlsplit(base_url)
    if url.scheme != "http" or url.hostname is None or url.port is None:
        raise ValueError(f"base_url must look like http://host:port, got {base_url!r}")
    return url.hostname, url.port


async def open_loop_async(base_url: str, rate: float, count: int, prompt: str, max_tokens: int,
                          burstiness: float = 1.0, seed: int = 0, timeout_s: float = 60.0, stream: bool = True
                          ) -> list[RequestRecord]:
    """Fire ``count`` completions at their scheduled times; never waits on the server to send.

    Without ``stream`` the server answers with one JSON body, so there is no time to first token.
    """
    host, port = _address(base_url)
    request = completion_request(host, port, prompt, max_tokens, stream)
    schedule = arrival_times(rate, count, burstiness, seed)
    pool = ConnectionPool(host, port)
    t0 = time.perf_counter()
    tasks = []
    for offset in schedule:
        delay = t0 + offset - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(asyncio.wait_for(_send(pool, request, t0), timeout_s)))
    results = await asyncio.gather(*tasks, return_exceptions=True)
    pool.close()
    now = time.perf_counter() - t0
    return [result if isinstance(result, RequestRecord)
            else RequestRecord(offset, now, None, 0, 0, f"{type(result).__name__}: {result}")
            for offset, result in zip(schedule, results, strict=True)]


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on uvloop where it is installed (a fraction of asyncio's CPU per request), else asyncio."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def open_loop(base_url: str, rate: float, count: int, prompt: str, max_tokens: int, burstiness: float = 1.0,
              seed: int = 0, slo_s: float = 0.05, timeout_s: float = 60.0, stream: bool = True) -> LoadReport:
    """Run the open-loop client and summarize it (see ``open_loop_async``)."""
    records = run_async(open_loop_async(base_url, rate, count, prompt, max_tokens, burstiness, seed, timeout_s,
                                        stream))
    return LoadReport.from_records(records, rate, slo_s)


async def closed_loop_async(base_url: str, concurrency: int, count: int, prompt: str, max_tokens: int,
                            timeout_s: float = 60.0, stream: bool = True) -> list[RequestRecord]:
    """``concurrency`` clients, each sending its next completion when its last one ends, ``count`` in all."""
    if concurrency < 1 or count < 1:
        raise ValueError(f"concurrency and count must be at least 1, got {concurrency} and {count}")
    host, port = _address(base_url)
    request = completion_request(host, port, prompt, max_tokens, stream)
    pool = ConnectionPool(host, port)
    t0 = time.perf_counter()
    records: list[RequestRecord] = []
    unsent = count

    async def client() -> None:
        nonlocal unsent
        while unsent > 0:
            unsent -= 1
            sent = time.perf_counter() - t0
            try:
                records.append(await asyncio.wait_for(_send(pool, request, t0), timeout_s))
            except asyncio.TimeoutError:
                records.append(RequestRecord(sent, time.perf_counter() - t0, None, 0, 0,
                                             f"TimeoutError: no answer within {timeout_s} s"))

    await asyncio.gather(*(client() for _ in range(min(concurrency, count))))
    pool.close()
    return records


def saturate(base_url: str, count: int, prompt: str, max_tokens: int, concurrency: int, slo_s: float = 0.05,
             timeout_s: float = 60.0, stream: bool = True) -> LoadReport:
    """The server's throughput when it never waits for work: ``concurrency`` requests always outstanding.

    With ``concurrency`` above the engine's slots the queue never empties, as in an offline run, while
    the client reuses as many connections as it keeps requests in flight (sending all ``count`` at
    once would instead measure a storm of connection set-ups).
    """
    records = run_async(closed_loop_async(base_url, concurrency, count, prompt, max_tokens, timeout_s, stream))
    return LoadReport.from_records(records, math.inf, slo_s)


def submit_and_wait(engine: Engine, prompts: Sequence[list[int]], params: SamplingParams,
                    timeout_s: float = 120.0) -> list[Request]:
    """Submit every prompt to an engine at once and wait until all have ended."""
    remaining = len(prompts)
    all_done = threading.Event()
    lock = threading.Lock()

    def on_event(event: Event) -> None:
        nonlocal remaining
        if event.kind != "token":
            with lock:
                remaining -= 1
                if remaining == 0:
                    all_done.set()

    requests = [Request(list(prompt), params, on_event) for prompt in prompts]
    for request in requests:
        engine.submit(request)
    if not all_done.wait(timeout_s):
        raise TimeoutError(f"{remaining} of {len(prompts)} requests unfinished after {timeout_s} s")
    return requests


def loadtest(args: argparse.Namespace) -> int:
    """``ai-system loadtest``: open-loop load against a running server; prints the report as JSON.

    The JSON is standard: a figure with no value (a percentile when no request succeeded, the offered
    rate of ``--rate inf``) is ``null``, not ``NaN`` or ``Infinity``. Exit code 1 if any request failed.
    """
    report = open_loop(args.url, rate=args.rate, count=args.count, prompt=args.prompt, max_tokens=args.max_tokens,
                       burstiness=args.burstiness, seed=args.seed, slo_s=args.slo_ms / 1000, stream=args.stream)
    fields = {name: None if isinstance(value, float) and not math.isfinite(value) else value
              for name, value in asdict(report).items()}
    print(json.dumps(fields, indent=2, allow_nan=False))
    return 0 if report.failed == 0 else 1


def base_url(text: str) -> str:
    """An argparse ``type`` for ``--url``: http://host:port with a port in range."""
    url = urlsplit(text)
    try:
        port = url.port
    except ValueError:
        port = None
    if url.scheme != "http" or not url.hostname or port is None or port < 1:
        raise argparse.ArgumentTypeError(f"expected http://host:port with a port in [1, 65535], got {text!r}")
    return text


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("loadtest", help="open-loop Poisson load against a completions server",
                                   description=loadtest.__doc__)
    parser.add_argument("--url", type=base_url, default="http://127.0.0.1:8000")
    parser.add_argument("--rate", type=number(float, 0, low_open=True, allow_inf=True), default=20.0,
                        help="mean requests per second (inf: all at once)")
    parser.add_argument("--count", type=number(int, 1, 10_000_000), default=200, help="requests to send")
    parser.add_argument("--prompt", default="x" * 32)
    parser.add_argument("--max-tokens", type=number(int, 1, 1_000_000), default=16)
    parser.add_argument("--burstiness", type=number(float, 0, low_open=True), default=1.0,
                        help="Gamma shape of the gaps: 1 = Poisson")
    parser.add_argument("--seed", type=number(int, 0), default=0)
    parser.add_argument("--slo-ms", type=number(float, 0, low_open=True), default=50.0,
                        help="latency bound for goodput")
    parser.add_argument("--no-stream", dest="stream", action="store_false",
                        help="ask for whole JSON answers instead of server-sent events (no TTFT then)")
    parser.set_defaults(func=loadtest)
