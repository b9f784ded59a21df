"""Process group, device mesh and FSDP2 wrapping: the parts of training that know about ranks.

Launched by torchrun (``WORLD_SIZE`` in the environment) the run joins a process group, gloo on
CPU and NCCL on CUDA, and shards the model with FSDP2. Started as a plain ``python`` process it
trains the unsharded model: the reference the sharded run must match step for step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

from ai_system.models.transformer import Transformer


@dataclass(frozen=True)
class Runtime:
    """Where this process runs: its rank among ``world_size`` and its device; ``mesh`` is None unsharded."""

    rank: int
    world_size: int
    device: torch.device
    mesh: DeviceMesh | None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.mesh is not None


def init_runtime() -> Runtime:
    """Join torchrun's process group if launched by it, else run as a single unsharded process.

    torchrun keeps one store across restarts, so the process group's keys are prefixed by the
    restart count: otherwise a restarted rank can read the address a killed peer published and
    fail to connect to it.
    """
    cuda = torch.cuda.is_available()
    if "WORLD_SIZE" not in os.environ:
        return Runtime(rank=0, world_size=1, device=torch.device("cuda" if cuda else "cpu"), mesh=None)
    world_size = int(os.environ["WORLD_SIZE"])
    if cuda:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        store, rank, _ = next(dist.rendezvous("env://"))
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        dist.init_process_group(backend="nccl" if cuda else "gloo", store=dist.PrefixStore(f"attempt{attempt}", store),
                                rank=rank, world_size=world_size, device_id=device if cuda else None)
    mesh = init_device_mesh(device.type, (world_size,), mesh_dim_names=("dp",))
    return Runtime(rank=dist.get_rank(), world_size=world_size, device=device, mesh=mesh)


def shutdown(runtime: Runtime) -> None:
    if runtime.distributed and dist.is_initialized():
        dist.destroy_process_group()


def mixed_precision(param_dtype: str) -> MixedPrecisionPolicy:
    """bf16 parameters and activations with fp32 gradient reduction, or fp32 throughout."""
    if param_dtype == "bfloat16":
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    return MixedPrecisionPolicy(param_dtype=torch.float32, reduce_dtype=torch.float32)


def prepare_model(model: Transformer, runtime: Runtime, param_dtype: str = "float32",
                  activation_checkpointing: bool = False, compile_blocks: bool = False) -> nn.Module:
    """Wrap each block (activation checkpointing, then ``torch.compile``, then ``fully_shard``), then the root.

    Sharding per block lets FSDP all-gather one block's parameters while the previous one
    computes, and frees them after; the root's shard holds the embedding, final norm and head.
    ``Module.compile`` compiles in place, so parameter names (and checkpoints) do not change.
    """
    for name, block in list(model.layers.items()):
        if activation_checkpointing:
            block = checkpoint_wrapper(block)
        if compile_blocks:
            block.compile()
        model.layers[name] = block
    if not runtime.distributed:
        if param_dtype == "bfloat16":
            raise ValueError("param_dtype='bfloat16' needs FSDP's mixed precision: launch with torchrun")
        return model.to(runtime.device)
    policy = mixed_precision(param_dtype)
    for block in model.layers.values():
        fully_shard(block, mesh=runtime.mesh, mp_policy=policy)
    fully_shard(model, mesh=runtime.mesh, mp_policy=policy)
    return model


def set_gradient_sync(model: nn.Module, sync: bool) -> None:
    """Skip the reduce-scatter on all but the last micro-batch of gradient accumulation."""
    if isinstance(model, FSDPModule):
        model.set_requires_gradient_sync(sync)


def all_reduce_mean(value: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    """Sum then divide: gloo has no AVG reduction."""
    if runtime.distributed:
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= runtime.world_size
    return value


def all_reduce_sum(value: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    if runtime.distributed:
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def barrier(runtime: Runtime) -> None:
    if runtime.distributed:
        dist.barrier()
