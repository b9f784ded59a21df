"""A real server on a loopback port (uvicorn in a thread) and a model that is slow on purpose.

A fixed delay per forward makes generations last long enough to disconnect, fill the queue or
shut down mid-request without depending on how fast this machine is. The fixtures here are shared by
``tests/serving`` and ``tests/faults`` (each conftest imports them).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import torch
import uvicorn

from ai_system.data.tokenizer import ByteTokenizer
from ai_system.inference.engine import EngineConfig, EngineThread, Event, Request, load_model
from ai_system.serving.server import create_app
from ai_system.serving.threaded import ThreadedServer


def slow_down(model: torch.nn.Module, seconds: float) -> torch.nn.Module:
    forward = model.forward

    def slow_forward(*args: object, **kwargs: object) -> torch.Tensor:
        time.sleep(seconds)
        return forward(*args, **kwargs)

    model.forward = slow_forward
    return model


def break_model(model: torch.nn.Module, message: str, calls: set[int] | None = None) -> torch.nn.Module:
    """Make ``model``'s forward raise ``RuntimeError(message)`` on the given 1-based calls (all if None)."""
    forward, count = model.forward, {"calls": 0}

    def broken_forward(*args: object, **kwargs: object) -> torch.Tensor:
        count["calls"] += 1
        if calls is None or count["calls"] in calls:
            raise RuntimeError(message)
        return forward(*args, **kwargs)

    model.forward = broken_forward
    return model


class Recorder:
    """Collects a request's events and signals when it ends (an ``on_event`` for tests)."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.ended = threading.Event()

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        if event.kind != "token":
            self.ended.set()

    @property
    def final(self) -> Event:
        assert self.ended.wait(30), "request did not end within 30 s"
        return self.events[-1]


def metric_samples(url: str) -> dict[str, float]:
    """Every sample of the server's /metrics, by name with its labels (``name{label="value"}``)."""
    samples = {}
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        name, _, value = line.rpartition(" ")
        if name and not line.startswith("#"):
            samples[name] = float(value)
    return samples


@dataclass
class RunningServer:
    url: str
    engine: EngineThread
    server: uvicorn.Server
    thread: threading.Thread

    def client(self, timeout: float = 30) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)

    def metric(self, name: str) -> float:
        """The value of one sample line of /metrics (``name`` includes any labels)."""
        return metric_samples(self.url).get(name, 0.0)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@contextmanager
def running_server(engine_config: EngineConfig, step_delay_s: float = 0.0, drain_timeout: float = 5.0,
                   **app_options: Any) -> Iterator[RunningServer]:
    """``create_app``'s server on a free loopback port; ``app_options`` are its keywords (limits, api_key, docs)."""
    model = load_model("debug", seed=0)
    if step_delay_s:
        slow_down(model, step_delay_s)
    engine = EngineThread(model, engine_config)
    app = create_app(engine, ByteTokenizer(), "debug", drain_timeout=drain_timeout, **app_options)
    http = ThreadedServer(app, graceful_timeout_s=drain_timeout)
    url = http.start(ready=lambda: engine.ready)
    running = RunningServer(url, engine, http.server, http.thread)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def make_recorder() -> type[Recorder]:
    """``make_recorder()`` makes an ``on_event`` that keeps the events; ``.final`` waits for the last."""
    return Recorder


@pytest.fixture
def slow() -> Callable[[torch.nn.Module, float], torch.nn.Module]:
    """``slow(model, seconds)``: delay every forward of ``model`` by ``seconds``."""
    return slow_down


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with running_server(EngineConfig(max_batch_size=4, max_queue_size=64)) as running:
        yield running


@pytest.fixture
def slow_server_factory() -> Iterator[Callable[..., RunningServer]]:
    """Servers whose every engine iteration takes at least 10 ms; stopped after the test.

    ``app_options`` go to ``create_app``; the other keywords to ``EngineConfig``.
    """
    stack: list = []

    def start(app_options: dict[str, Any] | None = None, **engine_kwargs: object) -> RunningServer:
        context = running_server(EngineConfig(**engine_kwargs), step_delay_s=0.01, **(app_options or {}))
        stack.append(context)
        return context.__enter__()

    yield start
    for context in reversed(stack):
        context.__exit__(None, None, None)


@pytest.fixture
def engine_factory(slow):
    """``engine_factory(step_delay_s=0, **EngineConfig)``: started debug-model engines, stopped after the test."""
    engines: list[EngineThread] = []

    def make(step_delay_s: float = 0.0, **config: object) -> EngineThread:
        model = load_model("debug", seed=0)
        if step_delay_s:
            slow(model, step_delay_s)
        engine = EngineThread(model, EngineConfig(**config)).start()
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.stop(drain_timeout=0)


def wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        time.sleep(0.01)


def wait_until_generating(request: Request) -> None:
    wait_for(lambda: bool(request.generated), timeout_s=30)


def sse_chunks(response: httpx.Response) -> list[dict | str]:
    return [line[6:] if line == "data: [DONE]" else json.loads(line[6:])
            for line in response.iter_lines() if line.startswith("data: ")]
