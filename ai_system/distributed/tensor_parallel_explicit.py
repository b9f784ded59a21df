"""Tensor parallelism written out with plain collectives: what the DTensor plan does, by hand.

Megatron-LM (Shoeybi et al., 2019, §3) splits each block into two parallel regions. Entering one is
``f``: identity forward, all-reduce of the input gradient backward. Leaving it is ``g``: all-reduce
of the partial outputs forward, identity backward. Inside, a rank runs the ordinary Attention or
FeedForward module on its slice of the weights: whole heads (rows of wq/wk/wv, columns of wo) and
a slice of the SwiGLU width (rows of w1/w3, columns of w2). That is two all-reduces per block
forward and two backward; embedding, norms and head stay replicated here.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from ai_system.models.transformer import Transformer


class _EnterParallelRegion(torch.autograd.Function):
    """Megatron's ``f``: every rank already has the input; their input gradients are partial sums."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
        ctx.group = group
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        grad = grad.contiguous()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


class _LeaveParallelRegion(torch.autograd.Function):
    """Megatron's ``g``: sum the partial outputs; the gradient of a sum reaches every rank as is."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
        x = x.contiguous()
        dist.all_reduce(x, group=group)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


class ParallelRegion(nn.Module):
    """Wraps a module that holds this rank's weight slices between ``f`` and ``g``."""

    def __init__(self, inner: nn.Module, group: dist.ProcessGroup) -> None:
        super().__init__()
        self.inner = inner
        self.group = group

    def forward(self, x: torch.Tensor, *args: torch.Tensor | None) -> torch.Tensor:
        partial = self.inner(_EnterParallelRegion.apply(x, self.group), *args)
        return _LeaveParallelRegion.apply(partial, self.group)


def _keep_slice(linear: nn.Linear, dim: int, rank: int, size: int) -> None:
    """Keep this rank's contiguous ``1/size`` of the weight along ``dim`` (0: outputs, 1: inputs)."""
    piece = linear.weight.detach().chunk(size, dim=dim)[rank].clone()
    linear.weight = nn.Parameter(piece)
    linear.out_features, linear.in_features = piece.shape


def shard_explicitly(model: Transformer, group: dist.ProcessGroup | None = None) -> Transformer:
    """Slice every block's weights for this rank and wrap attention and MLP in parallel regions."""
    group = group or dist.group.WORLD
    rank, size = dist.get_rank(group), dist.get_world_size(group)
    config = model.config
    if config.n_heads % size or config.kv_heads % size or config.hidden_dim % size:
        raise ValueError(f"heads={config.n_heads}, kv_heads={config.kv_heads} and "
                         f"hidden_dim={config.hidden_dim} must all be divisible by TP size {size}")
    for block in model.layers.values():
        attention, mlp = block.attention, block.feed_forward
        for column_parallel in (attention.wq, attention.wk, attention.wv, mlp.w1, mlp.w3):
            _keep_slice(column_parallel, 0, rank, size)
        for row_parallel in (attention.wo, mlp.w2):
            _keep_slice(row_parallel, 1, rank, size)
        block.attention = ParallelRegion(attention, group)
        block.feed_forward = ParallelRegion(mlp, group)
    return model
