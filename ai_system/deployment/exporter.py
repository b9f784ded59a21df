"""The training pod's metrics sidecar: the trainer's JSON-lines log as Prometheus series.

Rank 0 of ``ai-system train`` appends one JSON object per step (and per start, resume, checkpoint,
export, done) to ``--log-file``; this reads what was appended since the last scrape and serves the
newest values on ``/metrics``. The trainer stays free of any HTTP server, and the series exist as
long as the pod does. ``aisys_train_last_progress_timestamp_seconds`` is the wall time at which the
step count last rose (or the sidecar started), which is what the training-stalled alert watches.
Pods other than rank 0's have no log, so they only report their start time.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

EXPORTER_PORT = 9401
STEP_GAUGES = {"loss": ("aisys_train_loss", "Training loss of the last logged step"),
               "tokens_per_s": ("aisys_train_tokens_per_second", "Tokens per second of the last logged step"),
               "samples_per_s": ("aisys_train_samples_per_second", "Samples per second of the last logged step"),
               "mfu": ("aisys_train_mfu_ratio", "Model FLOPs utilization of the last logged step"),
               "step_time_s": ("aisys_train_step_seconds", "Wall time of the last logged step")}


class TrainingLogCollector:
    """Follows one JSON-lines log; a log that shrinks (a new run in the same file) is read from the start."""

    def __init__(self, path: str | Path, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.clock = clock
        self._offset = 0
        self._partial = ""
        self.step: int | None = None
        self.last: dict[str, Any] = {}
        self.progress_at = clock()
        self.starts = 0
        self.done = False

    def _read_new(self) -> None:
        try:
            size = self.path.stat().st_size
            if size < self._offset:
                self._offset, self._partial = 0, ""
            with self.path.open() as handle:
                handle.seek(self._offset)
                text = handle.read()
                self._offset = handle.tell()
        except FileNotFoundError:
            return
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                self._observe(record)

    def _observe(self, record: dict[str, Any]) -> None:
        event = record.get("event")
        if event in ("start", "resume"):
            self.starts += 1
            self.done = False
        elif event == "done":
            self.done = True
        elif event == "step" and isinstance(record.get("step"), int):
            if self.step is None or record["step"] > self.step:
                self.progress_at = self.clock()
            self.step = record["step"]
            self.last = record

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        self._read_new()
        yield GaugeMetricFamily("aisys_train_last_progress_timestamp_seconds",
                                "Unix time at which the logged step last advanced (or the exporter started)",
                                value=self.progress_at)
        yield GaugeMetricFamily("aisys_train_done", "1 once the run logged 'done'", value=float(self.done))
        yield CounterMetricFamily("aisys_train_starts", "Starts and resumes the log records", value=self.starts)
        if self.step is None:
            return
        yield GaugeMetricFamily("aisys_train_step", "Last logged optimizer step", value=self.step)
        for key, (name, documentation) in STEP_GAUGES.items():
            if isinstance(self.last.get(key), int | float):
                yield GaugeMetricFamily(name, documentation, value=float(self.last[key]))


def serve_exporter(collector: TrainingLogCollector, host: str, port: int) -> ThreadingHTTPServer:
    """An HTTP server (not yet serving) with ``/metrics`` and ``/healthz``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.path.split("?")[0] == "/metrics":
                body, kind, status = generate_latest(registry), CONTENT_TYPE_LATEST, 200
            elif self.path == "/healthz":
                body, kind, status = b"ok\n", "text/plain", 200
            else:
                body, kind, status = b"not found; try /metrics\n", "text/plain", 404
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return

    return ThreadingHTTPServer((host, port), Handler)


def run(args: argparse.Namespace) -> int:
    server = serve_exporter(TrainingLogCollector(args.log_file), args.host, args.port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
