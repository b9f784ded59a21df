"""The embedding store on Redis or Redis Cluster: one key per row, pipelined batched I/O.

A row is one binary string value: an 8-byte header (magic ``EMBR``, schema version, flags, dim),
the row-wise Adagrad accumulator, then ``dim`` little-endian float32s. One ``SET`` writes a whole
row, so a reader sees the old row or the new one, never a mix. Keys carry a hash tag,
``<table>:{<bucket>}:<id>``: ids in one bucket share a Redis hash slot, so a batch becomes one
``MGET`` per bucket (multi-key commands must stay inside one slot on a cluster) sent in one
pipeline. Buckets are the unit Redis Cluster can move between masters, so ``n_buckets`` bounds how
far the table can spread; expiry uses Redis's own per-key TTL, refreshed on every write.

Timeouts and retries: every store call makes at most two round trips, each bounded by the client's
socket timeout, and the client must not retry on its own (redis-py's default retries a timed-out
command 10 times with backoff, which turns a 5 s timeout into a minute and re-sends writes):
``connect`` builds such a client. A gradient update is applied by a Lua script per bucket that first
sets a dedup key for the update id (``SET NX`` with a TTL), so a write that reaches the server after
its caller gave up, and the caller's retry, apply the update once.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.retry import Retry

from ai_system.recsys.store import (
    EmbeddingStore,
    StoreUnavailableError,
    initial_rows,
    rowwise_adagrad,
    shard_of,
)

MAGIC = b"EMBR"
SCHEMA_VERSION = 1
HEADER_BYTES = 8
UNAVAILABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
               redis.exceptions.ClusterDownError, redis.exceptions.ClusterError)

DEFAULT_TIMEOUT_S = 5.0
DEDUP_TTL_S = 3600.0
# KEYS: the update's dedup key, then the rows; ARGV: dedup TTL (ms), row TTL (ms, 0 = none), the values.
APPLY_ONCE = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return 0 end
for i = 2, #KEYS do
  if ARGV[2] == '0' then redis.call('SET', KEYS[i], ARGV[i + 1])
  else redis.call('SET', KEYS[i], ARGV[i + 1], 'PX', ARGV[2]) end
end
return 1
"""

T = TypeVar("T")


def no_retries() -> Retry:
    return Retry(NoBackoff(), 0)


def connect(host: str = "127.0.0.1", port: int = 6379, timeout_s: float = DEFAULT_TIMEOUT_S) -> redis.Redis:
    """A client whose every round trip gives up after ``timeout_s`` (connect, send and receive) and
    never retries by itself: the store decides what is safe to retry."""
    return redis.Redis(host=host, port=port, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                       retry=no_retries())


def connect_cluster(nodes: list[tuple[str, int]], timeout_s: float = DEFAULT_TIMEOUT_S) -> RedisCluster:
    """``connect`` for Redis Cluster: the same timeouts on every node, no retries."""
    return RedisCluster(startup_nodes=[ClusterNode(host, port) for host, port in nodes], socket_timeout=timeout_s,
                        socket_connect_timeout=timeout_s, retry=no_retries())


def execute_once(pipe: redis.client.Pipeline | ClusterPipeline) -> list[Any]:
    """Send a pipeline once. A cluster pipeline would resend every command that failed on a connection
    error one at a time, each with its own timeout (24 s for one read against a hung master at a 1 s
    timeout), so it runs without redirections: a failure raises, and the caller may retry the call."""
    if not isinstance(pipe, ClusterPipeline):
        return pipe.execute()
    try:
        return pipe.send_cluster_commands(pipe._execution_strategy.command_queue, allow_redirections=False)
    finally:
        pipe.reset()


def client_timeout(client: redis.Redis | RedisCluster) -> float:
    """The client's socket timeout; raises unless it is finite and the client never retries by itself."""
    if isinstance(client, RedisCluster):
        kwargs, retries = client.nodes_manager.connection_kwargs, client.retry.get_retries()
    else:
        kwargs = client.connection_pool.connection_kwargs
        retries = kwargs["retry"].get_retries() if kwargs.get("retry") else 0
    timeout = kwargs.get("socket_timeout")
    if timeout is None or not 0 < timeout < float("inf") or retries:
        raise ValueError(f"the Redis client has socket_timeout={timeout} and retries {retries} times by itself; a "
                         "store call could then block far past its timeout and re-send writes. Build the client "
                         "with ai_system.recsys.redis_store.connect(...) (or connect_cluster)")
    return float(timeout)


def row_dtype(dim: int) -> np.dtype:
    return np.dtype([("magic", "S4"), ("version", "u1"), ("flags", "u1"), ("dim", "<u2"),
                     ("accum", "<f4"), ("row", "<f4", (dim,))])


