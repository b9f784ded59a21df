"""Training → serving: consolidate a DCP checkpoint of any layout into the model-only format.

A DCP checkpoint holds each rank's shards of the model and optimizer under the plain model's
parameter names; DCP reads it into a whole, unsharded model in one process (``no_dist``), whatever
layout wrote it. The export keeps only what inference needs, in ``ai_system.models.pretrained``'s
format: ``model.safetensors``, ``config.json`` and the tokenizer the run trained with, which is what
``ai-system serve --checkpoint DIR`` loads.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp

from ai_system.data.tokenizer import tokenizer_for_vocab
from ai_system.models.config import ModelConfig
from ai_system.models.pretrained import save_pretrained
from ai_system.models.transformer import Transformer
from ai_system.training.checkpoint import verify_checkpoint


def consolidated_state_dict(checkpoint: Path) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """The model config and the whole model's weights stored in a DCP training checkpoint (verified first)."""
    meta = verify_checkpoint(checkpoint)
    config = ModelConfig(**meta["model_config"])
    with torch.device("meta"):
        skeleton = Transformer(config)
    state = {"model": {name: torch.empty(tensor.shape, dtype=tensor.dtype)
                       for name, tensor in skeleton.state_dict().items()}}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load(state, checkpoint_id=checkpoint, no_dist=True)
    return config, state["model"]


def export_checkpoint(checkpoint: Path, directory: Path, dtype: torch.dtype = torch.float32) -> Path:
    """Write the model of a DCP training checkpoint, with its tokenizer, for ``ai-system serve --checkpoint``."""
    config, state_dict = consolidated_state_dict(checkpoint)
    return save_pretrained(directory, config, state_dict, tokenizer_for_vocab(config.vocab_size), dtype)
