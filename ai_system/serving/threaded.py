"""uvicorn serving an ASGI app on loopback from a background thread: the one way tests, benchmarks and
case studies run a real HTTP server inside their own process."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import uvicorn
from fastapi import FastAPI


class ThreadedServer:
    """uvicorn serving ``app`` on loopback from a background thread.

    Port 0 takes a free port; ``url`` is set once ``start`` returns. ``ready`` lets the caller wait
    for more than the socket, such as an engine that is still loading its model. An app that carries
    connection-level options in ``app.state.uvicorn_options`` (the model server's HTTP limits) runs with them.
    """

    def __init__(self, app: FastAPI, port: int = 0, graceful_timeout_s: float | None = None) -> None:
        options = dict(getattr(app.state, "uvicorn_options", {}))
        if graceful_timeout_s is not None:
            options["timeout_graceful_shutdown"] = max(1, round(graceful_timeout_s))
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                                    access_log=False, **options))
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)
        self.url = ""

    def start(self, timeout_s: float = 30.0, ready: Callable[[], bool] = lambda: True) -> str:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not (self.server.started and ready()):
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"server did not start within {timeout_s} s")
            time.sleep(0.01)
        self.url = f"http://127.0.0.1:{self.server.servers[0].sockets[0].getsockname()[1]}"
        return self.url

    def stop(self, timeout_s: float = 30.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout_s)

    def __enter__(self) -> ThreadedServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
