"""The HTTP server, started for real on a loopback port: shapes, bad input, overload, disconnects, shutdown."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading

import httpx
import pytest

from ai_system.data.tokenizer import ByteTokenizer
from ai_system.inference.engine import load_model
from ai_system.inference.generate import SamplingParams, generate
from ai_system.models.pretrained import save_pretrained
from serving.harness import sse_chunks, wait_for


def test_health_and_readiness(server):
    with server.client() as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "ready"


def test_completion_returns_the_models_greedy_tokens(server):
    with server.client() as client:
        response = client.post("/v1/completions", json={"prompt": "hello", "max_tokens": 6})
    assert response.status_code == 200
    body = response.json()
    expected = generate(load_model("debug", seed=0), [list(b"hello")], SamplingParams(max_new_tokens=6))[0]
    assert body["object"] == "text_completion" and body["model"] == "debug"
    assert body["choices"][0]["text"] == bytes(expected).decode("utf-8", errors="replace")
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11}


def test_streaming_sends_one_event_per_token_then_done(server):
    with server.client() as client:
        plain = client.post("/v1/completions", json={"prompt": "héllo", "max_tokens": 7}).json()
        with client.stream("POST", "/v1/completions",
                           json={"prompt": "héllo", "max_tokens": 7, "stream": True}) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            chunks = sse_chunks(response)
    assert chunks[-1] == "[DONE]"
    events = chunks[:-1]
    assert len(events) == 8 and all(e["choices"][0]["finish_reason"] is None for e in events[:7])
    assert events[-1]["choices"][0]["finish_reason"] == "length"
    assert "".join(e["choices"][0]["text"] for e in events) == plain["choices"][0]["text"]


def test_graceful_shutdown_finishes_in_flight_requests(slow_server_factory):
    server = slow_server_factory(max_batch_size=1, max_queue_size=4)
    payload = {"prompt": "finish me", "max_tokens": 50, "stream": True}
    results: list[list] = []
    with server.client() as first, server.client() as second:
        with first.stream("POST", "/v1/completions", json=payload) as a, \
                second.stream("POST", "/v1/completions", json=payload) as b:
            wait_for(lambda: server.engine.queue_depth == 1)
            server.server.should_exit = True
            results = [sse_chunks(a), sse_chunks(b)]
    server.thread.join(30)
    assert not server.thread.is_alive()
    for chunks in results:
        assert chunks[-1] == "[DONE]" and len(chunks) == 52
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/healthz")


def test_metrics_are_prometheus_text(server):
    with server.client() as client:
        client.post("/v1/completions", json={"prompt": "count me", "max_tokens": 3, "stream": True})
        response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    for series in ("aisys_request_latency_seconds_bucket", "aisys_time_to_first_token_seconds_count",
                   "aisys_time_per_output_token_seconds_count", "aisys_generated_tokens_total",
                   "aisys_tokens_per_second", "aisys_queue_depth", "aisys_active_requests",
                   "aisys_batch_size_bucket", "aisys_request_errors_total"):
        assert series in response.text, series


def test_serve_command_serves_a_checkpoint_and_exits_cleanly_on_sigterm(tmp_path):
    """A checkpoint directory, loaded by the engine in a child process behind HTTP. uvicorn drains,
    runs the lifespan shutdown (which stops the child), then re-raises SIGTERM, so -SIGTERM is a
    clean exit."""
    model = load_model("debug", seed=3)
    checkpoint = save_pretrained(tmp_path / "debug-trained", model.config, model.state_dict(), ByteTokenizer())
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "ai_system.cli", "serve", "--checkpoint", str(checkpoint), "--port", str(port),
               "--max-batch-size", "4", "--engine", "process", "--log-level", "info"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            try:
                return httpx.get(f"{url}/readyz").status_code == 200
            except httpx.ConnectError:
                assert process.poll() is None, process.stdout.read().decode()
                return False

        # two interpreters import torch (the server, then its engine's child): over a minute on a busy 2-core machine
        wait_for(ready, timeout_s=180)
        answer = httpx.post(f"{url}/v1/completions", json={"prompt": "hi", "max_tokens": 3}, timeout=30).json()
        assert answer["model"] == "debug-trained"
        expected = generate(model, [list(b"hi")], SamplingParams(max_new_tokens=3))[0]
        assert answer["choices"][0]["text"] == ByteTokenizer().decode(expected)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) in (0, -signal.SIGTERM)
        log = process.stdout.read().decode()
        assert "Application shutdown complete" in log and "Traceback" not in log, log
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_thread_safe_client_load_completes_every_request(server):
    """Many concurrent clients against four slots: nothing is lost, every answer is whole."""
    statuses: list[int] = []
    lock = threading.Lock()

    def call() -> None:
        with server.client() as client:
            response = client.post("/v1/completions", json={"prompt": "load", "max_tokens": 5})
        with lock:
            statuses.append(response.status_code if response.json().get("usage", {}).get(
                "completion_tokens") == 5 else -1)

    threads = [threading.Thread(target=call) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert statuses == [200] * 12
