"""Batched embedding lookups: each backend as a ratio to the limits measured in the same run.

The limit for an in-memory store is a raw numpy gather of the same rows from one contiguous table
(memory bandwidth, no hashing, no sharding); every round reads a fresh random batch, for the store
and the limit alike, as serving random users does, and the two are timed back to back in each
round (the gather in the round's untimed setup) in CPU time of the one thread doing the work, so a
shared machine's preemption does not count; the published ratio is the median of the per-round
ratios. For Redis the limit is ``redis-benchmark``'s
pipelined GET rate for values of the same size on the same server. TorchRec's
``EmbeddingBagCollection`` runs the same workload; ``make bench`` installs it (``benchmarks/peers/torch-X.Y.txt``)
and a missing TorchRec fails that benchmark instead of skipping it.
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Callable

import numpy as np
import pytest
import torch

from ai_system.bench.metrics import Baseline, Spread
from ai_system.recsys.embedded import EmbeddedStore
from ai_system.recsys.redis_server import (
    MISSING_REDIS,
    redis_available,
    redis_benchmark_get_rate,
    redis_cluster,
    redis_node,
)
from ai_system.recsys.redis_store import RedisStore, connect_cluster, row_dtype
from ai_system.recsys.store import EmbeddingStore
from ai_system.recsys.training import torch_threads

DIM = 64
ROW_BYTES = row_dtype(DIM).itemsize
AREA = "recommender"
GOAL_VS_GATHER = 0.5
QUESTION_GATHER = "How close does a batched store lookup come to a plain numpy gather of the same rows?"
QUESTION_REDIS = "How much of the Redis server's own GET rate does the store's client reach?"


def row_batches(rows: int, batch: int, rounds: int) -> list[np.ndarray]:
    """A fresh batch of random row positions per round (plus warm-up): serving reads random users,
    so neither the store nor the limit gets to re-read a batch that is already in cache."""
    rng = np.random.default_rng(1)
    return [rng.integers(0, rows, batch) for _ in range(rounds + 1)]


def random_table(rows: int) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((rows, DIM), dtype=np.float32)


def paired_with_gather(benchmark, lookup: Callable[[object], object], rows: int, batch: int, rounds: int,
                       prepare: Callable[[np.ndarray], object] = lambda positions: positions
                       ) -> tuple[list[float], list[float]]:
    """Run ``lookup(prepare(positions))`` as the benchmark, with a numpy gather of the same positions right
    before it in each round (in the round's untimed setup, as is ``prepare``). Returns per-round CPU
    seconds of this thread, (lookup, gather): on a shared machine, time spent descheduled is not the
    code's, and both sides are one thread (TorchRec runs with one torch thread)."""
    table = random_table(rows)
    batches = iter(row_batches(rows, batch, rounds))
    lookups: list[float] = []
    gathers: list[float] = []

    def setup() -> tuple[tuple[object], dict]:
        positions = next(batches)
        start = time.thread_time()
        np.take(table, positions, axis=0)
        gathers.append(time.thread_time() - start)
        return (prepare(positions),), {}

    def timed(argument: object) -> None:
        start = time.thread_time()
        lookup(argument)
        lookups.append(time.thread_time() - start)

    benchmark.pedantic(timed, setup=setup, rounds=rounds, iterations=1, warmup_rounds=1)
    return lookups[-rounds:], gathers[-rounds:]


def record_vs_gather(record, name: str, lookup_s: list[float], gather_s: list[float], batch: int, scale: str,
                     params: dict, description: str) -> None:
    rate, limit = batch / statistics.median(lookup_s), batch / statistics.median(gather_s)
    ratios = [g / t for t, g in zip(lookup_s, gather_s, strict=True)]
    record(name=f"lookup_{name}_rows_per_s", value=rate / 1e6, unit="Mrows/s", better="higher", area=AREA,
           scale=scale, params=params, spread=Spread.of([batch / t / 1e6 for t in lookup_s]),
           description=f"{description}, median round, per CPU-second of the one thread")
    record(name=f"lookup_{name}_gb_per_s", value=rate * DIM * 4 / 1e9, unit="GB/s", better="higher", area=AREA,
           scale=scale, params=params, description="row payload bytes delivered per second (float32 values only)")
    record(name=f"lookup_{name}_vs_numpy_gather", value=statistics.median(ratios), unit="ratio", better="higher",
           area=AREA, scale=scale, params=params, question=QUESTION_GATHER, goal=GOAL_VS_GATHER,
           baseline=Baseline("numpy gather of the same rows", limit / 1e6, "Mrows/s", ours=rate / 1e6),
           spread=Spread.of(ratios),
           description="median over rounds of (gather CPU time / lookup CPU time), each round a fresh batch "
                       "timed back to back with the gather, one thread each")


def loaded(store: EmbeddingStore, rows: int) -> np.ndarray:
    """Fill ``store`` with ``rows`` random ids; returns them (position ``i`` is row ``i`` of the table)."""
    ids = np.random.default_rng(2).integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, rows, dtype=np.int64)
    for chunk in np.array_split(ids, max(1, rows // 10000)):
        store.get(chunk)
    return ids


@pytest.mark.parametrize("shards", [1, 4])
def test_lookup_embedded(benchmark, record, profile, shards):
    rows, batch = profile.pick(quick=200_000, full=2_000_000), profile.pick(quick=8192, full=16384)
    rounds = profile.pick(quick=10, full=100)
    store = EmbeddedStore(DIM, n_shards=shards)
    ids = loaded(store, rows)
    lookup_s, gather_s = paired_with_gather(benchmark, lambda positions: store.get(ids[positions], create=False),
                                            rows, batch, rounds)
    record_vs_gather(record, f"embedded_{shards}shard", lookup_s, gather_s, batch,
                     f"{rows:,} rows × {DIM} float32, batches of {batch}",
                     {"backend": "embedded", "shards": shards, "rows": rows, "dim": DIM, "batch": batch},
                     f"batched get(ids) on the embedded store, {shards} shard(s)")


def measure_redis(benchmark, record, store: RedisStore, name: str, rows: int, batch: int, rounds: int,
                  params: dict, server_rate: float) -> None:
    ids = loaded(store, rows)
    queries = itertools.cycle([ids[positions] for positions in row_batches(rows, batch, rounds)])
    benchmark.pedantic(lambda: store.get(next(queries), create=False), rounds=rounds, iterations=1,
                       warmup_rounds=1)
    rate = batch / benchmark.stats.stats.median
    scale = f"{rows:,} rows × {DIM} float32, batches of {batch}"
    params = {**params, "rows": rows, "dim": DIM, "batch": batch}
    record(name=f"lookup_{name}_rows_per_s", value=rate / 1e6, unit="Mrows/s", better="higher", area=AREA,
           scale=scale, params=params, description=f"batched get(ids) on the {name} store, median round")
    record(name=f"lookup_{name}_vs_redis_benchmark_get", value=rate / server_rate, unit="ratio", better="higher",
           area=AREA, scale=scale, params=params, question=QUESTION_REDIS, goal=GOAL_VS_GATHER,
           baseline=Baseline("redis-benchmark pipelined GET (-P 16, 50 clients)", server_rate / 1e6, "Mrows/s",
                             ours=rate / 1e6),
           description="one Python client's lookup rate over the server's own GET rate, measured in the same run")


@pytest.mark.parametrize("topology", ["single", "cluster"])
def test_lookup_redis(benchmark, record, profile, tmp_path, topology):
    if not redis_available():
        pytest.skip(MISSING_REDIS)
    rows, batch = profile.pick(quick=20_000, full=300_000), profile.pick(quick=4096, full=8192)
    rounds = profile.pick(quick=10, full=50)
    requests = profile.pick(quick=100_000, full=1_000_000)
    if topology == "single":
        with redis_node(tmp_path) as server:
            server_rate = redis_benchmark_get_rate(server.port, rows, requests, ROW_BYTES)
            server.client().flushall()
            measure_redis(benchmark, record, RedisStore(server.client(), DIM), "redis", rows, batch, rounds,
                          {"backend": "redis", "masters": 1}, server_rate)
    else:
        with redis_cluster(tmp_path) as servers:
            server_rate = redis_benchmark_get_rate(servers[0].port, rows, requests, ROW_BYTES, cluster=True)
            client = connect_cluster([("127.0.0.1", s.port) for s in servers])
            for node in client.get_primaries():
                client.flushall(target_nodes=node)
            measure_redis(benchmark, record, RedisStore(client, DIM), "redis_cluster", rows, batch, rounds,
                          {"backend": "redis-cluster", "masters": len(servers)}, server_rate)
            client.close()


def torchrec_missing() -> str | None:
    try:
        import torchrec  # noqa: F401
    except Exception as error:  # any import failure (missing, or built for another torch); say which
        return (f"TorchRec, the peer this benchmark compares with, does not import ({type(error).__name__}: "
                f"{error}); `make peers` installs the set pinned for this torch (benchmarks/peers/torch-X.Y.txt)")
    return None


def test_lookup_torchrec_embedding_bag_collection(benchmark, record, profile):
    missing = torchrec_missing()
    if missing:
        pytest.fail(missing)
    import torchrec
    from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor

    rows, batch = profile.pick(quick=200_000, full=2_000_000), profile.pick(quick=8192, full=16384)
    rounds = profile.pick(quick=10, full=100)
    collection = EmbeddingBagCollection(tables=[EmbeddingBagConfig(
        name="users", embedding_dim=DIM, num_embeddings=rows, feature_names=["user"])], device=torch.device("cpu"))
    lengths = torch.ones(batch, dtype=torch.int64)

    def features(positions: np.ndarray) -> KeyedJaggedTensor:
        return KeyedJaggedTensor.from_lengths_sync(keys=["user"], values=torch.from_numpy(positions), lengths=lengths)

    with torch.no_grad(), torch_threads(1):
        lookup_s, gather_s = paired_with_gather(benchmark, collection, rows, batch, rounds, prepare=features)
    record_vs_gather(record, "torchrec_ebc", lookup_s, gather_s, batch,
                     f"{rows:,} rows × {DIM} float32, batches of {batch}",
                     {"backend": "torchrec", "rows": rows, "dim": DIM, "batch": batch},
                     f"TorchRec {torchrec.__version__} EmbeddingBagCollection forward, one id per bag (sum pooling), "
                     "dense indices")
