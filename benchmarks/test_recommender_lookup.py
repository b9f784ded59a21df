"""Batched embedding lookups: each backend as a ratio to the limits measured in the same run.

The limit for an in-memory store is a raw numpy gather of the same rows from one contiguous table
(memory bandwidth, no hashing, no sharding); every round reads a fresh random batch, for the store
and the limit alike, as serving random users does; for Redis it is ``redis-benchmark``'s pipelined GET
rate for values of the same size on the same server. TorchRec's ``EmbeddingBagCollection`` runs the
same workload when it is installed (``pip install torchrec==1.8.0 fbgemm-gpu-cpu==1.8.0 --no-deps``).
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Callable

import numpy as np
import pytest
import torch

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

DIM = 64
ROW_BYTES = row_dtype(DIM).itemsize
AREA = "recommender"


def median_seconds(fn: Callable[[], object], rounds: int) -> float:
    fn()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def row_batches(rows: int, batch: int, rounds: int) -> list[np.ndarray]:
    """A fresh batch of random row positions per round (plus warm-up): serving reads random users,
    so neither the store nor the limit gets to re-read a batch that is already in cache."""
    rng = np.random.default_rng(1)
    return [rng.integers(0, rows, batch) for _ in range(rounds + 1)]


def gather_rate(rows: int, batch: int, rounds: int) -> float:
    """Rows/s of ``np.take`` of the same random batches from a contiguous (rows, DIM) float32 table."""
    table = np.random.default_rng(0).standard_normal((rows, DIM), dtype=np.float32)
    batches = itertools.cycle(row_batches(rows, batch, rounds))
    return batch / median_seconds(lambda: np.take(table, next(batches), axis=0), rounds)


def measure_store(benchmark, record, store: EmbeddingStore, name: str, rows: int, batch: int, rounds: int,
                  params: dict, limits: dict[str, float]) -> float:
    ids = np.random.default_rng(2).integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, rows, dtype=np.int64)
    for chunk in np.array_split(ids, max(1, rows // 10000)):
        store.get(chunk)
    queries = itertools.cycle([ids[positions] for positions in row_batches(rows, batch, rounds)])
    benchmark.pedantic(lambda: store.get(next(queries), create=False), rounds=rounds, iterations=1,
                       warmup_rounds=1)
    rate = batch / benchmark.stats.stats.median
    scale = f"{rows:,} rows × {DIM} float32, batches of {batch}"
    params = {**params, "rows": rows, "dim": DIM, "batch": batch}
    record(name=f"lookup_{name}_rows_per_s", value=rate / 1e6, unit="Mrows/s", better="higher", area=AREA,
           scale=scale, params=params, description=f"batched get(ids) on the {name} store, median round")
    record(name=f"lookup_{name}_gb_per_s", value=rate * DIM * 4 / 1e9, unit="GB/s", better="higher", area=AREA,
           scale=scale, params=params, description="row payload bytes delivered per second (float32 values only)")
    for limit, limit_rate in limits.items():
        record(name=f"lookup_{name}_vs_{limit}", value=rate / limit_rate, unit="ratio", better="higher",
               area=AREA, scale=scale, params={**params, f"{limit}_rows_per_s": round(limit_rate)},
               description=f"lookup rate over the {limit.replace('_', ' ')} rate measured in the same run")
    return rate


@pytest.mark.parametrize("shards", [1, 4])
def test_lookup_embedded(benchmark, record, profile, shards):
    rows, batch = profile.pick(quick=200_000, full=2_000_000), profile.pick(quick=8192, full=16384)
    rounds = profile.pick(quick=10, full=100)
    limit = gather_rate(rows, batch, rounds)
    measure_store(benchmark, record, EmbeddedStore(DIM, n_shards=shards), f"embedded_{shards}shard", rows, batch,
                  rounds, {"backend": "embedded", "shards": shards}, {"numpy_gather": limit})


@pytest.mark.parametrize("topology", ["single", "cluster"])
def test_lookup_redis(benchmark, record, profile, tmp_path, topology):
    if not redis_available():
        pytest.skip(MISSING_REDIS)
    rows, batch = profile.pick(quick=20_000, full=300_000), profile.pick(quick=4096, full=8192)
    rounds = profile.pick(quick=10, full=50)
    requests = profile.pick(quick=100_000, full=1_000_000)
    limits = {"numpy_gather": gather_rate(rows, batch, rounds)}
    if topology == "single":
        with redis_node(tmp_path) as server:
            limits["redis_benchmark_get"] = redis_benchmark_get_rate(server.port, rows, requests, ROW_BYTES)
            server.client().flushall()
            measure_store(benchmark, record, RedisStore(server.client(), DIM), "redis", rows, batch, rounds,
                          {"backend": "redis", "masters": 1}, limits)
    else:
        with redis_cluster(tmp_path) as servers:
            limits["redis_benchmark_get"] = redis_benchmark_get_rate(servers[0].port, rows, requests, ROW_BYTES,
                                                                     cluster=True)
            client = connect_cluster([("127.0.0.1", s.port) for s in servers])
            for node in client.get_primaries():
                client.flushall(target_nodes=node)
            measure_store(benchmark, record, RedisStore(client, DIM), "redis_cluster", rows, batch, rounds,
                          {"backend": "redis-cluster", "masters": len(servers)}, limits)
            client.close()


def torchrec_unavailable() -> str | None:
    try:
        import torchrec  # noqa: F401
    except Exception as error:  # any import failure means "not installable here"; say which
        return (f"torchrec is not importable ({type(error).__name__}: {error}); "
                "pip install torchrec==1.8.0 fbgemm-gpu-cpu==1.8.0 --no-deps (+ tensordict, pyre-extensions)")
    return None


def test_lookup_torchrec_embedding_bag_collection(benchmark, record, profile):
    reason = torchrec_unavailable()
    if reason:
        pytest.skip(reason)
    from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor

    rows, batch = profile.pick(quick=200_000, full=2_000_000), profile.pick(quick=8192, full=16384)
    rounds = profile.pick(quick=10, full=100)
    limit = gather_rate(rows, batch, rounds)
    collection = EmbeddingBagCollection(tables=[EmbeddingBagConfig(
        name="users", embedding_dim=DIM, num_embeddings=rows, feature_names=["user"])], device=torch.device("cpu"))
    features = itertools.cycle([
        KeyedJaggedTensor.from_lengths_sync(keys=["user"], values=torch.from_numpy(positions),
                                            lengths=torch.ones(batch, dtype=torch.int64))
        for positions in row_batches(rows, batch, rounds)])
    with torch.no_grad():
        benchmark.pedantic(lambda: collection(next(features)), rounds=rounds, iterations=1, warmup_rounds=1)
    rate = batch / benchmark.stats.stats.median
    scale = f"{rows:,} rows × {DIM} float32, batches of {batch}"
    params = {"backend": "torchrec", "rows": rows, "dim": DIM, "batch": batch}
    record(name="lookup_torchrec_ebc_rows_per_s", value=rate / 1e6, unit="Mrows/s", better="higher", area=AREA,
           scale=scale, params=params, description="EmbeddingBagCollection forward, one id per bag (sum pooling)")
    record(name="lookup_torchrec_ebc_vs_numpy_gather", value=rate / limit, unit="ratio", better="higher", area=AREA,
           scale=scale, params={**params, "numpy_gather_rows_per_s": round(limit)},
           description="TorchRec's dense-index lookup over the numpy gather rate measured in the same run")
