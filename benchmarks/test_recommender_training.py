"""Training throughput through the store, and model quality as a ratio to the planted ground truth."""

from __future__ import annotations

import pytest
import torch

from ai_system.recsys.casestudy import RECALL_K, held_out_quality, open_stores, train_ranking, train_retrieval
from ai_system.recsys.data import make_world
from ai_system.recsys.redis_server import MISSING_REDIS, redis_available

AREA = "recommender"


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Small dense layers: one thread avoids oversubscription with the Redis server and the loader."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("backend", ["embedded", "redis"])
def test_train_two_tower(benchmark, record, profile, backend):
    if backend == "redis" and not redis_available():
        pytest.skip(MISSING_REDIS)
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
           better="higher", area=AREA, scale=scale,
           params={**params, "recall": round(quality.recall, 4), "truth_recall": round(quality.truth_recall, 4)},
           description=f"held-out recall@{RECALL_K} of the trained model over that of the generating factors "
                       "(goal ≥ 0.95)")


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
           scale=scale, params={**params, "auc": round(quality.auc, 4), "truth_auc": round(quality.truth_auc, 4)},
           description="held-out AUC over the AUC of the true click probabilities on the same labels")
