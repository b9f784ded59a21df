"""The model pipeline on the store: training throughput, quality as a ratio to the planted ground truth,
update-to-serve freshness under online training, and the 1B-user sizing projected from this run."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest

from ai_system.bench.metrics import Baseline, Projection
from ai_system.recsys.casestudy import (
    RECALL_K,
    held_out_quality,
    online_freshness,
    open_stores,
    sizing_inputs,
    train_ranking,
    train_retrieval,
)
from ai_system.recsys.data import make_world
from ai_system.recsys.redis_server import MISSING_REDIS, redis_available
from ai_system.recsys.sizing import project
from ai_system.recsys.training import torch_threads

AREA = "recommender"
BACKENDS = ["embedded", pytest.param("redis", marks=pytest.mark.skipif(not redis_available(), reason=MISSING_REDIS))]


@pytest.fixture(autouse=True)
def one_torch_thread():
    with torch_threads(1):
        yield


@pytest.mark.parametrize("backend", BACKENDS)
def test_train_two_tower(benchmark, record, profile, backend):
    steps = profile.pick(quick=300, full=1000)
    world = make_world(n_users=1000, n_items=200, seed=0)
    with open_stores(backend) as (users, items):
        result = benchmark.pedantic(lambda: train_retrieval(users, items, world, steps), rounds=1, iterations=1)
        trainer, rate = result
        quality = held_out_quality(trainer, world)
    params = {"backend": backend, "users": world.n_users, "items": world.n_items, "dim": users.dim,
              "batch": 256, "steps": steps}
    scale = f"{world.n_users} users × {world.n_items} items, {steps} steps of 256"
    record(name=f"train_two_tower_{backend}_samples_per_s", value=rate, unit="samples/s", better="higher",
           area=AREA, scale=scale, params=params,
           description="offline two-tower steps (full-softmax, rows read and written through the store), 1 thread")
    record(name=f"recall_at_{RECALL_K}_{backend}_vs_ground_truth", value=quality.ratio, unit="ratio",
           better="higher", area=AREA, scale=scale, params=params, goal=0.95,
           question="How close does the learned two-tower come to the ground-truth model's recall?",
           baseline=Baseline(f"recall@{RECALL_K} of the generating factors", quality.truth_recall, "recall",
                             kind="limit", ours=quality.recall),
           description=f"held-out recall@{RECALL_K} of the trained model over that of the generating factors")


def test_train_dlrm(benchmark, record, profile):
    steps = profile.pick(quick=200, full=1000)
    world = make_world(n_users=1000, n_items=200, seed=0)
    with open_stores("embedded") as (users, items):
        quality, rate = benchmark.pedantic(lambda: train_ranking(users, items, world, steps), rounds=1, iterations=1)
    params = {"backend": "embedded", "users": world.n_users, "items": world.n_items, "dim": users.dim,
              "batch": 256, "steps": steps}
    scale = f"{world.n_users} users × {world.n_items} items, {steps} steps of 256"
    record(name="train_dlrm_embedded_samples_per_s", value=rate, unit="samples/s", better="higher", area=AREA,
           scale=scale, params=params, description="DLRM-style ranking steps on click impressions, 1 thread")
    record(name="auc_dlrm_vs_ground_truth", value=quality.ratio, unit="ratio", better="higher", area=AREA,
           scale=scale, params=params,
           question="How close does the DLRM's AUC come to the true click probabilities' AUC?",
           baseline=Baseline("AUC of the true click probabilities", quality.truth_auc, "AUC", kind="limit",
                             ours=quality.auc),
           description="held-out AUC over the AUC of the true click probabilities on the same labels")


@pytest.mark.parametrize("backend", BACKENDS)
def test_freshness_under_online_training(benchmark, record, profile, backend):
    probes = profile.pick(quick=30, full=200)
    world = make_world(n_users=1000, n_items=200, seed=0)
    with open_stores(backend) as (users, items):
        trainer, _ = train_retrieval(users, items, world, steps=20)
        latencies, online_rate = benchmark.pedantic(lambda: online_freshness(trainer, world, probes),
                                                    rounds=1, iterations=1)
    params = {"backend": backend, "probes": probes, "item_refresh_s": 0.5}
    scale = f"{probes} probes over HTTP while the online trainer runs"
    for quantile in (50, 99):
        goal = {"goal": 1000.0, "question": "How soon after an acknowledged update does serving use the new row?"}
        record(name=f"freshness_{backend}_p{quantile}", value=1e3 * float(np.percentile(latencies, quantile)),
               unit="ms", better="lower", area=AREA, scale=scale, params=params, **(goal if quantile == 99 else {}),
               description=f"p{quantile} time from update() returning to the first answer computed from the new row")
    record(name=f"online_train_{backend}_samples_per_s", value=online_rate, unit="samples/s", better="higher",
           area=AREA, scale=scale, params=params, description="online trainer throughput while serving")


@pytest.mark.parametrize("backend", BACKENDS)
def test_sizing_for_one_billion_users(benchmark, record, profile, backend):
    rows = profile.pick(quick=20_000, full=200_000)
    inputs = benchmark.pedantic(lambda: sizing_inputs(backend, rows), rounds=1, iterations=1)
    sizing = project(inputs)
    projection = Projection(model="ai_system.recsys.sizing.project: max(memory shards, throughput shards) "
                                  "× (1 + replicas)",
                            inputs={key: value for key, value in asdict(inputs).items()})
    params = {"backend": backend, "users": inputs.users, "dim": 64}
    scale = f"{inputs.users:,} users + {inputs.items:,} items, {inputs.requests_per_s:,.0f} requests/s"
    common = {"area": AREA, "scale": scale, "kind": "projected", "projection": projection, "params": params}
    record(name=f"sizing_1b_{backend}_nodes", value=sizing.nodes, unit="nodes", better="lower",
           question="How many nodes would the store need for 1B users at 1M requests/s?",
           description=f"shards for memory {sizing.shards_for_memory}, for throughput "
                       f"{sizing.shards_for_throughput}; × (1 + {inputs.replicas_per_shard} replica)", **common)
    record(name=f"sizing_1b_{backend}_terabytes", value=sizing.total_bytes / 1e12, unit="TB", better="lower",
           description="rows × measured bytes per stored row (dim 64 + optimizer state + backend overhead)",
           **common)
    record(name=f"sizing_{backend}_bytes_per_row", value=inputs.bytes_per_row, unit="bytes", better="lower", area=AREA,
           scale=f"{rows:,} rows of dim 64 on one shard", params=params,
           description="measured: backend memory growth over rows stored (the projection's input)")
    record(name=f"sizing_{backend}_rows_per_s_per_shard", value=inputs.rows_per_s_per_shard / 1e6, unit="Mrows/s",
           better="higher", area=AREA, scale=f"{rows:,} rows of dim 64 on one shard", params=params,
           description="measured: rows/s one shard serves (embedded: its batched lookups; Redis: "
                       "redis-benchmark pipelined GET, 50 clients), the projection's input")
