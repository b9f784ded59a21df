"""The generic dynamic batcher: batches by size and delay, sheds load when full, times out, drains on stop."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from ai_system.serving.batcher import (
    BatcherConfig,
    BatchTimeoutError,
    DynamicBatcher,
    EngineClosedError,
    QueueFullError,
)


class Recording:
    """A process function that records its batches and can be held until released."""

    def __init__(self, hold: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.release = threading.Event()
        if not hold:
            self.release.set()

    def __call__(self, items: list[int]) -> list[int | BaseException]:
        self.release.wait(10)
        self.batches.append(list(items))
        return [ValueError(f"bad {i}") if i < 0 else i * 10 for i in items]


def test_items_arriving_together_share_one_batch():
    process = Recording()
    batcher = DynamicBatcher(process, BatcherConfig(max_batch_size=8, max_queue_delay_ms=200)).start()
    futures = [batcher.submit(i) for i in range(5)]
    assert [f.result(5) for f in futures] == [0, 10, 20, 30, 40]
    batcher.stop()
    assert process.batches == [[0, 1, 2, 3, 4]]
    assert batcher.stats.mean_batch_size == 5


def test_a_full_batch_goes_at_once_and_the_rest_waits_for_the_next():
    process = Recording()
    batcher = DynamicBatcher(process, BatcherConfig(max_batch_size=3, max_queue_delay_ms=10_000)).start()
    started = time.monotonic()
    futures = [batcher.submit(i) for i in range(3)]
    [f.result(5) for f in futures]
    assert time.monotonic() - started < 5, "a full batch must not wait for the delay"
    batcher.stop(drain_timeout_s=5)
    assert process.batches == [[0, 1, 2]]


def test_one_failing_item_fails_alone_and_a_raising_process_fails_its_batch():
    batcher = DynamicBatcher(Recording(), BatcherConfig(max_queue_delay_ms=50)).start()
    good, bad = batcher.submit(1), batcher.submit(-1)
    assert good.result(5) == 10
    with pytest.raises(ValueError, match="bad -1"):
        bad.result(5)
    batcher.stop()

    def broken(items: list[int]) -> list[int]:
        raise RuntimeError("index exploded")

    batcher = DynamicBatcher(broken).start()
    with pytest.raises(RuntimeError, match="index exploded"):
        batcher.submit(1).result(5)
    batcher.stop()


def test_full_queue_refuses_at_once_and_closed_batcher_refuses():
    process = Recording(hold=True)
    batcher = DynamicBatcher(process, BatcherConfig(max_batch_size=1, max_queue_size=2, max_queue_delay_ms=0)).start()
    first = batcher.submit(0)
    deadline = time.monotonic() + 5
    while batcher.queued and time.monotonic() < deadline:
        time.sleep(0.01)
    queued = [batcher.submit(1), batcher.submit(2)]
    with pytest.raises(QueueFullError, match="queue is full"):
        batcher.submit(3)
    process.release.set()
    assert [f.result(5) for f in (first, *queued)] == [0, 10, 20]
    batcher.stop()
    with pytest.raises(EngineClosedError):
        batcher.submit(4)


def test_call_times_out_and_expired_items_are_never_processed():
    process = Recording(hold=True)
    batcher = DynamicBatcher(process, BatcherConfig(max_batch_size=1, max_queue_delay_ms=0)).start()
    blocker = batcher.submit(0)

    async def late() -> int:
        return await batcher.call(1, timeout_s=0.05)

    with pytest.raises(BatchTimeoutError, match="no answer within 0.05 s"):
        asyncio.run(late())
    process.release.set()
    assert blocker.result(5) == 0
    batcher.stop()
    assert process.batches == [[0]]


def test_stop_drains_queued_items_then_fails_what_is_left():
    process = Recording(hold=True)
    batcher = DynamicBatcher(process, BatcherConfig(max_batch_size=1, max_queue_delay_ms=0)).start()
    futures = [batcher.submit(i) for i in range(3)]
    threading.Timer(0.2, process.release.set).start()
    batcher.stop(drain_timeout_s=5)
    assert [f.result(1) for f in futures] == [0, 10, 20]

    process = Recording(hold=True)
    batcher = DynamicBatcher(process, BatcherConfig(max_batch_size=1, max_queue_delay_ms=0)).start()
    futures = [batcher.submit(i) for i in range(3)]
    threading.Timer(0.3, process.release.set).start()
    batcher.stop(drain_timeout_s=0.0)
    with pytest.raises(EngineClosedError, match="stopped before answering"):
        futures[-1].result(5)


@pytest.mark.parametrize(("field", "value"), [("max_batch_size", 0), ("max_queue_size", -1),
                                              ("max_queue_delay_ms", -1.0), ("timeout_s", 0.0)])
def test_bad_config(field, value):
    with pytest.raises(ValueError, match=field):
        BatcherConfig(**{field: value})
