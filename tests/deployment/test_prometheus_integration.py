"""Monitoring for real: a Prometheus on loopback scrapes a running model server under load, evaluates
the system's recording rules, and answers the dashboard's queries with data."""

from __future__ import annotations

import shutil
import time

import pytest

from ai_system.architecture import DistributedAISystem
from ai_system.data.tokenizer import ByteTokenizer
from ai_system.deployment.local_prometheus import LocalPrometheus
from ai_system.deployment.monitoring import dashboard, dashboard_queries
from ai_system.deployment.snapshot import plot_dashboard
from ai_system.inference.engine import EngineConfig, EngineThread, load_model
from ai_system.serving.loadgen import open_loop
from ai_system.serving.server import create_app
from ai_system.serving.threaded import ThreadedServer

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("prometheus") is None,
                                 reason="needs the prometheus binary (Debian package 'prometheus'; "
                                        "scripts/system-deps.sh installs it)")]
SYSTEM = DistributedAISystem(training_nodes=0, inference_nodes=1, gpu_per_node=1, training=None, kv_store=None,
                             serving={"model": "debug", "weights": "random"})


def _wait_for(prometheus: LocalPrometheus, expr: str, timeout_s: float = 60.0) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = prometheus.query(expr)
        if result:
            return result
        time.sleep(0.5)
    raise AssertionError(f"no data for {expr!r} within {timeout_s} s; targets: {prometheus.targets()}")


def test_prometheus_scrapes_the_server_and_evaluates_the_rules(tmp_path):
    engine = EngineThread(load_model("debug", seed=0), EngineConfig(max_batch_size=8, max_queue_size=256))
    server = ThreadedServer(create_app(engine, ByteTokenizer(), "debug"))
    url = server.start(ready=lambda: engine.ready)
    try:
        with LocalPrometheus(SYSTEM, {"serving": [url.removeprefix("http://")]}) as prometheus:
            _wait_for(prometheus, 'up{job="serving"} == 1')
            start = time.time()
            for _ in range(3):
                report = open_loop(url, rate=20.0, count=40, prompt="def main():\n", max_tokens=8)
                assert report.failed == 0
            rate = _wait_for(prometheus, "aisys:requests:rate1m > 0")
            p99 = _wait_for(prometheus, "aisys:request_latency_seconds:p99_5m > 0")
            tokens = _wait_for(prometheus, 'sum(rate(aisys_generated_tokens_total{job="serving"}[1m])) > 0')
            assert 0 < float(p99[0]["value"][1]) < 10
            assert float(rate[0]["value"][1]) > 0 and float(tokens[0]["value"][1]) > 0
            assert prometheus.query("aisys:request_errors:ratio_rate5m")[0]["value"][1] == "0"
            answered = {expr: prometheus.query(expr) for expr in dashboard_queries(dashboard(SYSTEM))}
            p99_panel = next(e for e in answered if e.startswith("histogram_quantile(0.99") and "latency" in e)
            assert answered[p99_panel], "the dashboard's p99 latency panel has no data"
            assert answered['sum(aisys_queue_depth{job="serving"})']
            drawn = plot_dashboard(dashboard(SYSTEM), prometheus, start, time.time(), tmp_path / "board.png", "test")
            assert {"Request latency", "Requests per second"} <= set(drawn) and (tmp_path / "board.png").stat().st_size
    finally:
        server.stop()
