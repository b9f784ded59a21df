"""The model-only checkpoint: what training exports and ``ai-system serve --checkpoint`` loads.

A directory of three files, and this module is their one definition:

- ``config.json``: ``{"format": "ai-system-pretrained", "format_version": 1, "model": {ModelConfig
  fields}, "dtype": "float32" | "bfloat16" | "float16", "tokenizer": "byte" | "bpe"}``;
- ``model.safetensors``: the full (unsharded) state dict in ``dtype``, tensor names as in
  ``Transformer.state_dict()``; with tied embeddings, ``output.weight`` is left out (it is
  ``tok_embeddings.weight``);
- ``tokenizer.json`` for a BPE tokenizer (Hugging Face format); the byte tokenizer needs only its
  name in ``config.json``.

safetensors holds only tensors, so loading runs no code from the file (unlike a pickle), and its
header (names, shapes, dtypes) can be checked against the config before a byte of weights is read.
Training state (optimizer, data position, sharding) is not here: that is the DCP checkpoint's job.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ai_system.data.tokenizer import BPETokenizer, ByteTokenizer, Tokenizer
from ai_system.models.config import ModelConfig
from ai_system.models.transformer import Transformer

FORMAT = "ai-system-pretrained"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
HEADER_DTYPES = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}
TIED_WEIGHT = "output.weight"


@dataclass(frozen=True)
class PretrainedInfo:
    """A checkpoint directory as read from its config and the weights file's header."""

    directory: Path
    config: ModelConfig
    dtype: torch.dtype
    tokenizer: Tokenizer
    shapes: dict[str, tuple[int, ...]]


def stored_shapes(model: Transformer) -> dict[str, tuple[int, ...]]:
    """Tensor name → shape that ``model.safetensors`` holds for this model (a tied output left out)."""
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()
            if not (model.config.tie_embeddings and name == TIED_WEIGHT)}


def _dtype_name(dtype: torch.dtype) -> str:
    names = {value: name for name, value in DTYPES.items()}
    if dtype not in names:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype}")
    return names[dtype]


def _first(items: list[str], count: int = 5) -> str:
    return "; ".join(items[:count]) + (f"; ... ({len(items)} in all)" if len(items) > count else "")


def _check_shapes(found: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]], config: ModelConfig,
                  source: str) -> None:
    problems = [f"missing {name}" for name in sorted(expected.keys() - found.keys())]
    problems += [f"unexpected {name}" for name in sorted(found.keys() - expected.keys())]
    problems += [f"{name} has shape {found[name]}, expected {expected[name]}"
                 for name in sorted(expected.keys() & found.keys()) if found[name] != expected[name]]
    if problems:
        raise ValueError(f"{source} does not match the model config {config}: {_first(problems)}")


def save_pretrained(directory: str | Path, config: ModelConfig, state_dict: dict[str, torch.Tensor],
                    tokenizer: Tokenizer, dtype: torch.dtype = torch.float32) -> Path:
    """Write ``state_dict`` (full tensors, any device and dtype) as a checkpoint directory in ``dtype``.

    ``config.json`` is written last, so a directory whose save was interrupted has none and is
    refused by ``load_pretrained`` instead of loading half a model.
    """
    directory = Path(directory)
    dtype_name = _dtype_name(dtype)
    if tokenizer.vocab_size != config.vocab_size:
        raise ValueError(f"the tokenizer's vocabulary ({tokenizer.vocab_size}) must equal the model's "
                         f"vocab_size ({config.vocab_size}), so every id the model emits decodes")
    tensors = {name: tensor for name, tensor in state_dict.items()
               if not (config.tie_embeddings and name == TIED_WEIGHT)}
    with torch.device("meta"):
        expected = stored_shapes(Transformer(config))
    _check_shapes({name: tuple(tensor.shape) for name, tensor in tensors.items()}, expected, config, "state_dict")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_FILE).unlink(missing_ok=True)
    save_file({name: tensor.detach().to(device="cpu", dtype=dtype).contiguous() for name, tensor in tensors.items()},
              str(directory / WEIGHTS_FILE), metadata={"format": "pt"})
    if isinstance(tokenizer, BPETokenizer):
        tokenizer.save(directory / TOKENIZER_FILE)
    else:
        (directory / TOKENIZER_FILE).unlink(missing_ok=True)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "model": dataclasses.asdict(config),
            "dtype": dtype_name, "tokenizer": tokenizer.kind}
    (directory / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return directory


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; a checkpoint directory is written by save_pretrained "
                                "(config.json, model.safetensors and, for BPE, tokenizer.json)")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not an {FORMAT} config (its 'format' field is "
                         f"{meta.get('format') if isinstance(meta, dict) else None!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path} has format_version {meta.get('format_version')!r}; this version of ai-system "
                         f"reads format_version {FORMAT_VERSION}")
    return meta


