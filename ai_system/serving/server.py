"""The HTTP model server: OpenAI-style ``/v1/completions`` over the dynamic-batching engine.

FastAPI on uvicorn. The model's tokenizer turns the prompt into ids and the output back into text
(byte-level, so any text is a valid prompt); a stream is decoded incrementally, so no event holds
half a character, and bytes that are not UTF-8 become U+FFFD. Every failure is an
immediate 4xx/5xx with an OpenAI-shaped ``{"error": {...}}`` body: bad input 400, a full queue 429,
a server that is starting or shutting down 503. A client that disconnects cancels its request, which
frees its KV-cache slot at the engine's next iteration.

Started by ``ai-system serve``; ``/healthz`` (process alive), ``/readyz`` (accepting work) and
``/metrics`` (Prometheus text format) are for the orchestrator.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import torch
import uvicorn
from fastapi import FastAPI
from fastapi import Request as HTTPRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field

from ai_system import ops
from ai_system.data.tokenizer import Tokenizer, tokenizer_for_vocab
from ai_system.inference.engine import (
    Engine,
    EngineClosedError,
    EngineConfig,
    EngineProcess,
    EngineThread,
    Event,
    ModelSpec,
    QueueFullError,
    Request,
    StepStats,
    load_model,
)
from ai_system.inference.generate import SamplingParams
from ai_system.models.config import MODEL_CONFIGS, get_config
from ai_system.models.pretrained import inspect_pretrained

LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
TOKEN_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)


class CompletionRequest(BaseModel):
    """The subset of OpenAI's completions request this server honours; other fields are ignored."""

    model_config = ConfigDict(strict=True, extra="ignore", allow_inf_nan=False)

    prompt: str
    max_tokens: int = 16
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = Field(default=None, ge=0, lt=2**63)
    stream: bool = False
    model: str | None = None


