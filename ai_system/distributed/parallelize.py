"""``parallelize``: turn one (stage) module of the transformer into its share of a layout.

The order matters and is the same for every layout:

1. **Tensor (and sequence) parallelism** first: it replaces weights with DTensors sharded over the
   tp axis, which FSDP later shards again over dp (a 2-D DTensor), and its collectives must sit
   inside the blocks that step 2 checkpoints.
2. **Activation checkpointing** per block, so a recomputed block replays its TP collectives too.
3. **torch.compile** per block (regional compilation): small graphs that compile once and are
   reused by every block, with the checkpoint inside the compiled region.
4. **FSDP2** (``fully_shard``) per block, then at the root: per-block units let one block's
   all-gather run while the previous one computes and free its parameters after; the root unit
   holds the embedding, final norm and head. Its mixed-precision policy casts parameters to the
   compute dtype after gathering and reduces gradients in fp32. Each unit starts the next one's
   all-gather in forward as soon as its own parameters are there (``prefetch_all_gathers``), and
   the last block keeps its parameters through the backward, which needs them first.

A pipeline cuts the model into stages before any of this (``pipeline.stage_module``), and each
stage is parallelized on its own. Parameter names do not change (``Module.compile`` compiles in
place; checkpoint wrappers are dropped from state-dict keys), so a checkpoint of one layout loads
into any other.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

from ai_system.distributed.layout import Layout
from ai_system.distributed.tensor_parallel import apply_tensor_parallel
from ai_system.models.transformer import Transformer

PARAM_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
CHECKPOINT_PREFIX = "_checkpoint_wrapped_module."

SAVED_BY_SELECTIVE_RECOMPUTE = {
    torch.ops.aten.mm.default,
    torch.ops.aten.addmm.default,
    torch.ops.aten._scaled_dot_product_flash_attention.default,
    torch.ops.aten._scaled_dot_product_efficient_attention.default,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default,
}
"""Selective recomputation keeps what is costly to redo, the matmul and attention outputs, and
recomputes the cheap, activation-heavy rest of a block: norms, rotary embedding, SwiGLU gating,
residual adds (the op-level policy torchtitan calls selective AC)."""


def _selective_policy(_context: object, op: object, *args: object, **kwargs: object) -> CheckpointPolicy:
    return CheckpointPolicy.MUST_SAVE if op in SAVED_BY_SELECTIVE_RECOMPUTE else CheckpointPolicy.PREFER_RECOMPUTE


def mixed_precision(param_dtype: str) -> MixedPrecisionPolicy:
    """Parameters and activations in ``param_dtype`` once gathered; gradients reduced in fp32."""
    if param_dtype not in PARAM_DTYPES:
        raise ValueError(f"param_dtype must be one of {sorted(PARAM_DTYPES)}, got {param_dtype!r}")
    return MixedPrecisionPolicy(param_dtype=PARAM_DTYPES[param_dtype], reduce_dtype=torch.float32)


def dp_mesh(mesh: DeviceMesh, layout: Layout) -> DeviceMesh:
    """The mesh FSDP shards over: (dp, 1) replicate × shard for zero=0, else the dp_shard axis."""
    return mesh["dp_replicate", "dp_shard"] if layout.zero == 0 else mesh["dp_shard"]


def parallelize(model: Transformer, mesh: DeviceMesh | None, layout: Layout, param_dtype: str = "float32",
                compile_blocks: bool = False) -> Transformer:
    """Apply TP/SP → activation checkpointing → compile → FSDP2 to ``model`` in place (see the module doc).

    ``mesh`` is None for a single process without a process group: only checkpointing and
    compilation apply, and the parameters stay fp32 (mixed precision is FSDP's policy).
    """
    if layout.tp > 1:
        if mesh is None:
            raise ValueError(f"layout {layout} needs a process group of {layout.world_size} ranks")
        apply_tensor_parallel(model, mesh["tp"], sequence_parallel=layout.uses_sequence_parallel,
                              vocab_parallel_loss=layout.uses_vocab_parallel_loss)
    for name, block in list(model.layers.items()):
        if layout.recompute == "full":
            block = checkpoint_wrapper(block)
        elif layout.recompute == "selective":
            block = checkpoint_wrapper(block, context_fn=partial(create_selective_checkpoint_contexts,
                                                                 _selective_policy))
        if compile_blocks:
            block.compile()
        model.layers[name] = block
    if mesh is None:
        if param_dtype != "float32":
            raise ValueError(f"param_dtype={param_dtype!r} needs FSDP's mixed precision: run under a process "
                             "group (ai-system train starts one for any layout of more than one rank)")
        return model
    if layout.dp > 1 or param_dtype != "float32":
        shard_mesh = dp_mesh(mesh, layout)
        policy = mixed_precision(param_dtype)
        reshard = layout.zero == 3
        blocks = list(model.layers.values())
        for index, block in enumerate(blocks):
            fully_shard(block, mesh=shard_mesh, mp_policy=policy,
                        reshard_after_forward=reshard and index < len(blocks) - 1)
        fully_shard(model, mesh=shard_mesh, mp_policy=policy, reshard_after_forward=reshard)
        prefetch_all_gathers(model, mesh.device_type)
    return model


def prefetch_all_gathers(model: Transformer, device_type: str) -> None:
    """Have every FSDP unit start the next unit's all-gather in forward once its own is done.

    On a GPU, FSDP2 overlaps collectives with compute on separate CUDA streams, and the explicit
    forward prefetch only issues the next all-gather a little earlier. A CPU has no streams: a
    collective issued without ``async_op`` blocks the calling thread until its bytes have arrived,
    so without this every all-gather sits on the critical path. There the unshards are issued
    asynchronously (gloo moves the bytes on its own threads, and FSDP waits for them just before
    copying them out), so block i+1's parameters travel while block i computes, in forward and,
    through FSDP's default backward prefetch, in backward.
    """
    units = [model, *model.layers.values()]
    for unit, following in zip(units, units[1:], strict=False):
        unit.set_modules_to_forward_prefetch([following])
    if device_type == "cpu":
        model._set_unshard_async_op(True)


def set_gradient_sync(module: nn.Module, sync: bool) -> None:
    """Skip FSDP's gradient reduction on all but the last micro-batch of gradient accumulation."""
    if isinstance(module, FSDPModule):
        module.set_requires_gradient_sync(sync)


def unwrapped_name(name: str) -> str:
    """A parameter's name as in the plain model, without activation-checkpoint wrappers."""
    return name.replace(CHECKPOINT_PREFIX, "")