def _load_tokenizer(directory: Path, kind: object) -> Tokenizer:
    if kind == "byte":
        return ByteTokenizer()
    if kind == "bpe":
        return BPETokenizer.load(directory / TOKENIZER_FILE)
    raise ValueError(f"{directory / CONFIG_FILE}: tokenizer must be 'byte' or 'bpe', got {kind!r}")


def inspect_pretrained(directory: str | Path) -> PretrainedInfo:
    """Read a checkpoint directory's config, tokenizer and weights header (no weights); refuse what is
    inconsistent. Tensor names and shapes are checked by ``load_pretrained`` against the model it builds."""
    directory = Path(directory)
    if not directory.is_dir():
        what = "is a file" if directory.exists() else "does not exist"
        raise FileNotFoundError(f"checkpoint directory {directory} {what}; expected a directory written by "
                                "save_pretrained (config.json, model.safetensors)")
    config_path = directory / CONFIG_FILE
    meta = _read_config(config_path)
    try:
        config = ModelConfig(**meta["model"])
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{config_path}: 'model' is not a valid ModelConfig: {error}") from error
    if meta.get("dtype") not in DTYPES:
        raise ValueError(f"{config_path}: dtype must be one of {sorted(DTYPES)}, got {meta.get('dtype')!r}")
    dtype = DTYPES[meta["dtype"]]
    tokenizer = _load_tokenizer(directory, meta.get("tokenizer"))
    if tokenizer.vocab_size != config.vocab_size:
        raise ValueError(f"{directory}: the tokenizer's vocabulary ({tokenizer.vocab_size}) differs from the "
                         f"model's vocab_size ({config.vocab_size})")
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} does not exist; the checkpoint has a config but no weights")
    try:
        with safe_open(str(weights), framework="pt") as handle:
            found = {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}
            dtypes = {handle.get_slice(name).get_dtype() for name in handle.keys()}
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{weights} is not a readable safetensors file: {error}") from error
    if dtypes - {HEADER_DTYPES[meta["dtype"]]}:
        raise ValueError(f"{weights} holds {sorted(dtypes)} tensors but {config_path} says {meta['dtype']}")
    return PretrainedInfo(directory, config, dtype, tokenizer, found)


def load_pretrained(directory: str | Path, device: str | torch.device = "cpu",
                    dtype: torch.dtype | None = None) -> tuple[Transformer, Tokenizer]:
    """The model (in ``dtype``, default the stored one, in eval mode, on ``device``) and its tokenizer."""
    info = inspect_pretrained(directory)
    if dtype is not None:
        _dtype_name(dtype)
    with torch.device(device):
        model = Transformer(info.config)
    _check_shapes(info.shapes, stored_shapes(model), info.config, str(info.directory / WEIGHTS_FILE))
    try:
        tensors = load_file(str(info.directory / WEIGHTS_FILE), device=str(device))
    except SafetensorError as error:
        raise ValueError(f"{info.directory / WEIGHTS_FILE} is not a readable safetensors file: {error}") from error
    model.load_state_dict(tensors, strict=not info.config.tie_embeddings)
    return model.to(dtype or info.dtype).eval(), info.tokenizer
