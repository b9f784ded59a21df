"""Fault injection for the stores: kill a writer or a server mid-stream, hang a server, count the damage.

Each fault is a function that runs it end to end on real processes and returns what a reader of the
reliability page wants to know: how many *acknowledged* updates were lost, how long recovery took,
how long a call and a health check took while a dependency hung, and whether a retried gradient
update was applied once. The tests assert on these; the benchmarks publish them.

- ``crash_embedded_writer``: a child process streams ``update`` batches into a durable
  ``EmbeddedStore`` and prints each batch number once the call returned; the parent ``SIGKILL``\\ s it,
  reopens the directory and checks every acknowledged batch.
- ``crash_redis_server``: the same stream into ``RedisStore``, and the ``redis-server`` (AOF on) is
  ``SIGKILL``\\ ed instead, then restarted on its data.
- ``hang_redis``: ``SIGSTOP`` on the server while the recommender serves; times the store call and
  ``/healthz``, then ``SIGCONT`` and a retry of a gradient update whose first attempt timed out after
  its write was sent.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import torch

from ai_system.recsys.embedded import EmbeddedStore
from ai_system.recsys.models import TwoTower
from ai_system.recsys.redis_server import RedisServer
from ai_system.recsys.redis_store import RedisStore
from ai_system.recsys.serving import Recommender, create_app
from ai_system.recsys.store import EmbeddingStore, StoreUnavailableError, rowwise_adagrad
from ai_system.serving.threaded import ThreadedServer

BATCH_ROWS = 50
DIM = 16


def batch(number: int) -> tuple[np.ndarray, np.ndarray]:
    """Batch ``number`` of the stream: its own 50 ids, every value ``number + 1`` (never the zero row)."""
    ids = np.arange(number * BATCH_ROWS, (number + 1) * BATCH_ROWS, dtype=np.int64)
    return ids, np.full((BATCH_ROWS, DIM), float(number + 1), dtype=np.float32)


def lost_batches(store: EmbeddingStore, acknowledged: list[int]) -> int:
    """How many acknowledged batches are not in ``store`` exactly as written."""
    if not acknowledged:
        return 0
    ids = np.concatenate([batch(number)[0] for number in acknowledged])
    rows = store.get(ids, create=False).numpy().reshape(len(acknowledged), BATCH_ROWS, DIM)
    expected = np.asarray(acknowledged, dtype=np.float32)[:, None, None] + 1
    return int((rows != expected).any(axis=(1, 2)).sum())


def torn_rows(store: EmbeddingStore, number: int) -> int:
    """Rows of batch ``number`` (one that was in flight at the kill) that are neither absent nor whole."""
    rows = store.get(batch(number)[0], create=False).numpy()
    return int((~((rows == 0).all(axis=1) | (rows == number + 1).all(axis=1))).sum())


@dataclass(frozen=True)
class CrashOutcome:
    """A kill mid-stream: batches acknowledged before it, how many of them were lost, rows of the next
    (unacknowledged) batch found half written, and the time the restarted store took to take calls
    again (embedded: reopen and replay; Redis: start and load the AOF)."""

    acknowledged: int
    lost: int
    torn: int
    recovery_s: float


def crash_embedded_writer(directory: Path, fsync: str, kill_after: int = 200,
                          compact_bytes: int = 1 << 20, timeout_s: float = 60.0) -> CrashOutcome:
    """``SIGKILL`` a process writing to a durable ``EmbeddedStore`` after ``kill_after`` acknowledgements
    (it keeps writing until the signal lands), then reopen the directory and count losses."""
    command = [sys.executable, "-m", "ai_system.recsys.faults", "write-embedded", str(directory), fsync,
               str(compact_bytes)]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    acknowledged: list[int] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(acknowledged) < kill_after:
            line = child.stdout.readline()
            if not line or time.monotonic() > deadline:
                raise RuntimeError(f"the writer stopped after {len(acknowledged)} acknowledgements "
                                   f"(exit code {child.poll()})")
            acknowledged.append(int(line))
        child.send_signal(signal.SIGKILL)
        acknowledged += [int(line) for line in child.stdout.read().split()]
    finally:
        child.kill()
        child.wait()
    start = time.perf_counter()
    store = EmbeddedStore(DIM, path=directory, fsync=fsync, compact_bytes=compact_bytes)
    recovery = time.perf_counter() - start
    try:
        return CrashOutcome(len(acknowledged), lost_batches(store, acknowledged),
                            torn_rows(store, max(acknowledged) + 1), recovery)
    finally:
        store.close()


def write_embedded(directory: str, fsync: str, compact_bytes: str) -> None:
    """The child of ``crash_embedded_writer``: acknowledge each batch on stdout once ``update`` returned."""
    store = EmbeddedStore(DIM, path=directory, fsync=fsync, compact_bytes=int(compact_bytes))
    for number in range(10**9):
        store.update(*batch(number))
        print(number, flush=True)


def stream_until(store: RedisStore, acknowledged: list[int], failures: list[BaseException]) -> None:
    """Write batches until the store fails; ``acknowledged`` grows after each call returns."""
    for number in range(10**9):
        try:
            store.update(*batch(number))
        except StoreUnavailableError as error:
            failures.append(error)
            return
        acknowledged.append(number)


def crash_redis_server(directory: Path, appendfsync: str, kill_after: int = 200,
                       timeout_s: float = 60.0) -> tuple[CrashOutcome, str]:
    """``SIGKILL`` a ``redis-server`` (AOF on, ``appendfsync``) while a client streams batches into it,
    restart it on its data and count losses. Also returns the writer's error message."""
    server = RedisServer(directory, appendonly=True, appendfsync=appendfsync)
    server.start()
    try:
        store = RedisStore(server.client(timeout_s=2.0), DIM, table="crash")
        acknowledged: list[int] = []
        failures: list[BaseException] = []
        writer = threading.Thread(target=stream_until, args=(store, acknowledged, failures))
        writer.start()
        deadline = time.monotonic() + timeout_s
        while len(acknowledged) < kill_after and writer.is_alive() and time.monotonic() < deadline:
            time.sleep(0.001)
        server.kill()
        writer.join(timeout=timeout_s)
        if writer.is_alive() or not failures:
            raise RuntimeError("the writer neither failed nor returned after the server was killed")
        start = time.perf_counter()
        server.start()
        recovery = time.perf_counter() - start
        restarted = RedisStore(server.client(), DIM, table="crash")
        outcome = CrashOutcome(len(acknowledged), lost_batches(restarted, acknowledged),
                               torn_rows(restarted, len(acknowledged)), recovery)
        return outcome, str(failures[0])
    finally:
        server.stop()


