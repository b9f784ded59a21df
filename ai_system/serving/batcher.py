"""A dynamic batcher for any service whose work is cheaper per item in batches: vector search, embedding, ranking.

Callers ``submit`` items from any thread (or ``await call(...)`` from asyncio); one worker thread
takes the oldest waiting item, waits at most ``max_queue_delay_ms`` from that item's arrival for
more to arrive, and hands up to ``max_batch_size`` of them to ``process`` in one call. Under light
load a request waits at most the delay; under heavy load batches fill at once and the delay never
applies. The queue is bounded: a full queue refuses at once (``QueueFullError``, HTTP 429) rather
than letting latency grow without limit. Each item has a deadline; one that expires while queued
is failed with ``BatchTimeoutError`` (HTTP 504) and never processed.

Unlike the LLM engine (``ai_system.inference.engine``), which schedules KV-cache slots token by
token, a batch here is one call: ``process(items) -> results``, one result per item, in order. A
result that is an exception fails that item alone; ``process`` raising fails the whole batch.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from ai_system.inference.engine import EngineClosedError, QueueFullError

Item = TypeVar("Item")
Result = TypeVar("Result")

__all__ = ["BatchTimeoutError", "BatcherConfig", "DynamicBatcher", "EngineClosedError", "QueueFullError"]


class BatchTimeoutError(TimeoutError):
    """The item was not answered within its timeout (HTTP 504)."""


@dataclass(frozen=True)
class BatcherConfig:
    """How long a batch may wait to fill, how big it may get, and how much waiting work is allowed."""

    max_batch_size: int = 64
    """Items per ``process`` call."""
    max_queue_delay_ms: float = 2.0
    """The longest the oldest waiting item waits for company before its batch runs."""
    max_queue_size: int = 1024
    """Waiting items beyond which ``submit`` refuses (``QueueFullError``)."""
    timeout_s: float = 10.0
    """An item's deadline from its arrival (``BatchTimeoutError`` once passed)."""

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "max_queue_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not self.max_queue_delay_ms >= 0:
            raise ValueError(f"max_queue_delay_ms must be >= 0, got {self.max_queue_delay_ms!r}")
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, got {self.timeout_s!r}")


@dataclass
class _Pending(Generic[Item, Result]):
    item: Item
    arrival: float
    deadline: float
    future: Future[Result] = field(default_factory=Future)


@dataclass
class BatcherStats:
    batches: int = 0
    items: int = 0
    expired: int = 0

    @property
    def mean_batch_size(self) -> float:
        return self.items / self.batches if self.batches else 0.0


class DynamicBatcher(Generic[Item, Result]):
    """Batches items for ``process`` on one worker thread; see the module docstring."""

    def __init__(self, process: Callable[[list[Item]], Sequence[Result | BaseException]],
                 config: BatcherConfig | None = None, name: str = "batcher") -> None:
        self.process = process
        self.config = config or BatcherConfig()
        self.name = name
        self.stats = BatcherStats()
        self._queue: deque[_Pending[Item, Result]] = deque()
        self._condition = threading.Condition()
        self._accepting = False
        self._drain_until = float("inf")
        self._worker: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._accepting

    @property
    def queued(self) -> int:
        return len(self._queue)

    def start(self) -> DynamicBatcher[Item, Result]:
        if self._worker is not None:
            raise RuntimeError(f"{self.name} is already started")
        self._accepting, self._drain_until = True, float("inf")
        self._worker = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._worker.start()
        return self

    def stop(self, drain_timeout_s: float = 5.0) -> None:
        """Refuse new items, answer the queued ones for up to ``drain_timeout_s``, fail the rest."""
        with self._condition:
            self._accepting = False
            self._drain_until = time.monotonic() + drain_timeout_s
            self._condition.notify_all()
        if self._worker is not None:
            self._worker.join()
            self._worker = None

    def submit(self, item: Item, timeout_s: float | None = None) -> Future[Result]:
        """Queue ``item``; its future holds the result. Raises ``QueueFullError`` or ``EngineClosedError`` at once."""
        now = time.monotonic()
        pending: _Pending[Item, Result] = _Pending(item, now, now + (timeout_s or self.config.timeout_s))
        with self._condition:
            if not self._accepting:
                raise EngineClosedError(f"{self.name} is not accepting requests (not started or shutting down)")
            if len(self._queue) >= self.config.max_queue_size:
                raise QueueFullError(f"{self.name} queue is full ({self.config.max_queue_size} waiting)")
            self._queue.append(pending)
            self._condition.notify()
        return pending.future

    async def call(self, item: Item, timeout_s: float | None = None) -> Result:
        """``submit`` from asyncio and await the result; raises ``BatchTimeoutError`` past the timeout."""
        timeout_s = timeout_s or self.config.timeout_s
        future = self.submit(item, timeout_s)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout_s)
        except asyncio.TimeoutError as error:
            future.cancel()
            raise BatchTimeoutError(f"no answer within {timeout_s} s") from error

    def _next_batch(self) -> list[_Pending[Item, Result]] | None:
        """Block until a batch is due (full, or its oldest item has waited the delay); None to exit."""
        delay = self.config.max_queue_delay_ms / 1000
        with self._condition:
            while True:
                if not self._queue:
                    if not self._accepting:
                        return None
                    self._condition.wait()
                    continue
                if not self._accepting and time.monotonic() >= self._drain_until:
                    while self._queue:
                        self._queue.popleft().future.set_exception(
                            EngineClosedError(f"{self.name} stopped before answering"))
                    return None
                due = self._queue[0].arrival + delay - time.monotonic()
                if len(self._queue) >= self.config.max_batch_size or due <= 0 or not self._accepting:
                    count = min(len(self._queue), self.config.max_batch_size)
                    return [self._queue.popleft() for _ in range(count)]
                self._condition.wait(due)

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            now = time.monotonic()
            live = []
            for pending in batch:
                if not pending.future.set_running_or_notify_cancel():
                    continue
                if now > pending.deadline:
                    self.stats.expired += 1
                    pending.future.set_exception(BatchTimeoutError("the request expired in the queue"))
                else:
                    live.append(pending)
            if live:
                self._answer(live)

    def _answer(self, batch: list[_Pending[Item, Result]]) -> None:
        try:
            results = list(self.process([pending.item for pending in batch]))
            if len(results) != len(batch):
                raise RuntimeError(f"{self.name}: process returned {len(results)} results for {len(batch)} items")
        except Exception as error:
            results = [error] * len(batch)
        self.stats.batches += 1
        self.stats.items += len(batch)
        for pending, result in zip(batch, results, strict=True):
            if isinstance(result, BaseException):
                pending.future.set_exception(result)
            else:
                pending.future.set_result(result)
