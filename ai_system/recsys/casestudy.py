"""The recommender case study end to end: train, serve, update online, measure, size for 1B users.

``ai-system recommender`` (or ``case-studies/recommender/run.sh``) runs it on the embedded store;
``--redis`` runs the same pipeline on a ``redis-server`` it starts on a loopback port. The pieces are
functions the benchmarks reuse, so the case study and the published numbers measure the same code.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import httpx
import numpy as np
import torch

from ai_system.recsys.data import (
    N_DENSE,
    PlantedWorld,
    interaction_stream,
    make_world,
    sample_impressions,
    sample_interactions,
)
from ai_system.recsys.embedded import EmbeddedStore
from ai_system.recsys.models import DLRM, StoreTable, TwoTower
from ai_system.recsys.redis_server import redis_benchmark_get_rate, redis_node
from ai_system.recsys.redis_store import RedisStore, row_dtype
from ai_system.recsys.serving import Recommender, create_app, measure_freshness
from ai_system.recsys.sizing import SizingInputs, project
from ai_system.recsys.store import EmbeddingStore
from ai_system.recsys.training import (
    RETRIEVAL,
    DLRMTrainer,
    OnlineTrainer,
    RankingQuality,
    RetrievalQuality,
    TwoTowerTrainer,
    ranking_quality,
    retrieval_quality,
    torch_threads,
)
from ai_system.serving.threaded import ThreadedServer

DIM = 16
RECALL_K = 10


@contextlib.contextmanager
def open_stores(backend: str, dim: int = DIM, shards: int = 4) -> Iterator[tuple[EmbeddingStore, EmbeddingStore]]:
    """A user table and an item table on the chosen backend ("embedded" or a fresh local "redis")."""
    if backend == "embedded":
        yield EmbeddedStore(dim, n_shards=shards), EmbeddedStore(dim, n_shards=shards)
    elif backend == "redis":
        with tempfile.TemporaryDirectory(prefix="recsys-redis-") as directory, redis_node(Path(directory)) as server:
            users = RedisStore(server.client(), dim, table="users")
            items = RedisStore(server.client(), dim, table="items")
            try:
                yield users, items
            finally:
                users.close()
                items.close()
    else:
        raise ValueError(f"backend must be 'embedded' or 'redis', got {backend!r}")


def train_retrieval(users: EmbeddingStore, items: EmbeddingStore, world: PlantedWorld, steps: int,
                    batch_size: int = 256, seed: int = 0) -> tuple[TwoTowerTrainer, float]:
    """Offline two-tower training; returns the trainer and its samples per second."""
    torch.manual_seed(seed)
    trainer = TwoTowerTrainer(TwoTower(users.dim), StoreTable(users), StoreTable(items), world.item_ids)
    stream = interaction_stream(world, batch_size, seed=seed)
    batches = [next(stream) for _ in range(steps)]
    start = time.perf_counter()
    for user_rows, item_index in batches:
        trainer.step(world.user_ids[user_rows], item_index)
    return trainer, steps * batch_size / (time.perf_counter() - start)


def held_out_quality(trainer: TwoTowerTrainer, world: PlantedWorld, events: int = 20000) -> RetrievalQuality:
    users, items = sample_interactions(world, events, np.random.default_rng(12345))
    return retrieval_quality(trainer, world, users, items, RECALL_K)


def train_ranking(users: EmbeddingStore, items: EmbeddingStore, world: PlantedWorld, steps: int,
                  batch_size: int = 256, seed: int = 0) -> tuple[RankingQuality, float]:
    """DLRM on click impressions; returns AUC vs the generating model's, and samples per second."""
    torch.manual_seed(seed)
    trainer = DLRMTrainer(DLRM(users.dim, N_DENSE), StoreTable(users), StoreTable(items))
    rng = np.random.default_rng(seed)
    batches = [sample_impressions(world, batch_size, rng) for _ in range(steps)]
    start = time.perf_counter()
    for batch in batches:
        trainer.step(world.user_ids[batch.users], world.item_ids[batch.items], batch.dense, batch.labels)
    rate = steps * batch_size / (time.perf_counter() - start)
    return ranking_quality(trainer, world, sample_impressions(world, 20000, np.random.default_rng(54321))), rate


def online_freshness(trainer: TwoTowerTrainer, world: PlantedWorld, probes: int,
                     item_refresh_s: float = 0.5) -> tuple[np.ndarray, float]:
    """Serve over HTTP while an online trainer consumes the stream; returns freshness latencies (s)
    and the trainer's samples per second meanwhile."""
    recommender = Recommender(trainer.model, trainer.users.store, trainer.items.store, world.item_ids,
                              item_refresh_s=item_refresh_s, model_lock=trainer.lock)
    recommender.start()
    try:
        with ThreadedServer(create_app(recommender)) as http, httpx.Client(base_url=http.url) as client:
            online = OnlineTrainer(trainer, world, interaction_stream(world, 256, seed=7)).start()
            try:
                latencies = measure_freshness(client, recommender, probes)
            finally:
                rate = online.stop()
    finally:
        recommender.stop()
    return latencies, rate


