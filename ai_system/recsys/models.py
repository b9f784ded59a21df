"""Two-tower retrieval and DLRM-style ranking, with their sparse features read through a store.

The dense parts are ordinary ``nn.Module``s trained by a torch optimizer; the embedding rows live in
an ``EmbeddingStore`` and reach the model through ``StoreTable``: a batch's distinct ids are read
once into a leaf tensor, and after ``backward`` only those rows' gradients are written back (row-wise
Adagrad in the store). This is the split TorchRec and Monolith make between dense and sparse state.
The MLPs run each linear layer and its ReLU as one ``ops.matmul_bias_act`` (a fused kernel when
serving on a GPU, plain torch otherwise).
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from torch import nn

from ai_system import ops
from ai_system.recsys.store import EmbeddingStore, as_ids


class StoreTable:
    """Differentiable reads of store rows; ``step`` pushes the gradients of the rows a batch touched."""

    def __init__(self, store: EmbeddingStore) -> None:
        self.store = store
        self.dim = store.dim
        self.pending: list[tuple[np.ndarray, torch.Tensor]] = []

    def lookup(self, ids: np.ndarray | torch.Tensor) -> torch.Tensor:
        unique, inverse = np.unique(as_ids(ids), return_inverse=True)
        rows = self.read(unique).requires_grad_()
        self.pending.append((unique, rows))
        return rows[torch.from_numpy(inverse)]

    def step(self, lr: float) -> int:
        """Apply and clear the pending gradients; returns how many rows were written."""
        written = 0
        for ids, rows in self.pending:
            grads = rows.grad if rows.grad is not None else torch.zeros_like(rows)
            written += self.write_gradients(ids, grads.numpy(), lr)
        self.pending.clear()
        return written

    def discard(self) -> None:
        """Forget pending rows without writing (after an inference-only forward)."""
        self.pending.clear()

    def read(self, ids: np.ndarray) -> torch.Tensor:
        return self.store.get(ids)

    def write_gradients(self, ids: np.ndarray, grads: np.ndarray, lr: float) -> int:
        return self.store.apply_gradients(ids, grads, lr)


class MLP(nn.Sequential):
    """Linear layers with a ReLU after each but the last (after the last too with ``relu_last``).

    Built as ``nn.Sequential(Linear, ReLU, Linear, ...)``, so parameters keep their usual names
    (``0.weight``, ``2.bias``); the forward runs each Linear with the ReLU that follows it as one op.
    """

    def __init__(self, *sizes: int, relu_last: bool = False) -> None:
        layers: list[nn.Module] = []
        for index, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
            layers.append(nn.Linear(n_in, n_out))
            if relu_last or index < len(sizes) - 2:
                layers.append(nn.ReLU())
        super().__init__(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        modules = list(self)
        for index, module in enumerate(modules):
            if isinstance(module, nn.Linear):
                relu = index + 1 < len(modules) and isinstance(modules[index + 1], nn.ReLU)
                x = ops.matmul_bias_act(x, module.weight, module.bias, "relu" if relu else "none")
        return x


class Tower(nn.Module):
    """``x + MLP(x)``: starts as the identity (plain matrix factorisation) and learns a correction."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.mlp = MLP(dim, hidden, dim)
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.zeros_(self.mlp[2].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(x)


class TwoTower(nn.Module):
    """Retrieval: score(user, item) = user_tower(e_u) · item_tower(e_i)."""

    def __init__(self, dim: int, hidden: int = 64) -> None:
        super().__init__()
        self.user_tower = Tower(dim, hidden)
        self.item_tower = Tower(dim, hidden)

    def forward(self, user_rows: torch.Tensor, item_rows: torch.Tensor) -> torch.Tensor:
        """Logits of every user in the batch against every item row given."""
        return self.user_tower(user_rows) @ self.item_tower(item_rows).T


class DLRM(nn.Module):
    """Ranking in the DLRM shape: bottom MLP on dense features, pairwise dot interactions, top MLP."""

    def __init__(self, dim: int, n_dense: int, n_sparse: int = 2, hidden: int = 64) -> None:
        super().__init__()
        self.bottom = MLP(n_dense, hidden, dim, relu_last=True)
        n_vectors = n_sparse + 1
        self.pairs = torch.triu_indices(n_vectors, n_vectors, offset=1)
        self.top = MLP(dim + self.pairs.shape[1], hidden, 1)

    def forward(self, dense: torch.Tensor, sparse: list[torch.Tensor]) -> torch.Tensor:
        """Click logits, one per row of the batch."""
        bottom = self.bottom(dense)
        vectors = torch.stack([bottom, *sparse], dim=1)
        dots = vectors @ vectors.transpose(1, 2)
        interactions = dots[:, self.pairs[0], self.pairs[1]]
        return self.top(torch.cat([bottom, interactions], dim=1)).squeeze(1)
