"""The search server: ``POST /search`` over any index, queries batched by the dynamic batcher.

FastAPI on uvicorn, as the model server. A request carries one or more query vectors and ``k``
(and ``nprobe`` for an IVF index); it is checked in the HTTP handler (dimension, finite values,
``k`` within the index) and only then queued, so a batch never holds a request that could fail it.
The batcher's worker stacks the queued requests into one query matrix, runs one search with the
largest ``k`` and answers each request with its own rows and ``k``. Errors use the model server's
OpenAI-style ``{"error": {...}}`` body: 400 bad input, 409 an empty index, 429 a full queue, 503
shutting down, 504 a request that waited past its timeout.

``GET /metrics`` (Prometheus text format, ``SearchMetrics``) is what the orchestrator scrapes: requests
by status, errors by kind, latency, batch size and the batcher's queue depth, which the autoscaler
scales on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import torch
from fastapi import FastAPI
from fastapi import Request as HTTPRequest
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pydantic import BaseModel, ConfigDict, Field

from ai_system.search.index import Hits, VectorIndex, as_vectors, check_k
from ai_system.search.ivf import IVFIndex
from ai_system.serving.batcher import (
    BatcherConfig,
    BatchTimeoutError,
    DynamicBatcher,
    EngineClosedError,
    QueueFullError,
)
from ai_system.serving.errors import APIError, install_error_handlers
from ai_system.serving.prometheus import BATCH_SIZE_BUCKETS, LATENCY_BUCKETS, add_metrics_route, error_counter

MAX_QUERIES_PER_REQUEST = 1024


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    queries: list[list[float]] = Field(min_length=1, max_length=MAX_QUERIES_PER_REQUEST,
                                       description="query vectors, one per row")
    k: int = Field(10, description="neighbours per query")
    nprobe: int | None = Field(None, description="lists to scan (IVF indexes only; default: the index's)")


@dataclass(frozen=True)
class SearchJob:
    queries: torch.Tensor
    k: int
    nprobe: int | None


class InvalidParameter(ValueError):
    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


def parse_job(body: SearchRequest, index: VectorIndex) -> SearchJob:
    """The request as a job for the batcher, or ``InvalidParameter`` naming the bad field."""
    checks = {"queries": lambda: as_vectors("queries", body.queries, index.dim),
              "k": lambda: check_k(body.k, len(index)),
              "nprobe": lambda: body.nprobe if body.nprobe is None else check_nprobe(index, body.nprobe)}
    values = {}
    for param, check in checks.items():
        try:
            values[param] = check()
        except ValueError as error:
            raise InvalidParameter(param, str(error)) from error
    return SearchJob(**values)


def check_nprobe(index: VectorIndex, nprobe: int) -> int:
    if not isinstance(index, IVFIndex):
        raise ValueError(f"nprobe applies to IVF indexes; this index is {index.kind}")
    return index.check_nprobe(nprobe)


class BatchedSearch:
    """Runs batches of ``SearchJob``s as one search per distinct ``nprobe``; guards the index with a lock."""

    def __init__(self, index: VectorIndex) -> None:
        self.index = index
        self.lock = threading.Lock()

    def search(self, queries: torch.Tensor, k: int, nprobe: int | None) -> Hits:
        with self.lock:
            if isinstance(self.index, IVFIndex):
                return self.index.search(queries, k, nprobe)
            return self.index.search(queries, k)

    def __call__(self, jobs: list[SearchJob]) -> list[Hits]:
        answers: list[Hits | None] = [None] * len(jobs)
        for nprobe in {job.nprobe for job in jobs}:
            members = [i for i, job in enumerate(jobs) if job.nprobe == nprobe]
            hits = self.search(torch.cat([jobs[i].queries for i in members]), max(jobs[i].k for i in members),
                               nprobe)
            start = 0
            for i in members:
                rows = slice(start, start + jobs[i].queries.shape[0])
                answers[i] = Hits(hits.scores[rows, :jobs[i].k], hits.ids[rows, :jobs[i].k])
                start = rows.stop
        return answers  # type: ignore[return-value]


class SearchMetrics:
    """Prometheus series for one search server, in its own registry."""

    def __init__(self, queue_depth: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("aisys_search_requests", "Answered /search requests by HTTP status", ["status"],
                                registry=self.registry)
        self.latency = Histogram("aisys_search_request_latency_seconds", "Arrival to answer of /search requests",
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Histogram("aisys_search_batch_size", "Requests per batched search",
                                    buckets=BATCH_SIZE_BUCKETS, registry=self.registry)
        self.errors = error_counter("aisys_search_request_errors", self.registry)
        queue = Gauge("aisys_search_queue_depth", "Requests waiting in the batcher", registry=self.registry)
        queue.set_function(queue_depth)

    def count_error(self, kind: str) -> None:
        self.errors.labels(kind=kind).inc()

    def observing(self, searcher: BatchedSearch) -> Callable[[list[SearchJob]], list[Hits]]:
        """``searcher`` that records each batch's size."""
        def search(jobs: list[SearchJob]) -> list[Hits]:
            self.batch_size.observe(len(jobs))
            return searcher(jobs)
        return search


def create_app(index: VectorIndex, config: BatcherConfig | None = None, drain_timeout_s: float = 5.0) -> FastAPI:
    """The ASGI app; its lifespan starts and drains the batcher."""
    metrics = SearchMetrics(queue_depth=lambda: batcher.queued)
    batcher: DynamicBatcher[SearchJob, Hits] = DynamicBatcher(metrics.observing(BatchedSearch(index)), config,
                                                              name="search batcher")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        yield
        batcher.stop(drain_timeout_s)

    app = FastAPI(title="ai-system search server", lifespan=lifespan)
    app.state.batcher = batcher
    app.state.index = index

    app.state.metrics = metrics
    install_error_handlers(app, metrics.count_error)
    add_metrics_route(app, metrics.registry)

    @app.middleware("http")
    async def observe_search(request: HTTPRequest, call_next: Callable[[HTTPRequest], Awaitable[Response]]
                             ) -> Response:
        if request.url.path != "/search":
            return await call_next(request)
        started, status = time.perf_counter(), 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            metrics.latency.observe(time.perf_counter() - started)
            metrics.requests.labels(status=str(status)).inc()

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        stats = batcher.stats
        return JSONResponse({"status": "ok" if batcher.running else "stopping", "index": index.kind,
                             "metric": index.metric, "dim": index.dim, "size": len(index),
                             "batches": stats.batches, "mean_batch_size": stats.mean_batch_size},
                            status_code=200 if batcher.running else 503)

    @app.post("/search", response_model=None)
    async def search(body: SearchRequest) -> dict[str, object]:
        if len(index) == 0:
            raise APIError(409, "the index is empty: add vectors before searching", type="index_empty_error")
        try:
            job = parse_job(body, index)
        except InvalidParameter as error:
            raise APIError(400, str(error), param=error.param) from error
        try:
            hits = await batcher.call(job)
        except QueueFullError as error:
            raise APIError(429, f"{error}; retry later", type="overloaded_error", kind="queue_full",
                           headers={"Retry-After": "1"}) from error
        except EngineClosedError as error:
            raise APIError(503, str(error), type="unavailable_error", kind="unavailable") from error
        except BatchTimeoutError as error:
            raise APIError(504, str(error), type="timeout_error", kind="timeout") from error
        return {"ids": hits.ids.tolist(), "scores": hits.scores.tolist(), "k": job.k, "metric": index.metric}

    return app
