"""Row-wise sharded embedding tables over ``torch.distributed`` ranks, exchanged by all-to-all.

Rank ``r`` owns the ids with ``shard_of(id, world) == r`` (hash-slot ranges, as the stores place
rows) in a local ``EmbeddedStore``. A lookup sends each distinct id to its owner (one all-to-all of
counts, one of ids), owners answer with rows (one all-to-all back), and after ``backward`` the row
gradients travel the same route to their owners, which sum them across ranks and apply one
Adagrad step, exactly what one process would do for the global batch. This is TorchRec's row-wise
sharding in its plainest form (no pooling, no pipelining). Gloo on CPU, NCCL on GPU.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ai_system.recsys.embedded import EmbeddedStore
from ai_system.recsys.models import StoreTable
from ai_system.recsys.store import shard_of


def all_to_all(tensor: torch.Tensor, send_counts: list[int], recv_counts: list[int]) -> torch.Tensor:
    out = tensor.new_empty((sum(recv_counts), *tensor.shape[1:]))
    dist.all_to_all_single(out, tensor.contiguous(), output_split_sizes=recv_counts, input_split_sizes=send_counts)
    return out


class ShardedTable(StoreTable):
    """A ``StoreTable`` whose rows live on the rank that owns them; every rank must call it in step."""

    def __init__(self, dim: int, init_scale: float = 0.05) -> None:
        if not dist.is_initialized():
            raise RuntimeError("ShardedTable needs torch.distributed initialised (init_process_group first)")
        super().__init__(EmbeddedStore(dim, n_shards=1, init_scale=init_scale))
        self.world = dist.get_world_size()
        self.rank = dist.get_rank()
        self._routes: dict[int, tuple[np.ndarray, list[int], list[int], torch.Tensor]] = {}

    def _route(self, ids: np.ndarray) -> tuple[np.ndarray, list[int], list[int], torch.Tensor]:
        """Send ids to their owners; returns (order sent, send counts, receive counts, ids received)."""
        owner = shard_of(ids, self.world)
        order = np.argsort(owner, kind="stable")
        send = torch.from_numpy(np.bincount(owner, minlength=self.world).astype(np.int64))
        recv = torch.empty_like(send)
        dist.all_to_all_single(recv, send)
        send_counts, recv_counts = send.tolist(), recv.tolist()
        received = all_to_all(torch.from_numpy(ids[order]), send_counts, recv_counts)
        return order, send_counts, recv_counts, received

    def read(self, ids: np.ndarray) -> torch.Tensor:
        order, send_counts, recv_counts, received = route = self._route(ids)
        self._routes[id(ids)] = route
        answered = all_to_all(self.store.get(received), recv_counts, send_counts)
        rows = torch.empty_like(answered)
        rows[torch.from_numpy(order)] = answered
        return rows

    def discard(self) -> None:
        super().discard()
        self._routes.clear()

    def write_gradients(self, ids: np.ndarray, grads: np.ndarray, lr: float) -> int:
        order, send_counts, recv_counts, received = self._routes.pop(id(ids))
        arrived = all_to_all(torch.from_numpy(grads[order]), send_counts, recv_counts)
        return self.store.apply_gradients(received, arrived, lr)


def all_reduce_gradients(model: nn.Module) -> None:
    """Sum dense gradients over ranks (losses are already divided by the global batch)."""
    for parameter in model.parameters():
        if parameter.grad is not None:
            dist.all_reduce(parameter.grad)
