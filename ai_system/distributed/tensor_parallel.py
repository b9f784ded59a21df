"""Megatron-style tensor parallelism of the shared transformer, declared as a DTensor plan.

Per block, wq/wk/wv and w1/w3 are split by output features (column-parallel: each rank owns whole
heads and a slice of the SwiGLU width) and wo/w2 by input features (row-parallel), so each block
costs one all-reduce in attention and one in the MLP, forward and backward
(``tensor_parallel_explicit.py`` writes those collectives out by hand).

With sequence parallelism the all-reduce becomes reduce-scatter + all-gather: the residual stream
and the RMSNorms between the parallel regions hold only seq/tp tokens per rank. The embedding is
split by vocabulary rows and the output head by vocabulary columns; ``vocab_parallel_cross_entropy``
computes the loss on vocabulary-sharded logits without gathering them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor, Replicate, Shard
from torch.distributed.tensor.parallel import (
    ColwiseParallel,
    ParallelStyle,
    PrepareModuleInput,
    RowwiseParallel,
    SequenceParallel,
    loss_parallel,
    parallelize_module,
)

from ai_system.models.transformer import Transformer

ATTENTION_ARGS = 6
"""Attention.forward takes (x, cos, sin, positions, mask, lengths); only x changes layout."""


def block_plan(sequence_parallel: bool) -> dict[str, ParallelStyle]:
    """The plan for one TransformerBlock, keyed by submodule path."""
    residual = Shard(1) if sequence_parallel else Replicate()
    plan: dict[str, ParallelStyle] = {
        "attention.wq": ColwiseParallel(),
        "attention.wk": ColwiseParallel(),
        "attention.wv": ColwiseParallel(),
        "attention.wo": RowwiseParallel(output_layouts=residual, use_local_output=not sequence_parallel),
        "feed_forward.w1": ColwiseParallel(),
        "feed_forward.w3": ColwiseParallel(),
        "feed_forward.w2": RowwiseParallel(output_layouts=residual, use_local_output=not sequence_parallel),
    }
    if sequence_parallel:
        others = (None,) * (ATTENTION_ARGS - 1)
        plan.update({
            "attention_norm": SequenceParallel(),
            "ffn_norm": SequenceParallel(),
            "attention": PrepareModuleInput(input_layouts=(Shard(1),) + others,
                                            desired_input_layouts=(Replicate(),) + others,
                                            use_local_output=True),
            "feed_forward": PrepareModuleInput(input_layouts=(Shard(1),),
                                               desired_input_layouts=(Replicate(),), use_local_output=True),
        })
    return plan


def model_plan(model: Transformer, sequence_parallel: bool,
               vocab_parallel_loss: bool) -> dict[str, ParallelStyle]:
    """The plan for the embedding, final norm and output head this stage owns."""
    residual = Shard(1) if sequence_parallel else Replicate()
    plan: dict[str, ParallelStyle] = {}
    if model.tok_embeddings is not None:
        plan["tok_embeddings"] = RowwiseParallel(input_layouts=Replicate(), output_layouts=residual,
                                                 use_local_output=not sequence_parallel)
    if model.norm is not None and sequence_parallel:
        plan["norm"] = SequenceParallel()
    if model.output is not None:
        plan["output"] = ColwiseParallel(input_layouts=residual,
                                         output_layouts=Shard(-1) if vocab_parallel_loss else Replicate(),
                                         use_local_output=not vocab_parallel_loss)
    return plan


def apply_tensor_parallel(model: Transformer, tp_mesh: DeviceMesh, sequence_parallel: bool = True,
                          vocab_parallel_loss: bool = True) -> Transformer:
    """Shard ``model`` in place over the 1-D ``tp_mesh``.

    With ``vocab_parallel_loss`` the logits come back as a DTensor sharded over the vocabulary;
    compute the loss with ``vocab_parallel_cross_entropy``. A pipeline stage (embedding, norm or
    head set to None) gets only the parts it owns. Sequence parallelism requires the sequence length
    to be a multiple of the mesh size.
    """
    if tp_mesh.ndim != 1:
        raise ValueError(f"tensor parallelism needs a 1-D mesh, got {tp_mesh.ndim} dims: {tp_mesh}")
    size = tp_mesh.size()
    config = model.config
    for name, count in (("n_heads", config.n_heads), ("n_kv_heads", config.kv_heads),
                        ("hidden_dim", config.hidden_dim), ("vocab_size", config.vocab_size)):
        if count % size:
            raise ValueError(f"{name}={count} must be divisible by the tensor-parallel size {size}")
    if config.tie_embeddings:
        raise ValueError("tensor parallelism here shards embedding rows and head columns separately; "
                         "tie_embeddings=True is not supported")
    for block in model.layers.values():
        parallelize_module(block, tp_mesh, block_plan(sequence_parallel))
    parallelize_module(model, tp_mesh, model_plan(model, sequence_parallel, vocab_parallel_loss))
    return model


def vocab_parallel_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy; vocabulary-sharded DTensor logits never get gathered.

    Call ``.backward()`` on the result inside ``loss_parallel()`` too (``backward_vocab_parallel``).
    """
    flat_logits, flat_targets = logits.flatten(0, 1), targets.flatten()
    if isinstance(logits, DTensor):
        with loss_parallel():
            return F.cross_entropy(flat_logits, flat_targets)
    return F.cross_entropy(flat_logits, flat_targets)


def backward_vocab_parallel(loss: torch.Tensor) -> None:
    """Backward of a loss from ``vocab_parallel_cross_entropy`` (the parallel loss needs its context)."""
    with loss_parallel():
        loss.backward()