def lookup_rate(store: EmbeddingStore, ids: np.ndarray, batch_size: int, rounds: int) -> float:
    """Rows per second of batched ``get`` over rows that already exist (the serving read path)."""
    store.get(ids)
    rng = np.random.default_rng(0)
    batches = [ids[rng.integers(0, len(ids), batch_size)] for _ in range(rounds)]
    start = time.perf_counter()
    for batch in batches:
        store.get(batch, create=False)
    return rounds * batch_size / (time.perf_counter() - start)


def measure_shard(store: EmbeddingStore, rows: int = 20000, batch_size: int = 1024) -> tuple[float, float]:
    """Bytes each stored row costs the backend, and rows/s one shard serves: the sizing's inputs."""
    ids = np.random.default_rng(1).integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, rows, dtype=np.int64)
    before = store.nbytes()
    store.get(ids)
    return (store.nbytes() - before) / rows, lookup_rate(store, ids, batch_size, rounds=20)


def sizing_inputs(backend: str, rows: int = 20000) -> SizingInputs:
    """Measure one production-shaped shard (dim 64) on ``backend`` for the 1B-user projection.

    Bytes per row are the backend's memory growth. Rows/s per shard is the embedded store's own
    lookup rate (a shard process serving lookups), or for Redis the server's pipelined GET rate from
    ``redis-benchmark`` with 50 clients: one Python client is not the limit of a Redis shard.
    """
    with open_stores(backend, dim=64, shards=1) as (store, _):
        bytes_per_row, rows_per_s = measure_shard(store, rows)
        if isinstance(store, RedisStore):
            rows_per_s = redis_benchmark_get_rate(store.port, rows, requests=100_000,
                                                  value_bytes=row_dtype(64).itemsize)
    return SizingInputs(bytes_per_row=bytes_per_row, rows_per_s_per_shard=rows_per_s)


def run(backend: str, out: Path, steps: int = 600, probes: int = 50) -> dict[str, object]:
    with torch_threads(1):
        return _run(backend, out, steps, probes)


def _run(backend: str, out: Path, steps: int, probes: int) -> dict[str, object]:
    world = make_world(n_users=1000, n_items=200, seed=0)
    results: dict[str, object] = {"backend": backend, "users": world.n_users, "items": world.n_items, "dim": DIM}
    with open_stores(backend) as (users, items):
        trainer, rate = train_retrieval(users, items, world, steps)
        quality = held_out_quality(trainer, world)
        results.update(train_samples_per_s=rate, recall_at_k=quality.recall, truth_recall_at_k=quality.truth_recall,
                       recall_ratio=quality.ratio, k=RECALL_K, retrieval=RETRIEVAL)
        latencies, online_rate = online_freshness(trainer, world, probes)
        results.update(freshness_p50_ms=1e3 * float(np.percentile(latencies, 50)),
                       freshness_p99_ms=1e3 * float(np.percentile(latencies, 99)), online_samples_per_s=online_rate)
    with open_stores(backend) as (users, items):
        ranking, rank_rate = train_ranking(users, items, world, steps)
        results.update(auc=ranking.auc, truth_auc=ranking.truth_auc, auc_ratio=ranking.ratio,
                       ranking_samples_per_s=rank_rate)
    inputs = sizing_inputs(backend)
    results["sizing_measured_inputs"] = asdict(inputs)
    results["sizing_1B_users_projected"] = asdict(project(inputs))
    out.mkdir(parents=True, exist_ok=True)
    (out / f"recommender-{backend}.json").write_text(json.dumps(results, indent=2))
    return results


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("recommender", help="run the recommender case study end to end")
    parser.add_argument("--redis", action="store_true", help="use a local redis-server instead of the embedded store")
    parser.add_argument("--out", type=Path, default=Path("artifacts/recommender"),
                        help="where to write the JSON (default: %(default)s; results/ holds benchmark runs only)")
    parser.add_argument("--steps", type=int, default=600, help="training steps of 256 samples")
    parser.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    if args.steps <= 0:
        raise SystemExit(f"--steps must be positive, got {args.steps}")
    results = run("redis" if args.redis else "embedded", args.out, steps=args.steps)
    for key, value in results.items():
        print(f"{key:>28}: {value:.4g}" if isinstance(value, float) else f"{key:>28}: {value}")
    return 0
