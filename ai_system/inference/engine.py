"""A dynamic-batching inference engine: bounded queue, batched prefill, continuous decode batching.

The model holds one KV cache whose batch rows are *slots*. Every iteration runs one forward over the
slots up to the last busy one, each row at its own cache positions: rows still reading their prompt
feed a chunk of it (chunked prefill), rows that are generating feed their last token, empty rows
feed padding. A new request takes the lowest free slot at the next iteration, and a finished or
cancelled one frees its slot at once, so a long generation never holds up a short one
(iteration-level scheduling, as in Orca, Yu et al., OSDI 2022; prompt chunks bound the stall a
long prompt adds, as in Sarathi, Agrawal et al., 2023).

Padding never corrupts a slot: padded tokens write to the cache's last position, a scratch slot no
request may reach (prompt + max_new_tokens <= cache length), and every real token writes its own
position before any query can attend to it. Each row tells the model its real length (the cache
slots it has filled once this iteration's tokens are in), so attention reads a row's filled
prefix and never the scratch slot or the unfilled rest, whatever the other rows hold.

New requests are admitted in batches (dynamic batching): once the free slots are all wanted, or the
oldest waiting request has waited ``max_queue_delay_ms``. An idle engine sleeps until then; a busy
one keeps decoding meanwhile, so arrivals a few milliseconds apart share one wide prefill iteration
instead of each widening one, and no running decode ever waits for admission.

Two engines implement the ``Engine`` protocol the server is written against: ``EngineThread`` runs
the loop in a thread of the caller's process, ``EngineProcess`` in a child process that it talks
to with the typed messages below (commands down, events up).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Literal, Protocol, runtime_checkable

import torch

from ai_system.inference.generate import SamplingParams, sample_tokens
from ai_system.models.config import get_config
from ai_system.models.pretrained import load_pretrained
from ai_system.models.transformer import Transformer

logger = logging.getLogger(__name__)

MAX_CONSECUTIVE_FAILED_STEPS = 3


class QueueFullError(RuntimeError):
    """The request queue is at ``max_queue_size``: the caller should shed load (HTTP 429)."""


class EngineClosedError(RuntimeError):
    """The engine is stopping or stopped and accepts no new work (HTTP 503)."""


@dataclass(frozen=True)
class EngineConfig:
    """Batching knobs. ``max_batch_size`` is also the number of KV-cache slots."""

    max_batch_size: int = 8
    max_queue_size: int = 64
    max_queue_delay_ms: float = 2.0
    prefill_chunk: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "max_queue_size", "prefill_chunk"):
            if getattr(self, name) < 1:
                raise ValueError(f"EngineConfig.{name} must be at least 1, got {getattr(self, name)}")
        if self.max_queue_delay_ms < 0:
            raise ValueError(f"EngineConfig.max_queue_delay_ms must be >= 0, got {self.max_queue_delay_ms}")


@dataclass(frozen=True)
class Event:
    """What the engine tells a request's owner: a new token, the end, or an error.

    ``reason`` is the finish reason for ``done`` ("length", "stop" or "cancelled") and the message
    for ``error``.
    """

    kind: Literal["token", "done", "error"]
    token: int | None = None
    reason: str = ""


@dataclass(frozen=True)
class StepStats:
    """One engine iteration, for metrics: rows busy, tokens fed, queue left behind, time taken."""

    batch_size: int
    prefill_tokens: int
    decode_tokens: int
    emitted_tokens: int
    queue_depth: int
    seconds: float


_request_ids = itertools.count()


@dataclass(eq=False)
class Request:
    """One generation. The engine calls ``on_event`` from its own thread, so it must not block."""

    prompt: list[int]
    params: SamplingParams
    on_event: Callable[[Event], None]
    id: int = field(default_factory=lambda: next(_request_ids))
    arrival: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    finished_at: float | None = None
    generated: list[int] = field(default_factory=list)
    cancelled: bool = False
    prefilled: int = 0
    generator: torch.Generator | None = field(default=None, repr=False)

    @property
    def next_position(self) -> int:
        """Cache position of the next token fed: prompt tokens first, then all but the newest output."""
        if self.prefilled < len(self.prompt):
            return self.prefilled
        return len(self.prompt) + len(self.generated) - 1


def check_request(prompt: list[int], params: SamplingParams, vocab_size: int, max_context: int) -> None:
    """Raise ValueError if a request can never run on a model of this vocab and context."""
    if not prompt:
        raise ValueError("prompt must hold at least one token, got an empty prompt")
    if not all(isinstance(token, int) and not isinstance(token, bool) for token in prompt):
        wrong = next(token for token in prompt if not isinstance(token, int) or isinstance(token, bool))
        raise ValueError(f"prompt tokens must be integers, got {wrong!r}")
    if not isinstance(params, SamplingParams):
        raise ValueError(f"params must be SamplingParams, got {type(params).__name__}")
    if min(prompt) < 0 or max(prompt) >= vocab_size:
        raise ValueError(f"prompt tokens must lie in [0, {vocab_size}), got min {min(prompt)} "
                         f"and max {max(prompt)}")
    total = len(prompt) + params.max_new_tokens
    if total > max_context:
        raise ValueError(f"prompt length {len(prompt)} + max_new_tokens {params.max_new_tokens} "
                         f"= {total} exceeds the context of {max_context} tokens")


def load_model(config_name: str = "debug", seed: int = 0, checkpoint: str | None = None,
               device: str = "cpu") -> Transformer:
    """The shared transformer from a checkpoint directory (``save_pretrained``'s), or else the named
    config with random weights from ``seed``.

    Random weights produce meaningless text; they are enough to measure the serving system, whose
    cost does not depend on what the weights say.
    """
    if checkpoint is not None:
        return load_pretrained(checkpoint, device)[0]
    model = Transformer(get_config(config_name)).to(device)
    model.init_weights(seed=seed)
    return model.eval()


@runtime_checkable
class Engine(Protocol):
    """What the server needs from an engine; ``EngineThread`` and ``EngineProcess`` both provide it.

    ``submit`` never blocks: it queues the request or raises at once (``ValueError`` for a request
    that can never run, ``QueueFullError``, ``EngineClosedError``). The engine then calls the
    request's ``on_event`` from a thread of its own with every token and one final event.
    """

    on_step: Callable[[StepStats], None] | None

    @property
    def vocab_size(self) -> int: ...

    @property
    def max_context(self) -> int:
        """Longest prompt + max_new_tokens a request may ask for."""
        ...

    @property
    def queue_depth(self) -> int: ...

    @property
    def active(self) -> int: ...

    @property
    def running(self) -> bool:
        """The engine loop is alive (``/healthz``)."""
        ...

    @property
    def ready(self) -> bool:
        """Running and accepting requests: not starting, draining or stopped (``/readyz``)."""
        ...

    def start(self) -> Engine: ...

    def submit(self, request: Request) -> None: ...

    def cancel(self, request: Request) -> None: ...

    def stop(self, drain_timeout: float = 10.0) -> None:
        """Reject queued requests, let running ones finish within ``drain_timeout`` s, abort the rest."""
        ...


class EngineThread:
    """Runs requests on ``model`` from a background thread of this process; ``submit`` never blocks."""

    def __init__(self, model: Transformer, config: EngineConfig | None = None,
                 on_step: Callable[[StepStats], None] | None = None) -> None:
        self.model = model
        self.config = config or EngineConfig()
        self.on_step = on_step
        self.cache_len = model.config.max_seq_len
        self.scratch_position = self.cache_len - 1
        self.device = next(model.parameters()).device
        model.setup_cache(self.config.max_batch_size, self.cache_len)
        self._slots: list[Request | None] = [None] * self.config.max_batch_size
        self._queue: deque[Request] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._abort = False
        self._thread: threading.Thread | None = None
        self._generator = torch.Generator(device=self.device).manual_seed(self.config.seed)
        self._keys = torch.arange(self.cache_len, device=self.device)

    @property
    def vocab_size(self) -> int:
        return self.model.config.vocab_size

    @property
    def max_context(self) -> int:
        return self.cache_len

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def active(self) -> int:
        return sum(slot is not None for slot in self._slots)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def ready(self) -> bool:
        return self.running and not self._closing

    def start(self) -> EngineThread:
        if self._thread is not None:
            raise RuntimeError("engine already started; an EngineThread runs once")
        self._thread = threading.Thread(target=self._run, name="inference-engine", daemon=True)
        self._thread.start()
        return self

    def submit(self, request: Request) -> None:
        """Queue a request or raise at once: ValueError, QueueFullError or EngineClosedError."""
        check_request(request.prompt, request.params, self.vocab_size, self.max_context)
        if request.params.seed is not None:
            request.generator = torch.Generator(device=self.device).manual_seed(request.params.seed)
        with self._cond:
            if self._closing or not self.running:
                raise EngineClosedError("the engine is not accepting requests (not started or shutting down)")
            if len(self._queue) >= self.config.max_queue_size:
                raise QueueFullError(f"request queue is full ({self.config.max_queue_size} waiting)")
            self._queue.append(request)
            self._cond.notify()

    def cancel(self, request: Request) -> None:
        """Drop a request wherever it is; its slot is free at the next iteration."""
        with self._cond:
            request.cancelled = True
            self._cond.notify()

    def stop(self, drain_timeout: float = 10.0) -> None:
        with self._cond:
            self._closing = True
            rejected = list(self._queue)
            self._queue.clear()
            self._cond.notify()
        for request in rejected:
            self._emit(request, Event("error", reason="server shutting down before the request started"))
        if self._thread is None:
            return
        self._thread.join(drain_timeout)
        if self._thread.is_alive():
            with self._cond:
                self._abort = True
                self._cond.notify()
            self._thread.join()

    def _emit(self, request: Request, event: Event) -> None:
        try:
            request.on_event(event)
        except Exception:  # noqa: BLE001 - a broken consumer (closed event loop) must not kill the engine
            request.cancelled = True

    def _finish(self, slot: int, request: Request, event: Event) -> None:
        request.finished_at = time.perf_counter()
        self._slots[slot] = None
        self._emit(request, event)

    def _admit(self) -> bool:
        """Move queued requests into free slots; returns False when the engine should exit."""
        with self._cond:
            while True:
                for request in [r for r in self._queue if r.cancelled]:
                    self._queue.remove(request)
                    self._emit(request, Event("done", reason="cancelled"))
                busy = self.active > 0
                if self._abort or (self._closing and not busy):
                    return False
                if busy or self._queue:
                    break
                self._cond.wait()
            free = [slot for slot, request in enumerate(self._slots) if request is None]
            if not free or not self._queue:
                return True
            deadline = self._queue[0].arrival + self.config.max_queue_delay_ms / 1000
            if busy:
                if len(self._queue) < len(free) and time.perf_counter() < deadline:
                    return True
            else:
                while len(self._queue) < len(free) and not self._closing:
                    remaining = deadline - time.perf_counter()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
            for slot in free:
                if not self._queue:
                    break
                self._slots[slot] = self._queue.popleft()
        return True

    def _run(self) -> None:
        """The engine loop. A failed iteration fails only the requests it ran (``_fail_step``); the loop
        itself stops only after ``MAX_CONSECUTIVE_FAILED_STEPS`` failures in a row, when the model or
        device is broken for everyone, so ``running`` turns false and ``/healthz`` asks for a restart."""
        failed_steps = 0
        try:
            while self._admit():
                for slot, request in enumerate(self._slots):
                    if request is not None and request.cancelled:
                        self._finish(slot, request, Event("done", reason="cancelled"))
                if not self.active:
                    continue
                try:
                    self._step()
                    failed_steps = 0
                except Exception as error:  # noqa: BLE001 - fail this iteration's requests, keep serving the rest
                    failed_steps += 1
                    if failed_steps >= MAX_CONSECUTIVE_FAILED_STEPS:
                        raise
                    self._fail_step(error)
        except Exception as error:  # noqa: BLE001 - report to every waiting client instead of hanging them
            message = f"engine failure: {type(error).__name__}: {error}"
            for slot, request in enumerate(self._slots):
                if request is not None:
                    self._finish(slot, request, Event("error", reason=message))
            with self._cond:
                self._closing = True
                queued = list(self._queue)
                self._queue.clear()
            for request in queued:
                self._emit(request, Event("error", reason=message))
            logger.exception("inference engine stopped after %d failed iterations in a row: %s",
                             MAX_CONSECUTIVE_FAILED_STEPS, message)
            return
        for slot, request in enumerate(self._slots):
            if request is not None:
                self._finish(slot, request, Event("error", reason="server shut down mid-request"))

    def _fail_step(self, error: Exception) -> None:
        """An iteration raised: the requests it ran share its forward, so each gets the error and frees
        its slot; queued requests run next. Their cache rows need no cleanup: a new request writes every
        position before it reads it."""
        message = f"engine iteration failed: {type(error).__name__}: {error}"
        logger.exception("%s; failing the %d requests it ran", message, self.active)
        for slot, request in enumerate(self._slots):
            if request is not None:
                self._finish(slot, request, Event("error", reason=message))

    @torch.inference_mode()
    def _step(self) -> None:
        """One forward over the slots up to the last busy one, then a token for each row past its prompt.

        Requests take the lowest free slots, so under light load the forward covers a few rows, not
        ``max_batch_size`` of them. A row feeding n tokens from position p has length p + n; an empty
        row has length 1 (its padding attends to slot 0 of its own, unused cache row).
        """
        start = time.perf_counter()
        in_use = self._slots[:1 + max(row for row, request in enumerate(self._slots) if request is not None)]
        feeds: list[list[int]] = []
        for request in in_use:
            if request is None:
                feeds.append([])
            elif request.prefilled < len(request.prompt):
                feeds.append(request.prompt[request.prefilled:request.prefilled + self.config.prefill_chunk])
            else:
                feeds.append([request.generated[-1]])
        tokens, positions, mask, lengths = self._batch(in_use, feeds)
        logits = self.model(tokens, positions, mask, lengths)

        emitting: list[int] = []
        prefill_tokens = decode_tokens = 0
        for row, (request, feed) in enumerate(zip(in_use, feeds, strict=True)):
            if request is None:
                continue
            if request.prefilled < len(request.prompt):
                request.prefilled += len(feed)
                prefill_tokens += len(feed)
                if request.prefilled < len(request.prompt):
                    continue
            else:
                decode_tokens += 1
            emitting.append(row)
        if emitting:
            self._sample_and_emit(emitting, logits[emitting, [len(feeds[row]) - 1 for row in emitting]])
        if self.on_step is not None:
            stats = StepStats(batch_size=sum(bool(feed) for feed in feeds), prefill_tokens=prefill_tokens,
                              decode_tokens=decode_tokens, emitted_tokens=len(emitting),
                              queue_depth=len(self._queue), seconds=time.perf_counter() - start)
            try:
                self.on_step(stats)
            except Exception:  # noqa: BLE001 - a broken observer must not fail the requests it watched
                logger.exception("the engine's on_step observer failed")

    def _batch(self, in_use: list[Request | None], feeds: list[list[int]]
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """The forward's inputs (tokens, positions, mask, lengths), built as flat lists and copied once.

        Rows are right-padded to the widest feed; padding sits at the scratch position. A decode-only
        iteration (width 1) needs no mask: each row's length, its position + 1, already hides every
        later cache slot, and the attention kernels then read only the filled prefix.
        """
        width = max(len(feed) for feed in feeds)
        tokens: list[int] = []
        positions: list[int] = []
        lengths: list[int] = []
        for request, feed in zip(in_use, feeds, strict=True):
            first = request.next_position if feed else 0
            padding = width - len(feed)
            tokens += feed + [0] * padding
            positions += [*range(first, first + len(feed)), *[self.scratch_position] * padding]
            lengths.append(first + len(feed) if feed else 1)
        shape = (len(in_use), width)
        token_tensor = torch.tensor(tokens, dtype=torch.long).view(shape).to(self.device)
        position_tensor = torch.tensor(positions, dtype=torch.long).view(shape).to(self.device)
        length_tensor = torch.tensor(lengths, dtype=torch.long).to(self.device)
        mask = None if width == 1 else (self._keys.view(1, 1, -1) <= position_tensor.unsqueeze(-1)).unsqueeze(1)
        return token_tensor, position_tensor, mask, length_tensor

    def _sample_and_emit(self, rows: list[int], logits: torch.Tensor) -> None:
        """Sample the batch with the engine's generator; a request with its own seed re-samples its row.

        An all-greedy batch (the common serving case) takes the argmax directly: ``sample_tokens``
        would build and check per-row settings only to return the same argmax. If sampling the batch
        raises, each row is sampled alone, so only the rows that cannot be sampled fail
        (``SamplingParams`` already refuses the values that would, so this is the last line).
        """
        requests = [self._slots[row] for row in rows]
        next_tokens: list[int | Exception]
        if all(request.params.temperature == 0 for request in requests):
            next_tokens = logits.argmax(dim=-1).tolist()
        else:
            temperature = torch.tensor([r.params.temperature for r in requests])
            top_p = torch.tensor([r.params.top_p for r in requests])
            try:
                next_tokens = sample_tokens(logits, temperature.to(self.device), top_p.to(self.device),
                                            self._generator).tolist()
            except Exception:  # noqa: BLE001 - find the rows at fault instead of failing the batch
                next_tokens = [_sample_row(logits[index:index + 1], request, self._generator)
                               for index, request in enumerate(requests)]
        for index, request in enumerate(requests):
            if request.generator is not None and request.params.temperature > 0:
                next_tokens[index] = _sample_row(logits[index:index + 1], request, request.generator)
        now = time.perf_counter()
        for row, request, token in zip(rows, requests, next_tokens, strict=True):
            if isinstance(token, Exception):
                self._finish(row, request, Event("error", reason=f"sampling failed for this request: "
                                                                 f"{type(token).__name__}: {token}"))
                continue
            if request.first_token_at is None:
                request.first_token_at = now
            request.generated.append(token)
            self._emit(request, Event("token", token=token))
            if token == request.params.stop_token:
                self._finish(row, request, Event("done", reason="stop"))
            elif len(request.generated) >= request.params.max_new_tokens:
                self._finish(row, request, Event("done", reason="length"))


def _sample_row(logits: torch.Tensor, request: Request, generator: torch.Generator) -> int | Exception:
    """One request's next token, or the error sampling it raised."""
    try:
        return int(sample_tokens(logits, request.params.temperature, request.params.top_p, generator))
    except Exception as error:  # noqa: BLE001 - returned to fail this request alone
        return error


@dataclass(frozen=True)
class ModelSpec:
    """What a child process needs to build the model itself (weights never cross the pipe).

    ``checkpoint`` is a ``save_pretrained`` directory; without one, ``config_name`` with random
    weights from ``seed``.
    """

    config_name: str = "debug"
    seed: int = 0
    checkpoint: str | None = None
    device: str = "cpu"
    threads: int = 1


@dataclass(frozen=True)
class SubmitCommand:
    """Parent → child: run this request (the child keeps the parent's request id)."""

    request_id: int
    prompt: list[int]
    params: SamplingParams


@dataclass(frozen=True)
class CancelCommand:
    """Parent → child: drop this request wherever it is."""

    request_id: int


@dataclass(frozen=True)
class StopCommand:
    """Parent → child: drain within ``drain_timeout`` s (``EngineThread.stop``), then exit."""

    drain_timeout: float


EngineCommand = SubmitCommand | CancelCommand | StopCommand


@dataclass(frozen=True)
class ReadyMessage:
    """Child → parent, first: the model is loaded and the engine runs."""

    max_context: int
    vocab_size: int


@dataclass(frozen=True)
class FailedMessage:
    """Child → parent, first: the model could not be loaded; the child exits."""

    reason: str


@dataclass(frozen=True)
class RequestUpdate:
    """One event of one request, with the times the child recorded for it."""

    request_id: int
    event: Event
    first_token_at: float | None
    finished_at: float | None


@dataclass(frozen=True)
class EventsMessage:
    """Child → parent, once per iteration (and when a request ends outside one): the events since the
    last message, the iteration's stats if one ran, and the engine's state after it."""

    updates: list[RequestUpdate]
    stats: StepStats | None
    queue_depth: int
    active: int
    ready: bool


@dataclass(frozen=True)
class CommandRejected:
    """Child → parent: a command the child does not know; it is ignored, the engine keeps running."""

    command: str
    reason: str


EngineMessage = ReadyMessage | FailedMessage | EventsMessage | CommandRejected


class EngineProcess:
    """An ``EngineThread`` in a child process, driven through pipes; the server uses it like any ``Engine``.

    In one process the HTTP event loop and the engine thread share the GIL: every torch call the
    engine makes releases and re-takes it, and each re-take can wait on the event loop, so HTTP work
    slows decoding. A separate process for the model (as vLLM's engine core does) removes that
    coupling. The parent keeps the queue bound (``max_batch_size + max_queue_size`` requests
    outstanding) so a full server still answers at once; the child batches token events and sends
    them once per iteration.
    """

    def __init__(self, spec: ModelSpec, config: EngineConfig | None = None,
                 on_step: Callable[[StepStats], None] | None = None) -> None:
        self.spec = spec
        self.config = config or EngineConfig()
        self.on_step = on_step
        self.max_context = 0
        self.vocab_size = 0
        self.queue_depth = 0
        self.active = 0
        self._requests: dict[int, Request] = {}
        self._lock = threading.Lock()
        self._closing = False
        self._child_ready = False
        self._exited = False
        self._process = None
        self._reader: threading.Thread | None = None
        self._commands: Connection | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._reader is not None and not self._exited \
            and self._process.is_alive()

    @property
    def ready(self) -> bool:
        return self.running and self._child_ready and not self._closing

    def start(self, timeout_s: float = 300.0) -> EngineProcess:
        """Spawn the child, wait until its model is loaded, start reading its events."""
        import multiprocessing

        if self._process is not None:
            raise RuntimeError("engine process already started; an EngineProcess runs once")
        context = multiprocessing.get_context("spawn")
        parent_commands, child_commands = context.Pipe()
        child_events, parent_events = context.Pipe(duplex=False)
        child_config = EngineConfig(max_batch_size=self.config.max_batch_size,
                                    max_queue_size=self.config.max_queue_size + self.config.max_batch_size,
                                    max_queue_delay_ms=self.config.max_queue_delay_ms,
                                    prefill_chunk=self.config.prefill_chunk, seed=self.config.seed)
        self._process = context.Process(target=_engine_child, args=(self.spec, child_config, child_commands,
                                                                    parent_events), daemon=True)
        self._process.start()
        child_commands.close()
        parent_events.close()
        self._commands = parent_commands
        if not child_events.poll(timeout_s):
            self._process.kill()
            raise RuntimeError(f"engine process did not load the model within {timeout_s} s")
        message: EngineMessage = child_events.recv()
        if not isinstance(message, ReadyMessage):
            self._process.join()
            reason = message.reason if isinstance(message, FailedMessage) else f"unexpected message {message!r}"
            raise RuntimeError(f"engine process failed to start: {reason}")
        self.max_context = message.max_context
        self.vocab_size = message.vocab_size
        self._child_ready = True
        self._reader = threading.Thread(target=self._read, args=(child_events,), name="engine-events", daemon=True)
        self._reader.start()
        return self

    def submit(self, request: Request) -> None:
        """Queue a request or raise at once: ValueError, QueueFullError or EngineClosedError."""
        if not self.max_context:
            raise EngineClosedError("the engine process is not started")
        check_request(request.prompt, request.params, self.vocab_size, self.max_context)
        with self._lock:
            if not self.ready:
                raise EngineClosedError("the engine is not accepting requests (not started or shutting down)")
            if len(self._requests) >= self.config.max_batch_size + self.config.max_queue_size:
                raise QueueFullError(f"request queue is full ({self.config.max_queue_size} waiting)")
            self._requests[request.id] = request
            self._commands.send(SubmitCommand(request.id, request.prompt, request.params))

    def cancel(self, request: Request) -> None:
        with self._lock:
            request.cancelled = True
            if request.id in self._requests and self.running:
                self._commands.send(CancelCommand(request.id))

    def stop(self, drain_timeout: float = 10.0) -> None:
        """Same contract as ``EngineThread.stop``; the child drains, then exits."""
        with self._lock:
            self._closing = True
            if self._process is None:
                return
            if self._process.is_alive():
                self._commands.send(StopCommand(drain_timeout))
        self._process.join(drain_timeout + 30)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        if self._reader is not None:
            self._reader.join(30)

    def _read(self, events: Connection) -> None:
        """Deliver the child's events to each request's owner, in order, from this thread."""
        try:
            while True:
                message: EngineMessage = events.recv()
                if isinstance(message, EventsMessage):
                    self._deliver(message)
                else:
                    logger.error("engine process: %s", message)
        except (EOFError, OSError):
            pass
        finally:
            self._child_ready = False
            self._exited = True
            with self._lock:
                orphans = list(self._requests.values())
                self._requests.clear()
            for request in orphans:
                try:
                    request.on_event(Event("error", reason="the engine process exited before the request ended"))
                except Exception:  # noqa: BLE001 - every orphan must hear of it, whatever one consumer does
                    logger.exception("request %d's event consumer failed", request.id)

    def _deliver(self, message: EventsMessage) -> None:
        self.queue_depth, self.active, self._child_ready = message.queue_depth, message.active, message.ready
        for update in message.updates:
            final = update.event.kind != "token"
            with self._lock:
                request = self._requests.pop(update.request_id, None) if final else \
                    self._requests.get(update.request_id)
            if request is None:
                continue
            request.first_token_at = request.first_token_at or update.first_token_at
            request.finished_at = update.finished_at
            if not final:
                request.generated.append(update.event.token)
            try:
                request.on_event(update.event)
            except Exception:  # noqa: BLE001 - a broken consumer must not stop delivery to the others
                logger.exception("request %d's event consumer failed; cancelling it", request.id)
                self.cancel(request)
        if message.stats is not None and self.on_step is not None:
            self.on_step(message.stats)


def _engine_child(spec: ModelSpec, config: EngineConfig, commands: Connection, events: Connection) -> None:
    """Child process: build the model and engine, then serve commands until told to stop."""
    torch.set_num_threads(spec.threads)
    try:
        model = load_model(spec.config_name, seed=spec.seed, checkpoint=spec.checkpoint, device=spec.device)
    except Exception as error:  # noqa: BLE001 - the parent reports why the child could not start
        events.send(FailedMessage(f"{type(error).__name__}: {error}"))
        return
    send_lock = threading.Lock()
    pending: list[RequestUpdate] = []

    def flush(stats: StepStats | None = None) -> None:
        with send_lock:
            updates = pending[:]
            pending.clear()
            events.send(EventsMessage(updates, stats, engine.queue_depth, engine.active, engine.ready))

    def sink(request: Request) -> Callable[[Event], None]:
        def on_event(event: Event) -> None:
            with send_lock:
                pending.append(RequestUpdate(request.id, event, request.first_token_at, request.finished_at))
            if event.kind != "token":
                requests.pop(request.id, None)
                flush()
        return on_event

    requests: dict[int, Request] = {}
    engine = EngineThread(model, config, on_step=flush)
    engine.start()
    events.send(ReadyMessage(engine.max_context, engine.vocab_size))
    while True:
        if not commands.poll(0.1):
            if not engine.running:
                flush()
                return
            continue
        try:
            command = commands.recv()
        except EOFError:
            command = StopCommand(0.0)
        if isinstance(command, SubmitCommand):
            request = Request(command.prompt, command.params, lambda event: None, id=command.request_id)
            request.on_event = sink(request)
            requests[command.request_id] = request
            try:
                engine.submit(request)
            except Exception as error:  # noqa: BLE001 - refuse this request, keep serving the others
                request.on_event(Event("error", reason=str(error)))
        elif isinstance(command, CancelCommand):
            request = requests.get(command.request_id)
            if request is not None:
                engine.cancel(request)
        elif isinstance(command, StopCommand):
            engine.stop(command.drain_timeout)
            flush()
            return
        else:
            expected = ", ".join(kind.__name__ for kind in EngineCommand.__args__)
            events.send(CommandRejected(repr(command)[:200], f"unknown command; expected one of {expected}"))