@dataclass(frozen=True)
class HangOutcome:
    """A ``SIGSTOP``-ed Redis under a serving recommender, then ``SIGCONT``.

    ``call_s``: how long a store read took to raise (goal: the socket timeout); ``healthz_s``: each
    ``/healthz`` answer's latency while 32 ``/recommend`` requests were stuck on the store, and the
    status it reported last; ``recommend_status``: those requests' HTTP codes; ``landed_late``:
    whether the timed-out attempt of a gradient update was applied once the server resumed (the
    case that makes a blind retry apply it twice); ``steps_applied``: Adagrad steps the row took
    after that attempt and its retry with the same update id (goal: 1).
    """

    timeout_s: float
    call_s: float
    healthz_s: list[float]
    healthz_status: str
    recommend_status: list[int]
    landed_late: bool
    steps_applied: int


def hang_redis(directory: Path, timeout_s: float = 1.0, requests: int = 32) -> HangOutcome:
    server = RedisServer(directory)
    server.start()
    try:
        users = RedisStore(server.client(timeout_s), DIM, table="users")
        items = RedisStore(server.client(timeout_s), DIM, table="items")
        item_ids = np.arange(100, 130)
        items.get(item_ids)
        users.get([1])
        torch.manual_seed(0)
        recommender = Recommender(TwoTower(DIM, hidden=8), users, items, item_ids, item_refresh_s=0.2)
        recommender.start()
        try:
            with ThreadedServer(create_app(recommender)) as http, httpx.Client(base_url=http.url, timeout=60) as client:
                server.pause()
                try:
                    start = time.perf_counter()
                    with contextlib.suppress(StoreUnavailableError):
                        users.get([1])
                    call_s = time.perf_counter() - start
                    health_latencies, status, codes = probe_health_while_stuck(client, requests)
                finally:
                    server.resume()
        finally:
            recommender.stop()
        landed, steps = retried_update_steps(server, users, timeout_s)
        return HangOutcome(timeout_s, call_s, health_latencies, status, codes, landed, steps)
    finally:
        server.stop()


def probe_health_while_stuck(client: httpx.Client, requests: int) -> tuple[list[float], str, list[int]]:
    """Send ``requests`` ``/recommend`` calls that will hang on the store, and poll ``/healthz`` meanwhile."""
    with concurrent.futures.ThreadPoolExecutor(requests) as pool:
        stuck = [pool.submit(client.get, "/recommend/1") for _ in range(requests)]
        time.sleep(0.1)
        latencies, status = [], ""
        while not all(future.done() for future in stuck) or len(latencies) < 5:
            start = time.perf_counter()
            status = client.get("/healthz").json()["status"]
            latencies.append(time.perf_counter() - start)
            time.sleep(0.05)
        return latencies, status, [future.result().status_code for future in stuck]


def retried_update_steps(server: RedisServer, store: RedisStore, timeout_s: float) -> tuple[bool, int]:
    """Hang the server just after one gradient update's writes are sent, let the call time out, resume
    the server (the writes land), retry with the error's update id, and count the steps the row took.
    Returns whether the first attempt landed after its timeout, and the steps."""
    ids, grads = np.array([7]), np.ones((1, DIM), np.float32)
    before = store.get(ids).numpy()
    send = store._apply_once

    def hang_then_send(*args: object) -> int:
        server.pause()
        return send(*args)

    store._apply_once = hang_then_send
    try:
        store.apply_gradients(ids, grads, lr=0.1)
        raise RuntimeError("the update returned although the server was stopped")
    except StoreUnavailableError as error:
        update_id = error.update_id
    finally:
        store._apply_once = send
        server.resume()
    time.sleep(0.2)  # the resumed server runs what its sockets buffered; a new connection could overtake it
    landed = adagrad_steps(before, store.get(ids).numpy(), grads) == 1
    store.apply_gradients(ids, grads, lr=0.1, update_id=update_id)
    return landed, adagrad_steps(before, store.get(ids).numpy(), grads)


def adagrad_steps(before: np.ndarray, after: np.ndarray, grads: np.ndarray, lr: float = 0.1) -> int:
    """How many identical row-wise Adagrad steps (0-3) take ``before`` to ``after``."""
    rows, accum = before, np.zeros(len(before), np.float32)
    for steps in range(4):
        if np.allclose(after, rows, rtol=0, atol=1e-6):
            return steps
        rows, accum, _ = rowwise_adagrad(rows, accum, grads, lr)
    raise RuntimeError(f"row {after} is no whole number of steps from {before}")


def main() -> None:
    parser = argparse.ArgumentParser(description="child processes of the store fault tests")
    parser.add_argument("role", choices=["write-embedded"])
    parser.add_argument("args", nargs="*")
    args = parser.parse_args()
    write_embedded(*args.args)


if __name__ == "__main__":
    main()
