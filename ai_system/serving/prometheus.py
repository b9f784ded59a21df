"""Prometheus pieces the model server and the search server share: histogram buckets, the error counter
with every kind pre-labelled (a rate over a kind that never happened reads 0, not absent) and the
``/metrics`` route. Each server keeps its series in its own registry so several can share a process."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

from ai_system.serving.errors import ERROR_KINDS

LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


def error_counter(name: str, registry: CollectorRegistry) -> Counter:
    """``<name>_total{kind}``, one series per kind in ``ERROR_KINDS`` from the start."""
    errors = Counter(name, "Failed requests by kind", ["kind"], registry=registry)
    for kind in ERROR_KINDS:
        errors.labels(kind=kind)
    return errors


def add_metrics_route(app: FastAPI, registry: CollectorRegistry) -> None:
    """``GET /metrics``: ``registry`` in the Prometheus text format."""

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