def encode_rows(rows: np.ndarray, accum: np.ndarray) -> list[bytes]:
    """One self-describing value per row."""
    records = np.zeros(len(rows), dtype=row_dtype(rows.shape[1]))
    records["magic"], records["version"], records["dim"] = MAGIC, SCHEMA_VERSION, rows.shape[1]
    records["accum"], records["row"] = accum, rows
    blob, size = records.tobytes(), records.dtype.itemsize
    return [blob[i:i + size] for i in range(0, len(blob), size)]


def decode_rows(values: list[bytes], ids: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows and accumulators from stored values; a value of the wrong schema raises naming its id."""
    dtype = row_dtype(dim)
    blob = b"".join(values)
    if len(blob) != len(values) * dtype.itemsize:
        bad = next(i for i, value in enumerate(values) if len(value) != dtype.itemsize)
        raise ValueError(f"stored row for id {ids[bad]} is {len(values[bad])} bytes, expected {dtype.itemsize} "
                         f"(schema {SCHEMA_VERSION}, dim {dim}): written by another schema or corrupted")
    records = np.frombuffer(blob, dtype=dtype)
    wrong = (records["magic"] != MAGIC) | (records["version"] != SCHEMA_VERSION) | (records["dim"] != dim)
    if wrong.any():
        bad = int(np.flatnonzero(wrong)[0])
        raise ValueError(f"stored row for id {ids[bad]} has header {bytes(records[bad]['magic'])!r} "
                         f"v{records[bad]['version']} dim {records[bad]['dim']}, expected {MAGIC!r} "
                         f"v{SCHEMA_VERSION} dim {dim}")
    return records["row"].copy(), records["accum"].copy()


def translate_outage(method: Callable[..., T]) -> Callable[..., T]:
    """Turn a lost or hung connection into StoreUnavailableError. A write may still land after the
    call gave up; each row is one ``SET`` (every row is old or new, never mixed), and a gradient update
    carries an id, so its retry with that id applies it at most once."""

    @functools.wraps(method)
    def wrapper(self: RedisStore, *args: Any, **kwargs: Any) -> T:
        try:
            return method(self, *args, **kwargs)
        except UNAVAILABLE as error:
            update_id = kwargs.get("update_id")
            retry = (f"retry with update_id={update_id!r} to apply it exactly once" if update_id else
                     "retrying it rewrites the same whole rows")
            raise StoreUnavailableError(
                f"Redis store {self.describe()} is unreachable or hung ({type(error).__name__}: {error}; socket "
                f"timeout {self.timeout_s:g} s); the call was not acknowledged and may still land: {retry}",
                update_id=update_id) from error

    return wrapper


class RedisStore(EmbeddingStore):
    """Rows in Redis (``redis.Redis``) or Redis Cluster (``RedisCluster``), keyed by raw id."""

    def __init__(self, client: redis.Redis | RedisCluster, dim: int, table: str = "emb", n_buckets: int = 64,
                 init_scale: float = 0.05, ttl_s: float | None = None, dedup_ttl_s: float = DEDUP_TTL_S) -> None:
        super().__init__(dim, init_scale)
        if not 1 <= n_buckets <= 16384:
            raise ValueError(f"n_buckets must be in [1, 16384] (Redis has 16384 hash slots), got {n_buckets}")
        if not table or any(c in table for c in "{}: "):
            raise ValueError(f"table must be a non-empty name without braces, colons or spaces, got {table!r}")
        if ttl_s is not None and ttl_s <= 0:
            raise ValueError(f"ttl_s must be positive or None (never expire), got {ttl_s}")
        if not dedup_ttl_s > 0:
            raise ValueError(f"dedup_ttl_s must be positive (how long a retry stays safe), got {dedup_ttl_s}")
        self.timeout_s = client_timeout(client)
        self.client = client
        self.dedup_ttl_ms = int(dedup_ttl_s * 1000)
        self.table = table.encode()
        self.n_buckets = n_buckets
        self.ttl_ms = None if ttl_s is None else int(ttl_s * 1000)

    @property
    def port(self) -> int:
        """Port of the (single-node) server, for tools that talk to it directly."""
        if isinstance(self.client, RedisCluster):
            raise ValueError("a Redis Cluster store has one port per master; use client.get_primaries()")
        return int(self.client.connection_pool.connection_kwargs.get("port", 6379))

    def describe(self) -> str:
        if isinstance(self.client, RedisCluster):
            return "cluster " + ",".join(f"{n.host}:{n.port}" for n in self.client.get_nodes())
        kwargs = self.client.connection_pool.connection_kwargs
        return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"

    def keys(self, ids: np.ndarray) -> list[bytes]:
        buckets = shard_of(ids, self.n_buckets)
        return [b"%s:{%d}:%d" % (self.table, b, i) for b, i in zip(buckets.tolist(), ids.tolist(), strict=True)]

    def _read(self, ids: np.ndarray) -> tuple[np.ndarray, list[bytes | None]]:
        """Values in bucket order, and that order: one MGET per bucket, all in one pipeline."""
        buckets = shard_of(ids, self.n_buckets)
        order = np.argsort(buckets, kind="stable")
        keys = self.keys(ids[order])
        bounds = [0, *(np.flatnonzero(np.diff(buckets[order])) + 1).tolist(), len(ids)]
        pipe = self.client.pipeline(transaction=False)
        for start, end in itertools.pairwise(bounds):
            pipe.execute_command("MGET", *keys[start:end])
        return order, list(itertools.chain.from_iterable(execute_once(pipe)))

    def _store(self, ids: np.ndarray, rows: np.ndarray, accum: np.ndarray, only_new: bool = False) -> None:
        pipe = self.client.pipeline(transaction=False)
        for key, value in zip(self.keys(ids), encode_rows(rows, accum), strict=True):
            pipe.set(key, value, px=self.ttl_ms, nx=only_new)
        execute_once(pipe)

    def _fetch(self, ids: np.ndarray, create: bool) -> tuple[np.ndarray, np.ndarray]:
        order, values = self._read(ids)
        ids = ids[order]
        rows = np.zeros((len(ids), self.dim), dtype=np.float32)
        accum = np.zeros(len(ids), dtype=np.float32)
        if None not in values:
            rows, accum = decode_rows(values, ids, self.dim)
        else:
            missing = np.fromiter((value is None for value in values), dtype=bool, count=len(values))
            present = np.flatnonzero(~missing)
            if len(present):
                rows[present], accum[present] = decode_rows([values[i] for i in present], ids[present], self.dim)
            if create:
                new_ids = np.unique(ids[missing])
                fresh = initial_rows(new_ids, self.dim, self.init_scale)
                self._store(new_ids, fresh, np.zeros(len(new_ids), dtype=np.float32), only_new=True)
                rows[missing] = fresh[np.searchsorted(new_ids, ids[missing])]
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        return np.take(rows, inverse, axis=0), accum[inverse]

    @translate_outage
    def _get(self, ids: np.ndarray, create: bool) -> np.ndarray:
        return self._fetch(ids, create)[0]

    @translate_outage
    def _write(self, ids: np.ndarray, rows: np.ndarray, accum: np.ndarray) -> None:
        self._store(ids, rows, accum)
        self.rows_written += len(ids)

    @translate_outage
    def _apply(self, ids: np.ndarray, grads: np.ndarray, lr: float, update_id: str) -> int:
        """Read, step, then write each bucket's rows with ``APPLY_ONCE``: one writer per row (the trainer
        that owns its shard, as Monolith's PS), and an update id applied at most once per bucket."""
        rows, accum = self._fetch(ids, create=True)
        rows, accum, finite = rowwise_adagrad(rows, accum, grads, lr)
        self.rows_rejected += int((~finite).sum())
        ids, rows, accum = ids[finite], rows[finite], accum[finite]
        written = self._apply_once(ids, rows, accum, update_id)
        self.rows_written += written
        return len(ids)

    def _apply_once(self, ids: np.ndarray, rows: np.ndarray, accum: np.ndarray, update_id: str) -> int:
        """One ``APPLY_ONCE`` per bucket, all in one pipeline; returns the rows written now (a bucket
        whose dedup key exists was written by an earlier attempt of the same update)."""
        buckets = shard_of(ids, self.n_buckets)
        order = np.argsort(buckets, kind="stable")
        keys, values = self.keys(ids[order]), encode_rows(rows[order], accum[order])
        bounds = [0, *(np.flatnonzero(np.diff(buckets[order])) + 1).tolist(), len(ids)]
        pipe = self.client.pipeline(transaction=False)
        for start, end in itertools.pairwise(bounds):
            dedup = b"%s:{%d}:applied:%s" % (self.table, buckets[order[start]], update_id.encode())
            pipe.execute_command("EVAL", APPLY_ONCE, 1 + end - start, dedup, *keys[start:end],
                                 self.dedup_ttl_ms, self.ttl_ms or 0, *values[start:end])
        applied = execute_once(pipe)
        return sum(end - start for (start, end), done in zip(itertools.pairwise(bounds), applied, strict=True)
                   if done)

    @translate_outage
    def nbytes(self) -> int:
        if isinstance(self.client, RedisCluster):
            replies = self.client.info("memory", target_nodes=RedisCluster.PRIMARIES)
            return sum(reply["used_memory"] for reply in replies.values())
        return int(self.client.info("memory")["used_memory"])

    def close(self) -> None:
        self.client.close()
