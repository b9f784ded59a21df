"""Row-wise sharded training over gloo ranks equals one process training on the global batch."""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

from ai_system.distributed.launch import run_distributed
from ai_system.recsys.data import make_world, sample_interactions
from ai_system.recsys.embedded import EmbeddedStore
from ai_system.recsys.models import StoreTable, TwoTower
from ai_system.recsys.sharded import ShardedTable, all_reduce_gradients
from ai_system.recsys.training import TwoTowerTrainer

DIM, STEPS, GLOBAL_BATCH = 8, 5, 60


def batches() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(3)
    return [sample_interactions(make_world(200, 40, seed=1), GLOBAL_BATCH, rng) for _ in range(STEPS)]


def make_trainer(users: StoreTable, items: StoreTable, reduce_dense=None) -> TwoTowerTrainer:
    torch.manual_seed(0)
    world = make_world(200, 40, seed=1)
    extra = {} if reduce_dense is None else {"reduce_dense": reduce_dense}
    return TwoTowerTrainer(TwoTower(DIM, hidden=16), users, items, world.item_ids, lr_dense=0.1,
                           dense_optimizer="sgd", **extra)


def rank_main() -> list[dict]:
    """Train on this rank's slice of every batch; every rank's rows and dense weights, gathered."""
    rank, world_size = dist.get_rank(), dist.get_world_size()
    trainer = make_trainer(ShardedTable(DIM), ShardedTable(DIM), all_reduce_gradients)
    world = make_world(200, 40, seed=1)
    per_rank = GLOBAL_BATCH // world_size
    for users, items in batches():
        mine = slice(rank * per_rank, (rank + 1) * per_rank)
        trainer.step(world.user_ids[users[mine]], items[mine], normalizer=GLOBAL_BATCH)
    rows = {}
    for name, table in (("users", trainer.users), ("items", trainer.items)):
        ids = table.store.table.ids[0]
        rows[name] = dict(zip(ids.tolist(), table.store.get(ids), strict=True))
    dumps: list[dict] = [{}] * world_size
    dist.all_gather_object(dumps, {"rows": rows, "model": trainer.model.state_dict()})
    return dumps


def test_sharded_two_tower_equals_unsharded(world_size=3):
    dumps = run_distributed(rank_main, world_size)
    reference = make_trainer(StoreTable(EmbeddedStore(DIM)), StoreTable(EmbeddedStore(DIM)))
    world = make_world(200, 40, seed=1)
    for users, items in batches():
        reference.step(world.user_ids[users], items)

    for name, table in (("users", reference.users), ("items", reference.items)):
        sharded = {k: v for dump in dumps for k, v in dump["rows"][name].items()}
        owned = [set(dump["rows"][name]) for dump in dumps]
        assert sum(map(len, owned)) == len(set().union(*owned)), "a row lives on two ranks"
        ids = np.array(sorted(sharded))
        assert len(ids) == len(table.store)
        torch.testing.assert_close(torch.stack([sharded[i] for i in ids.tolist()]), table.store.get(ids),
                                   atol=1e-5, rtol=1e-4)
    for dump in dumps:
        torch.testing.assert_close(dump["model"], reference.model.state_dict(), atol=1e-5, rtol=1e-4)
