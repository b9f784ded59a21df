"""2-D and 3-D parallelism: pipeline × data (FSDP) × tensor parallel on one ``DeviceMesh``.

The mesh is (pp, dp, tp) with tp innermost, so tensor-parallel ranks are neighbours (one node,
fastest links), FSDP spans the next level and pipeline stages the outermost. Each stage module is
wrapped in the order that composes: tensor parallelism first (it replaces weights with DTensors),
then activation checkpointing per block, then ``fully_shard`` per block and at the root, which
shards those DTensors again over the dp dimension.

Pipelined layouts keep the residual stream replicated over tp (no sequence parallelism) and the
logits gathered, so that stages exchange plain tensors and the schedule's loss needs no context.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import fully_shard

from ai_system.models.transformer import Transformer
from ai_system.parallel.tensor_parallel import apply_tensor_parallel

CHECKPOINT_PREFIX = "_checkpoint_wrapped_module."


@dataclass(frozen=True)
class Layout:
    """How a run is split: pp × dp × tp ranks, and how the pipeline and blocks behave."""

    pp: int = 1
    dp: int = 1
    tp: int = 1
    n_microbatches: int = 1
    schedule: str = "1f1b"
    sequence_parallel: bool = True
    checkpoint: bool = False

    def __post_init__(self) -> None:
        for name in ("pp", "dp", "tp", "n_microbatches"):
            if getattr(self, name) < 1:
                raise ValueError(f"Layout.{name} must be >= 1, got {getattr(self, name)}")
        if self.pp > 1 and self.n_microbatches < self.pp:
            raise ValueError(f"a {self.pp}-stage pipeline needs at least {self.pp} micro-batches, "
                             f"got n_microbatches={self.n_microbatches}")

    @property
    def world_size(self) -> int:
        return self.pp * self.dp * self.tp

    @property
    def uses_sequence_parallel(self) -> bool:
        return self.sequence_parallel and self.tp > 1 and self.pp == 1

    @property
    def uses_vocab_parallel_loss(self) -> bool:
        return self.tp > 1 and self.pp == 1

    def label(self) -> str:
        """e.g. ``pp2-dp1-tp2-1f1b``, ``pp1-dp1-tp2-nosp``, ``pp2-dp2-tp1-1f1b-ckpt``."""
        text = f"pp{self.pp}-dp{self.dp}-tp{self.tp}"
        if self.pp > 1:
            text += f"-{self.schedule}"
        if self.tp > 1 and not self.uses_sequence_parallel and self.pp == 1:
            text += "-nosp"
        return text + ("-ckpt" if self.checkpoint else "")


def layout_mesh(layout: Layout, device_type: str = "cpu") -> DeviceMesh:
    """The (pp, dp, tp) mesh over all ranks of the default process group."""
    return init_device_mesh(device_type, (layout.pp, layout.dp, layout.tp), mesh_dim_names=("pp", "dp", "tp"))


def parallelize_stage(model: Transformer, mesh: DeviceMesh, layout: Layout) -> Transformer:
    """Apply TP, then activation checkpointing, then FSDP to one (stage) module, in place."""
    if layout.tp > 1:
        apply_tensor_parallel(model, mesh["tp"], sequence_parallel=layout.uses_sequence_parallel,
                              vocab_parallel_loss=layout.uses_vocab_parallel_loss)
    if layout.checkpoint:
        for name, block in list(model.layers.items()):
            model.layers[name] = checkpoint_wrapper(block)
    if layout.dp > 1:
        for block in model.layers.values():
            fully_shard(block, mesh=mesh["dp"])
        fully_shard(model, mesh=mesh["dp"])
    return model


def unwrapped_name(name: str) -> str:
    """A parameter's name as in the plain model, without activation-checkpoint wrappers."""
    return name.replace(CHECKPOINT_PREFIX, "")
