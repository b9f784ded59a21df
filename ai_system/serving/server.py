"""The HTTP model server: the OpenAI API (``openai_api``) over the dynamic-batching engine.

FastAPI on uvicorn. ``/v1/completions`` and ``/v1/chat/completions`` (streamed as SSE or whole),
``/v1/models``. The model's tokenizer turns the prompt (a chat through ``chat_template``) into ids
and the output back into text (byte-level, so any text is a valid prompt); a stream is decoded
incrementally, so no event holds half a character, and bytes that are not UTF-8 become U+FFFD.

Every failure is an immediate 4xx/5xx in one OpenAI-shaped ``{"error": {...}}`` body and is counted
(``errors``): bad input 400, an unknown model 404, a full queue 429 with ``Retry-After``, a server
that is starting or shutting down 503. ``http_guard`` bounds what one client can hold (body and
header sizes, slow senders) and checks the optional API key. A client that disconnects cancels its
request, which frees its KV-cache slot at the engine's next iteration.

Started by ``ai-system serve``; ``/healthz`` (engine alive), ``/readyz`` (accepting work) and
``/metrics`` (Prometheus text format) are for the orchestrator and need no key.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import torch
import uvicorn
from fastapi import FastAPI
from fastapi import Request as HTTPRequest
from fastapi.responses import JSONResponse, StreamingResponse
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ai_system import ops
from ai_system.cli import number
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
from ai_system.inference.generate import SEED_LIMIT, SamplingParams
from ai_system.models.config import MODEL_CONFIGS, get_config
from ai_system.models.pretrained import inspect_pretrained
from ai_system.serving.errors import APIError, error_body, install_error_handlers
from ai_system.serving.http_guard import HTTPLimits, RequestGuard, uvicorn_options
from ai_system.serving.openai_api import (
    ChatCompletionRequest,
    ChatResponseFormat,
    CompletionRequest,
    ResponseFormat,
    model_card,
    models_list,
    sse,
    usage,
)
from ai_system.serving.prometheus import BATCH_SIZE_BUCKETS, LATENCY_BUCKETS, add_metrics_route, error_counter

API_KEY_ENV = "AISYS_API_KEY"
TOKEN_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)


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
                                    buckets=BATCH_SIZE_BUCKETS, registry=self.registry)
        self.errors = error_counter("aisys_request_errors", self.registry)
        queue = Gauge("aisys_queue_depth", "Requests waiting for a slot", registry=self.registry)
        queue.set_function(lambda: engine.queue_depth)
        active = Gauge("aisys_active_requests", "Requests holding a KV-cache slot", registry=self.registry)
        active.set_function(lambda: engine.active)
        self._recent: deque[tuple[float, int]] = deque()
        self._lock = threading.Lock()

    def count_error(self, kind: str) -> None:
        self.errors.labels(kind=kind).inc()

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



async def _wait_for_disconnect(http_request: HTTPRequest) -> None:
    while (await http_request.receive())["type"] != "http.disconnect":
        pass


def _surrogate_error(error: UnicodeEncodeError, param: str) -> APIError:
    return APIError(400, f"{param} holds a lone UTF-16 surrogate ({error.object[error.start]!r} at character "
                         f"{error.start}), which is not text: send the character itself or a complete "
                         "surrogate pair", param=param)


def create_app(engine: Engine, tokenizer: Tokenizer, model_name: str = "debug", drain_timeout: float = 10.0, *,
               limits: HTTPLimits | None = None, api_key: str | None = None, docs: bool = False) -> FastAPI:
    """The ASGI app. Its lifespan starts the engine (if needed), checks that the tokenizer covers the
    model's vocabulary, and drains the engine on shutdown.

    ``limits`` bound request bodies here and headers and slow connections in the uvicorn options the
    app carries (``app.state.uvicorn_options``, which ``ThreadedServer`` and ``serve`` apply); with
    ``api_key`` every ``/v1/`` route wants ``Authorization: Bearer <api_key>``; ``docs`` serves the
    OpenAPI schema and UI (``/docs``), off by default so a public server does not publish them.
    """
    limits = limits or HTTPLimits()
    metrics = ServingMetrics(engine)
    engine.on_step = metrics.observe_step
    started_at = int(time.time())

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

    app = FastAPI(title="ai-system inference server", lifespan=lifespan, docs_url="/docs" if docs else None,
                  redoc_url=None, openapi_url="/openapi.json" if docs else None)
    relay = EventRelay()
    app.state.engine = engine
    app.state.metrics = metrics
    app.state.uvicorn_options = uvicorn_options(limits, metrics.count_error)
    app.add_middleware(RequestGuard, limits=limits, count=metrics.count_error, api_key=api_key)
    install_error_handlers(app, metrics.count_error)

    @app.get("/healthz")
    @app.get("/health")
    async def healthz() -> JSONResponse:
        """Liveness; also at ``/health``, where vLLM serves it and clients such as GuideLLM look for it."""
        if not engine.running:
            return JSONResponse({"status": "engine not running"}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        if not engine.ready:
            return JSONResponse({"status": "not ready"}, status_code=503)
        return JSONResponse({"status": "ready", "queue_depth": engine.queue_depth, "active": engine.active})

    add_metrics_route(app, metrics.registry)

    @app.get("/v1/models")
    async def list_models() -> JSONResponse:
        return JSONResponse(models_list(model_name, started_at, engine.max_context))

    @app.get("/v1/models/{model_id:path}")
    async def retrieve_model(model_id: str) -> JSONResponse:
        if model_id != model_name:
            raise APIError(404, f"model {model_id!r} is not served here; it serves {model_name!r}",
                           param="model", kind="not_found")
        return JSONResponse(model_card(model_name, started_at, engine.max_context))

    @app.post("/v1/completions", response_model=None)
    async def completions(body: CompletionRequest, http_request: HTTPRequest) -> JSONResponse | StreamingResponse:
        return await _generate(body, body.prompt, "prompt", ResponseFormat, http_request)

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(body: ChatCompletionRequest, http_request: HTTPRequest
                               ) -> JSONResponse | StreamingResponse:
        return await _generate(body, body.prompt, "messages", ChatResponseFormat, http_request)

    async def _generate(body: CompletionRequest | ChatCompletionRequest, prompt_text: str, prompt_param: str,
                        response_format: type[ResponseFormat], http_request: HTTPRequest
                        ) -> JSONResponse | StreamingResponse:
        started = time.perf_counter()
        if body.model is not None and body.model != model_name:
            raise APIError(404, f"model {body.model!r} is not served here; it serves {model_name!r}",
                           param="model", kind="not_found")
        if (unsupported := body.unsupported()) is not None:
            raise APIError(400, unsupported[1], param=unsupported[0])
        events: asyncio.Queue[Event] = asyncio.Queue()
        try:
            prompt = tokenizer.encode(prompt_text)
        except UnicodeEncodeError as error:
            raise _surrogate_error(error, prompt_param) from None
        budget = body.output_budget if body.output_budget is not None else max(1, engine.max_context - len(prompt))
        try:
            params = SamplingParams(max_new_tokens=budget, temperature=body.temperature, top_p=body.top_p,
                                    seed=body.seed, stop_token=None if body.ignore_eos else tokenizer.eos_id)
            request = Request(prompt, params, relay.sink(events))
            engine.submit(request)
        except ValueError as error:
            raise APIError(400, str(error).replace("max_new_tokens", "max_tokens")) from None
        except QueueFullError as error:
            raise APIError(429, f"{error}; retry later", type="overloaded_error", kind="queue_full",
                           headers={"Retry-After": "1"}) from None
        except EngineClosedError as error:
            raise APIError(503, str(error), type="unavailable_error", kind="unavailable") from None
        shape = response_format(request.id, model_name)
        if body.stream:
            return StreamingResponse(_stream(request, events, started, shape, body.include_usage),
                                     media_type="text/event-stream")
        return await _complete(request, events, started, shape, http_request)

    async def _complete(request: Request, events: asyncio.Queue[Event], started: float, shape: ResponseFormat,
                        http_request: HTTPRequest) -> JSONResponse:
        collector = asyncio.ensure_future(_collect(events))
        watcher = asyncio.ensure_future(_wait_for_disconnect(http_request))
        await asyncio.wait({collector, watcher}, return_when=asyncio.FIRST_COMPLETED)
        watcher.cancel()
        if not collector.done():
            collector.cancel()
            engine.cancel(request)
            raise APIError(499, "client closed the connection", type="client_disconnected",
                           kind="client_disconnected")
        final = collector.result()
        if final.kind == "error":
            raise APIError(503, final.reason, type="unavailable_error", kind="engine_error")
        metrics.observe_success(request, started, stream=False)
        return JSONResponse(shape.whole(tokenizer.decode(request.generated), final.reason,
                                        usage(len(request.prompt), len(request.generated))))

    async def _stream(request: Request, events: asyncio.Queue[Event], started: float, shape: ResponseFormat,
                      include_usage: bool) -> AsyncIterator[str]:
        """One SSE event per token; tokens that queued up while the client was slow leave in one write."""
        decoder = tokenizer.stream_decoder()
        finished = False
        try:
            if opening := shape.opening():
                yield opening
            while True:
                batch = [await events.get()]
                while not events.empty():
                    batch.append(events.get_nowait())
                out = "".join(shape.token_event(decoder.feed(event.token)) for event in batch if event.kind == "token")
                last = batch[-1]
                if last.kind == "token":
                    yield out
                    continue
                finished = True
                if last.kind == "error":
                    metrics.count_error("engine_error")
                    yield out + sse(error_body(503, last.reason, "unavailable_error").decode())
                    return
                metrics.observe_success(request, started, stream=True)
                counts = usage(len(request.prompt), len(request.generated)) if include_usage else None
                yield out + shape.closing(decoder.flush(), last.reason, counts)
                return
        finally:
            if not finished:
                engine.cancel(request)
                metrics.count_error("client_disconnected")

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


def torch_device(text: str) -> str:
    """An argparse ``type`` for ``--device``: a torch device name (``cpu``, ``cuda``, ``cuda:1``).

    Only the name is checked when parsed, so a GPU pod's command parses on any machine;
    ``check_device_present`` checks this machine when ``serve`` starts.
    """
    try:
        torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"expected a torch device such as cpu, cuda or cuda:0, got {text!r}") from None
    return text


def check_device_present(text: str) -> None:
    """Raise ``ValueError`` unless this machine has the device, without touching it: ``cuda`` on a
    machine without one would otherwise fail inside the engine with an AssertionError."""
    device = torch.device(text)
    if device.type == "cpu":
        return
    backend = getattr(torch, device.type, None)
    present = backend.device_count() if backend is not None and hasattr(backend, "device_count") \
        and backend.is_available() else 0
    if (device.index or 0) >= present:
        raise ValueError(f"--device: expected a device this machine has, got {text!r} "
                         f"({present} {device.type} device{'' if present == 1 else 's'} here)")


def bind_address(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` before the model loads, so a bad or busy address fails at once.

    It does not listen yet: until uvicorn starts serving on it, connections are refused rather than
    left waiting in the backlog while the model loads.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    return sock


def serve(args: argparse.Namespace) -> int:
    """``ai-system serve``: load the model, start the engine, serve until SIGINT/SIGTERM.

    The checkpoint is inspected, the address bound and the engine started before HTTP serves, so a
    bad checkpoint or address ends the command with its reason (exit 2) instead of a server that
    never becomes ready.
    """
    try:
        check_device_present(args.device)
        api_key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV) or None
        if api_key is not None and not api_key.strip():
            raise ValueError("--api-key must not be empty or blank")
        limits = HTTPLimits(max_body_bytes=args.max_body_bytes, max_header_bytes=args.max_header_bytes,
                            header_timeout_s=args.header_timeout, body_timeout_s=args.body_timeout,
                            keep_alive_s=args.keep_alive_timeout)
        engine_config = EngineConfig(max_batch_size=args.max_batch_size, max_queue_size=args.max_queue_size,
                                     max_queue_delay_ms=args.max_queue_delay_ms, prefill_chunk=args.prefill_chunk,
                                     seed=args.seed)
        spec, tokenizer, model_name = served_model(args)
        sock = bind_address(args.host, args.port)
        engine = build_engine(spec, engine_config, in_process=args.engine == "thread").start()
    except (OSError, RuntimeError, ValueError) as error:
        print(f"ai-system serve: error: {error}", file=sys.stderr)
        return 2
    for op, path in ops.dispatch_table(args.device, torch.float32).items():
        print(f"ai-system serve: {op}: {path}", file=sys.stderr)
    app = create_app(engine, tokenizer, args.served_model_name or model_name, args.drain_timeout, limits=limits,
                     api_key=api_key, docs=args.docs)
    config = uvicorn.Config(app, log_level=args.log_level, access_log=False,
                            timeout_graceful_shutdown=max(1, round(args.drain_timeout)), **app.state.uvicorn_options)
    print(f"ai-system serve: {model_name} on http://{args.host}:{args.port}"
          f"{' (API key required on /v1/)' if api_key else ''}", file=sys.stderr)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("serve", help="serve the transformer over HTTP with dynamic batching",
                                   description=serve.__doc__)
    arg = parser.add_argument
    arg("--checkpoint", default=None,
        help="a model-only checkpoint directory (config.json, model.safetensors, tokenizer)")
    arg("--config", default=None, choices=sorted(MODEL_CONFIGS),
        help="model shape for random weights from --seed (default debug; not with --checkpoint)")
    arg("--served-model-name", default=None,
        help="the model id clients send and /v1/models lists (default: the config or checkpoint directory name)")
    arg("--seed", type=number(int, 0, SEED_LIMIT - 1), default=0)
    arg("--device", type=torch_device, default="cpu", help="torch device for the model, e.g. cpu or cuda")
    arg("--host", default="127.0.0.1",
        help="address to listen on; 0.0.0.0 exposes the server to every network the machine is on (see --api-key)")
    arg("--port", type=number(int, 1, 65535), default=8000)
    arg("--api-key", default=None,
        help=f"require 'Authorization: Bearer KEY' on /v1/ routes (default: ${API_KEY_ENV}, else no auth)")
    arg("--docs", action="store_true", help="serve the OpenAPI schema and UI at /docs (off by default)")
    arg("--max-batch-size", type=number(int, 1, 4096), default=16, help="KV-cache slots = rows per iteration")
    arg("--max-queue-size", type=number(int, 1, 1_000_000), default=256, help="waiting requests before 429")
    arg("--max-queue-delay-ms", type=number(float, 0, 60_000), default=2.0,
        help="how long an idle engine waits to gather a batch")
    arg("--prefill-chunk", type=number(int, 1, 1_000_000), default=64, help="prompt tokens per row per iteration")
    arg("--threads", type=number(int, 1, 1024), default=1, help="torch intra-op threads")
    arg("--engine", choices=("thread", "process"), default="thread",
        help="run the model in a thread of the server (default: fewest busy processes on a "
             "small machine) or a child process (no GIL shared with HTTP; wants a spare core)")
    arg("--drain-timeout", type=number(float, 0, 86_400), default=10.0,
        help="seconds in-flight requests get to finish on shutdown")
    defaults = HTTPLimits()
    arg("--max-body-bytes", type=number(int, 1), default=defaults.max_body_bytes,
        help=f"largest request body (default {defaults.max_body_bytes}); larger ones get 413")
    arg("--max-header-bytes", type=number(int, 1024), default=defaults.max_header_bytes,
        help=f"largest request header section (default {defaults.max_header_bytes}); larger ones get 431")
    arg("--header-timeout", type=number(float, 0, 3600, low_open=True), default=defaults.header_timeout_s,
        help=f"seconds a connection gets to send a request's headers (default {defaults.header_timeout_s:g}); "
             "then 408 and close")
    arg("--body-timeout", type=number(float, 0, 3600, low_open=True), default=defaults.body_timeout_s,
        help=f"seconds a request gets to send its body (default {defaults.body_timeout_s:g}); then 408")
    arg("--keep-alive-timeout", type=number(float, 0, 3600, low_open=True), default=defaults.keep_alive_s,
        help=f"seconds an idle keep-alive connection stays open (default {defaults.keep_alive_s:g})")
    arg("--log-level", default="warning", choices=("critical", "error", "warning", "info", "debug", "trace"))
    parser.set_defaults(func=serve)
