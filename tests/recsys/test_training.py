"""Training quality against the planted ground truth, metrics, and online writes of changed rows only."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from ai_system.recsys.casestudy import held_out_quality, train_ranking, train_retrieval
from ai_system.recsys.data import interaction_stream, make_world
from ai_system.recsys.embedded import EmbeddedStore
from ai_system.recsys.models import StoreTable, TwoTower
from ai_system.recsys.training import OnlineTrainer, TwoTowerTrainer, auc, recall_at_k, torch_threads


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):
        yield


def test_auc_matches_pairwise_definition():
    rng = np.random.default_rng(0)
    scores, labels = rng.integers(0, 5, 300).astype(float), (rng.random(300) < 0.4).astype(float)
    pos, neg = scores[labels == 1], scores[labels == 0]
    pairwise = ((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean()
    assert auc(scores, labels) == pytest.approx(pairwise)
    with pytest.raises(ValueError, match="both classes"):
        auc(scores, np.ones(300))


def test_recall_at_k_counts_held_out_items_in_top_k():
    users = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    items = torch.tensor([[0.9, 0.1], [0.1, 0.2], [0.5, 0.3]])
    assert recall_at_k(users, items, np.array([2, 0]), 2) == 0.5
    with pytest.raises(ValueError, match="k must be in"):
        recall_at_k(users, items, np.array([2, 0]), 4)


def test_two_tower_recall_approaches_the_ground_truth_model():
    world = make_world(1000, 200, seed=0)
    trainer, _ = train_retrieval(EmbeddedStore(16), EmbeddedStore(16), world, steps=300)
    quality = held_out_quality(trainer, world)
    assert quality.truth_recall > 0.3
    assert quality.ratio > 0.9, quality


def test_dlrm_learns_clicks_above_chance():
    world = make_world(500, 100, seed=0)
    quality, _ = train_ranking(EmbeddedStore(16), EmbeddedStore(16), world, steps=300)
    assert quality.auc > 0.6 and quality.ratio > 0.75, quality


def test_online_trainer_writes_only_the_rows_each_batch_touched():
    world = make_world(300, 50, seed=0)
    users, items = EmbeddedStore(8), EmbeddedStore(8)
    trainer = TwoTowerTrainer(TwoTower(8, hidden=8), StoreTable(users), StoreTable(items), world.item_ids)
    batches = list(itertools.islice(interaction_stream(world, 32, seed=4), 6))
    online = OnlineTrainer(trainer, world, iter(batches))
    assert online.start().join() > 0
    assert online.steps == 6
    expected = sum(len(np.unique(user_rows)) + world.n_items for user_rows, _ in batches)
    assert users.rows_written + items.rows_written == trainer.rows_written == expected
    assert len(users) == len(np.unique(np.concatenate([u for u, _ in batches])))
