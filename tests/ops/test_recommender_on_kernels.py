"""The recommender on the kernels: its MLPs run each Linear + ReLU as one fused matmul, and retrieval
(serving's top-k and the recall metric) runs the fused similarity top-k, with the answers of the
plain modules. The recommender keeps its tensors on the CPU, so this runs in the interpreter only.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ai_system.recsys.data import make_world
from ai_system.recsys.embedded import EmbeddedStore
from ai_system.recsys.models import DLRM, MLP, TwoTower
from ai_system.recsys.serving import Recommender
from ai_system.recsys.training import recall_at_k

DIM = 8


@pytest.fixture(autouse=True)
def on_the_cpu(kernels: str) -> None:
    if kernels != "cpu":
        pytest.skip("the recommender keeps its tensors on the CPU; on a GPU machine its ops take the reference")
    torch.manual_seed(0)


def test_mlps_fuse_each_linear_with_its_relu(launches, close):
    tower_mlp = TwoTower(DIM, hidden=16).user_tower.mlp
    model = DLRM(DIM, n_dense=4, hidden=16)
    for mlp, x in ((tower_mlp, torch.randn(5, DIM)), (model.bottom, torch.randn(5, 4)),
                   (model.top, torch.randn(5, DIM + model.pairs.shape[1]))):
        nn.init.normal_(mlp[-1].weight if isinstance(mlp[-1], nn.Linear) else mlp[-2].weight)
        before = launches["_matmul_kernel"]
        with torch.no_grad():
            fused = mlp(x)
            module_by_module = nn.Sequential.forward(mlp, x)
        assert launches["_matmul_kernel"] - before == sum(isinstance(m, nn.Linear) for m in mlp)
        close(fused, module_by_module, torch.float32)
    assert isinstance(model.bottom, MLP) and isinstance(model.bottom[-1], nn.ReLU)


def test_retrieval_runs_the_similarity_topk_kernel(launches):
    world = make_world(20, 40, seed=0)
    users, items = EmbeddedStore(DIM), EmbeddedStore(DIM)
    items.get(world.item_ids)
    users.get(world.user_ids[:3])
    recommender = Recommender(TwoTower(DIM, hidden=16), users, items, world.item_ids)
    recommender.refresh_items()
    row = users.get(world.user_ids[:1], create=False)
    found, scores = recommender.top_k(row, 7)
    assert launches["_similarity_topk_kernel"] == 1
    with torch.no_grad():
        expected = recommender.model.user_tower(row) @ recommender.item_vectors.T
    assert found == world.item_ids[expected[0].topk(7).indices.numpy()].tolist()
    torch.testing.assert_close(torch.tensor(scores), expected[0].topk(7).values)
    held_out = expected.argmax(1).numpy()
    assert recall_at_k(recommender.model.user_tower(row).detach(), recommender.item_vectors, held_out, 1) == 1.0
    assert launches["_similarity_topk_kernel"] == 2
    assert recall_at_k(torch.eye(3), torch.eye(3), np.array([1, 1, 1]), 1) == pytest.approx(1 / 3)
