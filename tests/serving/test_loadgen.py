"""Load generation: arrival statistics, the report's arithmetic, and real runs against the engine."""

from __future__ import annotations

import asyncio
import json
import math
import socket
import statistics

import pytest

from ai_system.cli import main
from ai_system.inference.engine import EngineConfig, EngineThread, load_model
from ai_system.inference.generate import SamplingParams
from ai_system.serving import loadgen
from ai_system.serving.loadgen import (
    LatencyBound,
    LoadReport,
    RequestRecord,
    arrival_times,
    geometric_rates,
    open_loop,
    saturate,
    submit_and_wait,
)


@pytest.mark.parametrize(("burstiness", "cv"), [(1.0, 1.0), (0.25, 2.0), (4.0, 0.5)])
def test_arrivals_have_the_asked_rate_and_burstiness(burstiness, cv):
    times = arrival_times(rate=200.0, count=20000, burstiness=burstiness, seed=1)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert statistics.fmean(gaps) == pytest.approx(1 / 200, rel=0.05)
    assert statistics.pstdev(gaps) / statistics.fmean(gaps) == pytest.approx(cv, rel=0.08)


def test_infinite_rate_is_one_burst_and_bad_arguments_are_named():
    assert arrival_times(math.inf, 3) == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="rate"):
        arrival_times(0, 3)
    with pytest.raises(ValueError, match="burstiness"):
        arrival_times(1, 3, burstiness=0)
    with pytest.raises(ValueError, match="count"):
        arrival_times(1, 0)


def test_report_percentiles_goodput_and_errors():
    records = [RequestRecord(sent=i * 0.1, end=i * 0.1 + 0.01 * (i + 1), first_token=i * 0.1 + 0.005,
                             tokens=5, status=200) for i in range(10)]
    records.append(RequestRecord(sent=1.0, end=1.0, first_token=None, tokens=0, status=429, error="full"))
    report = LoadReport.from_records(records, offered_qps=10.0, slo_s=0.05)
    assert report.sent == 11 and report.completed == 10 and report.failed == 1
    assert report.errors == {"429": 1}
    assert report.duration_s == pytest.approx(1.0)
    assert report.throughput_rps == pytest.approx(10.0)
    assert report.latency_p50_s == pytest.approx(0.055)
    assert report.ttft_p50_s == pytest.approx(0.005)
    assert report.goodput_rps == pytest.approx(5.0)
    with pytest.raises(ValueError, match="at least one"):
        LoadReport.from_records([], 1.0, 0.05)


def test_open_loop_run_against_the_server_loses_nothing(server):
    report = open_loop(server.url, rate=40.0, count=30, prompt="load test", max_tokens=4, slo_s=5.0)
    assert report.completed == 30 and report.failed == 0
    assert report.tokens_per_s == pytest.approx(4 * report.throughput_rps)
    assert 0 < report.ttft_p50_s <= report.latency_p50_s <= report.latency_p99_s


def test_open_loop_without_streaming_counts_tokens_from_usage(server):
    report = open_loop(server.url, rate=40.0, count=10, prompt="whole", max_tokens=3, stream=False, slo_s=5.0)
    assert report.completed == 10 and report.tokens_per_s == pytest.approx(3 * report.throughput_rps)
    assert math.isnan(report.ttft_p50_s)


def test_offline_submission_returns_every_request_complete():
    engine = EngineThread(load_model("debug"), EngineConfig(max_batch_size=4, max_queue_size=32)).start()
    try:
        requests = submit_and_wait(engine, [list(b"abc")] * 10, SamplingParams(max_new_tokens=3))
    finally:
        engine.stop()
    assert [len(r.generated) for r in requests] == [3] * 10


def test_loadtest_command_prints_the_report(server, capsys):
    assert main(["loadtest", "--url", server.url, "--rate", "50", "--count", "10", "--max-tokens", "3"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["completed"] == 10 and report["failed"] == 0 and report["offered_qps"] == 50


def test_loadtest_against_no_server_reports_every_failure_in_standard_json(capsys):
    """No server listening and ``--rate inf``: every request fails, exit 1, and the report has
    ``null`` where a figure has no value (it used to print ``NaN`` and ``Infinity``)."""
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    assert main(["loadtest", "--url", f"http://127.0.0.1:{port}", "--rate", "inf", "--count", "3"]) == 1
    report = json.loads(capsys.readouterr().out, parse_constant=lambda name: pytest.fail(f"non-standard {name}"))
    assert report["failed"] == 3 and report["completed"] == 0 and report["errors"] == {"ConnectionRefusedError": 3}
    assert report["offered_qps"] is None and report["latency_p50_s"] is None


def test_latency_bounds_judge_p99s_and_any_failure():
    records = [RequestRecord(sent=i * 0.1, end=i * 0.1 + 0.04, first_token=i * 0.1 + 0.01, tokens=16, status=200)
               for i in range(20)]
    report = LoadReport.from_records(records, offered_qps=10.0, slo_s=0.05)
    assert LatencyBound("e2e", e2e_s=0.05).met(report) and not LatencyBound("e2e", e2e_s=0.03).met(report)
    assert LatencyBound("llm", ttft_s=0.02, tpot_s=0.003).met(report)
    assert not LatencyBound("llm", ttft_s=0.005, tpot_s=0.003).met(report)
    failed = LoadReport.from_records([*records, RequestRecord(2.0, 2.0, None, 0, 429, "full")], 10.0, 0.05)
    assert not LatencyBound("e2e", e2e_s=1.0).met(failed)
    assert LatencyBound("llm", ttft_s=0.5, tpot_s=0.03).describe() == "TTFT p99 <= 500 ms and TPOT p99 <= 30 ms"
    with pytest.raises(ValueError, match="positive seconds"):
        LatencyBound("none")


def test_geometric_rates_climb_from_one_percent_of_saturation():
    rates = geometric_rates(200.0, lowest_fraction=0.01, per_decade=4)
    assert rates[0] == pytest.approx(2.0) and rates[-1] == pytest.approx(200.0) and len(rates) == 9
    assert {round(b / a, 6) for a, b in zip(rates, rates[1:], strict=False)} == {round(10 ** 0.25, 6)}
    with pytest.raises(ValueError, match="lowest_fraction"):
        geometric_rates(200.0, lowest_fraction=1.5)


def test_saturating_client_keeps_requests_outstanding_on_reused_connections(server, monkeypatch):
    opened = []
    connect = asyncio.open_connection

    async def counting(*args, **kwargs):
        opened.append(args)
        return await connect(*args, **kwargs)

    monkeypatch.setattr(loadgen.asyncio, "open_connection", counting)
    report = saturate(server.url, count=12, prompt="again", max_tokens=3, concurrency=3, slo_s=5.0)
    assert report.completed == 12 and report.failed == 0 and math.isinf(report.offered_qps)
    assert len(opened) == 3


def test_a_pooled_connection_the_server_closed_is_retried_on_a_new_one():
    """A server that closes each connection after one answer (without saying so): the next request still succeeds."""
    body = json.dumps({"usage": {"completion_tokens": 2}}).encode()

    async def answer_once(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(len(loadgen.completion_request("h", 1, "p", 2, stream=False).split(b"\r\n\r\n")[1]))
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()

    async def run():
        server = await asyncio.start_server(answer_once, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            records = await loadgen.closed_loop_async(f"http://127.0.0.1:{port}", concurrency=1, count=3,
                                                      prompt="p", max_tokens=2, stream=False)
        return records

    records = asyncio.run(run())
    assert [(record.status, record.tokens, record.error) for record in records] == [(200, 2, "")] * 3
