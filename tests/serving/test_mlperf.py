"""The MLPerf LoadGen driver: LoadGen's summary parsed, real Offline runs on the engine, rejections loud."""

from __future__ import annotations

import pytest

from ai_system.inference.engine import EngineConfig, EngineThread, load_model
from ai_system.serving.mlperf import parse_mlperf_summary, run_mlperf

SUMMARY = """================================================
MLPerf Results Summary
================================================
Scenario : Server
Completed samples per second    : 105.87
Result is : VALID
99.00 percentile latency (ns)   : 43075529
"""


def test_parse_mlperf_summary():
    result = parse_mlperf_summary("Server", SUMMARY)
    assert result.valid and result.samples_per_second == 105.87 and result.latency_p99_ns == 43075529
    with pytest.raises(ValueError, match="not a LoadGen summary"):
        parse_mlperf_summary("Server", "nothing here")


def test_mlperf_offline_run_on_the_engine(tmp_path):
    engine = EngineThread(load_model("debug"), EngineConfig(max_batch_size=8, max_queue_size=4096)).start()
    try:
        result = run_mlperf(engine, "Offline", list(b"prompt"), max_tokens=2, target_qps=20.0,
                            min_duration_s=0.2, min_query_count=16, output_dir=str(tmp_path))
    finally:
        engine.stop()
    assert result.scenario == "Offline" and result.samples_per_second > 0
    assert (tmp_path / "mlperf_log_detail.txt").exists()
    with pytest.raises(ValueError, match="scenario"):
        run_mlperf(engine, "SingleStream", [1], 1, 1.0)


def test_mlperf_samples_the_engine_rejects_end_the_run_with_an_error(tmp_path):
    """A queue too small for the scenario: LoadGen still hears of every sample, then the run fails loudly."""
    engine = EngineThread(load_model("debug"), EngineConfig(max_batch_size=2, max_queue_size=4)).start()
    try:
        with pytest.raises(RuntimeError, match="rejected"):
            run_mlperf(engine, "Offline", list(b"prompt"), max_tokens=2, target_qps=20.0,
                       min_duration_s=0.2, min_query_count=64, output_dir=str(tmp_path))
    finally:
        engine.stop()


TOKEN_SUMMARY = SUMMARY + """99.00 percentile first token latency (ns)   : 9000000
99.00 percentile time to output token (ns)   : 2000000
"""


def test_parse_token_latencies():
    result = parse_mlperf_summary("Server", TOKEN_SUMMARY)
    assert result.ttft_p99_ns == 9e6 and result.tpot_p99_ns == 2e6
    assert parse_mlperf_summary("Server", SUMMARY).ttft_p99_ns is None


def test_mlperf_server_run_judged_on_token_latencies(tmp_path):
    """LoadGen hears of each query's first token and token count, and judges TTFT and TPOT."""
    engine = EngineThread(load_model("debug"), EngineConfig(max_batch_size=8, max_queue_size=4096)).start()
    try:
        result = run_mlperf(engine, "Server", list(b"prompt"), max_tokens=4, target_qps=20.0, min_duration_s=0.5,
                            min_query_count=16, output_dir=str(tmp_path), token_bounds_s=(10.0, 10.0))
    finally:
        engine.stop()
    assert result.ttft_p99_ns is not None and 0 < result.ttft_p99_ns <= result.latency_p99_ns
    assert result.tpot_p99_ns is not None and result.tpot_p99_ns > 0
    assert "TTFT Early Stopping Result" in result.summary
    with pytest.raises(ValueError, match="token_bounds_s"):
        run_mlperf(engine, "Offline", [1], 1, 1.0, token_bounds_s=(1.0, 1.0))
