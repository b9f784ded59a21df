"""A real server on a loopback port (uvicorn in a thread) and a model that is slow on purpose.

A fixed delay per forward makes generations last long enough to disconnect, fill the queue or
shut down mid-request without depending on how fast this machine is.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import pytest
import torch
import uvicorn

from ai_system.data.tokenizer import ByteTokenizer
from ai_system.inference.engine import EngineConfig, EngineThread, Event, load_model
from ai_system.serving.server import create_app
from ai_system.serving.threaded import ThreadedServer


def slow_down(model: torch.nn.Module, seconds: float) -> torch.nn.Module:
    forward = model.forward

    def slow_forward(*args: object, **kwargs: object) -> torch.Tensor:
        time.sleep(seconds)
        return forward(*args, **kwargs)

    model.forward = slow_forward
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
        text = httpx.get(f"{self.url}/metrics").text
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
        return 0.0

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@contextmanager
def running_server(engine_config: EngineConfig, step_delay_s: float = 0.0,
                   drain_timeout: float = 5.0) -> Iterator[RunningServer]:
    model = load_model("debug", seed=0)
    if step_delay_s:
        slow_down(model, step_delay_s)
    engine = EngineThread(model, engine_config)
    app = create_app(engine, ByteTokenizer(), "debug", drain_timeout=drain_timeout)
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
    """Servers whose every engine iteration takes at least 10 ms; stopped after the test."""
    stack: list = []

    def start(**engine_kwargs: object) -> RunningServer:
        context = running_server(EngineConfig(**engine_kwargs), step_delay_s=0.01)
        stack.append(context)
        return context.__enter__()

    yield start
    for context in reversed(stack):
        context.__exit__(None, None, None)