class ServingMetrics:
    """Prometheus series for one server, in its own registry so several servers can share a process."""

    def __init__(self, engine: Engine) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram("aisys_request_latency_seconds", "End-to-end latency of successful requests",
                                 ["stream"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.ttft = Histogram("aisys_time_to_first_token_seconds", "Arrival to first generated token",
                              buckets=LATENCY_BUCKETS, registry=self.registry)
        self.tpot = Histogram("aisys_time_per_output_token_seconds", "Mean gap between a request's tokens",
                              buckets=TOKEN_BUCKETS, registry=self.registry)
        self.tokens = Counter("aisys_generated_tokens", "Tokens generated", registry=self.registry)
        self.tokens_per_second = Gauge("aisys_tokens_per_second", "Tokens generated over the last second",
                                       registry=self.registry)
        self.batch_size = Histogram("aisys_batch_size", "Busy KV-cache slots per engine iteration",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=self.registry)
        self.errors = Counter("aisys_request_errors", "Failed requests by kind", ["kind"],
                              registry=self.registry)
        queue = Gauge("aisys_queue_depth", "Requests waiting for a slot", registry=self.registry)
        queue.set_function(lambda: engine.queue_depth)
        active = Gauge("aisys_active_requests", "Requests holding a KV-cache slot", registry=self.registry)
        active.set_function(lambda: engine.active)
        self._recent: deque[tuple[float, int]] = deque()
        self._lock = threading.Lock()

    def observe_step(self, step: StepStats) -> None:
        self.batch_size.observe(step.batch_size)
        now = time.perf_counter()
        with self._lock:
            self._recent.append((now, step.emitted_tokens))
            while self._recent[0][0] < now - 1.0:
                self._recent.popleft()
            self.tokens_per_second.set(sum(count for _, count in self._recent))

    def observe_success(self, request: Request, started: float, stream: bool) -> None:
        finished = request.finished_at or time.perf_counter()
        self.latency.labels(stream=str(stream).lower()).observe(time.perf_counter() - started)
        if request.first_token_at is not None:
            self.ttft.observe(request.first_token_at - request.arrival)
            if len(request.generated) > 1:
                self.tpot.observe((finished - request.first_token_at) / (len(request.generated) - 1))
        self.tokens.inc(len(request.generated))


class EventRelay:
    """Hands engine events to the event loop with one wakeup per burst, not one per token.

    The engine emits a token for every busy row back to back each iteration (the process engine
    delivers a whole iteration at once). A ``call_soon_threadsafe`` per token would wake the loop
    and schedule a callback per token; here the first event of a burst schedules one drain and
    the rest only join the list it empties.
    """

    def __init__(self) -> None:
        self._pending: list[tuple[asyncio.Queue[Event], Event]] = []
        self._scheduled = False
        self._lock = threading.Lock()

    def sink(self, events: asyncio.Queue[Event]) -> Callable[[Event], None]:
        """An ``on_event`` for a request created on the running loop: it puts each event on ``events``."""
        loop = asyncio.get_running_loop()

        def on_event(event: Event) -> None:
            with self._lock:
                self._pending.append((events, event))
                if self._scheduled:
                    return
                self._scheduled = True
            loop.call_soon_threadsafe(self._drain)

        return on_event

    def _drain(self) -> None:
        with self._lock:
            pending, self._pending, self._scheduled = self._pending, [], False
        for events, event in pending:
            events.put_nowait(event)


def error_response(status: int, kind: str, message: str, param: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": status}},
                        status_code=status, headers=headers)


def _completion_body(request: Request, model_name: str, text: str, finish_reason: str | None
                     ) -> dict[str, Any]:
    return {"id": f"cmpl-{request.id}", "object": "text_completion", "created": int(time.time()),
            "model": model_name,
            "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}]}


async def _wait_for_disconnect(http_request: HTTPRequest) -> None:
    while (await http_request.receive())["type"] != "http.disconnect":
        pass


def create_app(engine: Engine, tokenizer: Tokenizer, model_name: str = "debug",
               drain_timeout: float = 10.0) -> FastAPI:
    """The ASGI app. Its lifespan starts the engine (if needed), checks that the tokenizer covers the
    model's vocabulary, and drains the engine on shutdown."""
    metrics = ServingMetrics(engine)
    engine.on_step = metrics.observe_step

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if not engine.running:
            await asyncio.to_thread(engine.start)
        if engine.vocab_size != tokenizer.vocab_size:
            await asyncio.to_thread(engine.stop, 0.0)
            raise ValueError(f"the {tokenizer.kind} tokenizer's vocabulary ({tokenizer.vocab_size}) differs from "
                             f"the model's ({engine.vocab_size})")
        yield
        await asyncio.to_thread(engine.stop, drain_timeout)

    app = FastAPI(title="ai-system inference server", lifespan=lifespan)
    relay = EventRelay()
    app.state.engine = engine
    app.state.metrics = metrics

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: HTTPRequest, error: RequestValidationError) -> JSONResponse:
        metrics.errors.labels(kind="invalid_request").inc()
        issues = error.errors()
        if issues and issues[0]["type"] == "json_invalid":
            return error_response(400, "invalid_request_error",
                                  f"malformed JSON body near character {issues[0]['loc'][-1]}")
        fields = [".".join(str(part) for part in issue["loc"] if part != "body") for issue in issues]
        problems = "; ".join(f"{name or 'body'}: {issue['msg']}" for name, issue in zip(fields, issues, strict=True))
        hint = "" if all(fields) else " (send a JSON object with Content-Type: application/json)"
        return error_response(400, "invalid_request_error", f"invalid request: {problems}{hint}",
                              fields[0] if fields and fields[0] else None)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        if not engine.running:
            return JSONResponse({"status": "engine not running"}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        if not engine.ready:
            return JSONResponse({"status": "not ready"}, status_code=503)
        return JSONResponse({"status": "ready", "queue_depth": engine.queue_depth, "active": engine.active})

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/completions", response_model=None)
    async def completions(body: CompletionRequest, http_request: HTTPRequest
                          ) -> JSONResponse | StreamingResponse:
        started = time.perf_counter()
        if body.model is not None and body.model != model_name:
            metrics.errors.labels(kind="invalid_request").inc()
            return error_response(400, "invalid_request_error",
                                  f"model {body.model!r} is not served here; it serves {model_name!r}",
                                  "model")
        events: asyncio.Queue[Event] = asyncio.Queue()
        try:
            prompt = tokenizer.encode(body.prompt)
            params = SamplingParams(max_new_tokens=body.max_tokens, temperature=body.temperature,
                                    top_p=body.top_p, seed=body.seed, stop_token=tokenizer.eos_id)
            request = Request(prompt, params, relay.sink(events))
            engine.submit(request)
        except ValueError as error:
            metrics.errors.labels(kind="invalid_request").inc()
            message = str(error).replace("max_new_tokens", "max_tokens")
            return error_response(400, "invalid_request_error", message)
        except QueueFullError as error:
            metrics.errors.labels(kind="queue_full").inc()
            return error_response(429, "overloaded_error", f"{error}; retry later", headers={"Retry-After": "1"})
        except EngineClosedError as error:
            metrics.errors.labels(kind="unavailable").inc()
            return error_response(503, "unavailable_error", str(error))
        if body.stream:
            return StreamingResponse(_stream(request, events, started), media_type="text/event-stream")
        return await _complete(request, events, started, http_request)

    async def _complete(request: Request, events: asyncio.Queue[Event], started: float,
                        http_request: HTTPRequest) -> JSONResponse:
        collector = asyncio.ensure_future(_collect(events))
        watcher = asyncio.ensure_future(_wait_for_disconnect(http_request))
        await asyncio.wait({collector, watcher}, return_when=asyncio.FIRST_COMPLETED)
        watcher.cancel()
        if not collector.done():
            collector.cancel()
            engine.cancel(request)
            metrics.errors.labels(kind="client_disconnected").inc()
            return error_response(499, "client_disconnected", "client closed the connection")
        final = collector.result()
        if final.kind == "error":
            metrics.errors.labels(kind="engine_error").inc()
            return error_response(503, "unavailable_error", final.reason)
        metrics.observe_success(request, started, stream=False)
        text = tokenizer.decode(request.generated)
        body = _completion_body(request, model_name, text, final.reason)
        body["usage"] = {"prompt_tokens": len(request.prompt), "completion_tokens": len(request.generated),
                         "total_tokens": len(request.prompt) + len(request.generated)}
        return JSONResponse(body)

    async def _stream(request: Request, events: asyncio.Queue[Event], started: float) -> AsyncIterator[str]:
        """One SSE event per token; tokens that queued up while the client was slow leave in one write."""
        decoder = tokenizer.stream_decoder()
        head, tail = json.dumps(_completion_body(request, model_name, "\0", None)).split('"\\u0000"')
        finished = False
        try:
            while True:
                batch = [await events.get()]
                while not events.empty():
                    batch.append(events.get_nowait())
                out = "".join(f"data: {head}{json.dumps(decoder.feed(event.token))}{tail}\n\n"
                              for event in batch if event.kind == "token")
                last = batch[-1]
                if last.kind == "token":
                    yield out
                    continue
                finished = True
                if last.kind == "error":
                    metrics.errors.labels(kind="engine_error").inc()
                    error = {"message": last.reason, "type": "unavailable_error", "param": None, "code": 503}
                    yield f"{out}data: {json.dumps({'error': error})}\n\n"
                    return
                metrics.observe_success(request, started, stream=True)
                final = _completion_body(request, model_name, decoder.flush(), last.reason)
                yield f"{out}data: {json.dumps(final)}\n\ndata: [DONE]\n\n"
                return
        finally:
            if not finished:
                engine.cancel(request)
                metrics.errors.labels(kind="client_disconnected").inc()

    return app


async def _collect(events: asyncio.Queue[Event]) -> Event:
    """Wait for the terminal event (done or error); tokens are read from the request itself."""
    while True:
        event = await events.get()
        if event.kind != "token":
            return event


def build_engine(spec: ModelSpec, engine_config: EngineConfig | None = None, in_process: bool = False) -> Engine:
    """The engine in a thread of this process (``in_process``) or in a child process."""
    if not in_process:
        return EngineProcess(spec, engine_config)
    torch.set_num_threads(spec.threads)
    return EngineThread(load_model(spec.config_name, seed=spec.seed, checkpoint=spec.checkpoint, device=spec.device),
                        engine_config)


def served_model(args: argparse.Namespace) -> tuple[ModelSpec, Tokenizer, str]:
    """What ``serve`` runs: the model to build, its tokenizer and the name it answers to.

    A checkpoint's config, tokenizer and weights header are read here; random weights of a
    large-vocabulary config get the corpus BPE of that size (trained once, then cached).
    """
    if args.checkpoint is not None:
        if args.config is not None:
            raise ValueError(f"--config {args.config} is for random weights; a checkpoint's shape comes from "
                             f"{Path(args.checkpoint) / 'config.json'}")
        info = inspect_pretrained(args.checkpoint)
        spec = ModelSpec(seed=args.seed, checkpoint=args.checkpoint, device=args.device, threads=args.threads)
        return spec, info.tokenizer, Path(args.checkpoint).resolve().name
    config_name = args.config or "debug"
    spec = ModelSpec(config_name, args.seed, None, args.device, args.threads)
    return spec, tokenizer_for_vocab(get_config(config_name).vocab_size), config_name


def serve(args: argparse.Namespace) -> int:
    """``ai-system serve``: load the model, start the engine, serve until SIGINT/SIGTERM.

    The engine starts before HTTP does, so a checkpoint that does not load ends the command with
    its reason (exit 2) instead of a server that never becomes ready.
    """
    try:
        engine_config = EngineConfig(max_batch_size=args.max_batch_size, max_queue_size=args.max_queue_size,
                                     max_queue_delay_ms=args.max_queue_delay_ms, prefill_chunk=args.prefill_chunk,
                                     seed=args.seed)
        spec, tokenizer, model_name = served_model(args)
        engine = build_engine(spec, engine_config, in_process=args.engine == "thread").start()
    except (OSError, RuntimeError, ValueError) as error:
        print(f"ai-system serve: {error}", file=sys.stderr)
        return 2
    for op, path in ops.dispatch_table(args.device, torch.float32).items():
        print(f"ai-system serve: {op}: {path}", file=sys.stderr)
    app = create_app(engine, tokenizer, model_name, args.drain_timeout)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False,
                timeout_graceful_shutdown=max(1, round(args.drain_timeout)))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("serve", help="serve the transformer over HTTP with dynamic batching",
                                   description=serve.__doc__)
    parser.add_argument("--checkpoint", default=None,
                        help="a model-only checkpoint directory (config.json, model.safetensors, tokenizer)")
    parser.add_argument("--config", default=None, choices=sorted(MODEL_CONFIGS),
                        help="model shape for random weights from --seed (default debug; not with --checkpoint)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="torch device for the model, e.g. cpu or cuda")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-batch-size", type=int, default=16, help="KV-cache slots = rows per iteration")
    parser.add_argument("--max-queue-size", type=int, default=256, help="waiting requests before 429")
    parser.add_argument("--max-queue-delay-ms", type=float, default=2.0,
                        help="how long an idle engine waits to gather a batch")
    parser.add_argument("--prefill-chunk", type=int, default=64, help="prompt tokens per row per iteration")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--engine", choices=("thread", "process"), default="thread",
                        help="run the model in a thread of the server (default: fewest busy processes on a "
                             "small machine) or a child process (no GIL shared with HTTP; wants a spare core)")
    parser.add_argument("--drain-timeout", type=float, default=10.0,
                        help="seconds in-flight requests get to finish on shutdown")
    parser.add_argument("--log-level", default="warning")
    parser.set_defaults(func=serve)
