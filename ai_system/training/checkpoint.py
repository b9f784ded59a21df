"""Sharded, atomic checkpoints with ``torch.distributed.checkpoint`` (DCP).

Each rank writes only its own shards of the model and optimizer (plus its RNG) into
``step_XXXXXXXX.tmp/``, keyed by the plain model's parameter names whatever the layout (a pipeline
rank's stages contribute their own layers), so DCP can reshard a checkpoint into any other layout.
After every rank has finished, rank 0 adds ``train_meta.json`` (step, scheduler, data position,
shapes) and renames the directory to ``step_XXXXXXXX``. A rename is
atomic, and a checkpoint counts only once its metadata file exists, so a crash mid-save leaves
the last good checkpoint untouched and at worst a ``.tmp`` directory the next save clears.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

from ai_system.distributed.launch import Runtime

PREFIX = "step_"
STATE_OPTIONS = StateDictOptions(flatten_optimizer_state_dict=True)
TMP_SUFFIX = ".tmp"
META_FILE = "train_meta.json"


def checkpoint_dir_for(root: Path, step: int) -> Path:
    return root / f"{PREFIX}{step:08d}"


def complete_checkpoints(root: Path) -> list[Path]:
    """Finished checkpoints under ``root``, oldest first; half-written ``.tmp`` ones are ignored."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir()
             if p.is_dir() and p.name.startswith(PREFIX) and not p.name.endswith(TMP_SUFFIX)
             and (p / META_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def latest_checkpoint(root: Path) -> Path | None:
    found = complete_checkpoints(root)
    return found[-1] if found else None


def read_meta(path: Path) -> dict[str, Any]:
    meta_file = path / META_FILE
    if not meta_file.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}: expected a directory holding {META_FILE}")
    return json.loads(meta_file.read_text())


def _rng_state() -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"])


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json_durably(path: Path, data: dict[str, Any]) -> None:
    with path.open("w") as handle:
        json.dump(data, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())


def _barrier(runtime: Runtime) -> None:
    if runtime.distributed:
        dist.barrier()


def _states(parts: list[nn.Module], optimizers: list[torch.optim.Optimizer]
            ) -> tuple[dict[str, Any], dict[str, Any], list[tuple[set[str], set[str]]]]:
    """Model and optimizer state of all parts merged under plain parameter names, and each part's keys."""
    model_state: dict[str, Any] = {}
    optim_state: dict[str, Any] = {}
    keys = []
    for part, optimizer in zip(parts, optimizers, strict=True):
        part_model, part_optim = get_state_dict(part, optimizer, options=STATE_OPTIONS)
        model_state.update(part_model)
        optim_state.update(part_optim)
        keys.append((set(part_model), set(part_optim)))
    return model_state, optim_state, keys


def save_checkpoint(root: Path, step: int, parts: list[nn.Module], optimizers: list[torch.optim.Optimizer],
                    runtime: Runtime, meta: dict[str, Any], keep: int) -> Path:
    """Collective: every rank must call it. Returns the finished checkpoint directory."""
    final = checkpoint_dir_for(root, step)
    tmp = final.with_name(final.name + TMP_SUFFIX)
    if runtime.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    _barrier(runtime)
    model_state, optim_state, _ = _states(parts, optimizers)
    state = {"model": model_state, "optim": optim_state, f"rng_rank{runtime.rank}": _rng_state()}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.save(state, checkpoint_id=tmp, no_dist=not runtime.distributed)
    if runtime.is_main:
        _write_json_durably(tmp / META_FILE, {**meta, "step": step, "world_size": runtime.world_size})
        _fsync_dir(tmp)
        replaced = final.with_name(final.name + ".old")
        if final.exists():
            final.rename(replaced)
        tmp.rename(final)
        _fsync_dir(root)
        shutil.rmtree(replaced, ignore_errors=True)
        for old in complete_checkpoints(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    _barrier(runtime)
    return final


def load_checkpoint(path: Path, parts: list[nn.Module], optimizers: list[torch.optim.Optimizer],
                    runtime: Runtime) -> dict[str, Any]:
    """Load this rank's shards into ``parts`` and ``optimizers``; returns the checkpoint's metadata.

    DCP reshards on load, so a checkpoint from another world size or layout loads too; the RNG is
    then left as seeded, since its per-rank streams no longer correspond.
    """
    meta = read_meta(path)
    model_state, optim_state, keys = _states(parts, optimizers)
    state: dict[str, Any] = {"model": model_state, "optim": optim_state}
    rng_key = f"rng_rank{runtime.rank}"
    restore_rng = meta["world_size"] == runtime.world_size
    if restore_rng:
        state[rng_key] = _rng_state()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load(state, checkpoint_id=path, no_dist=not runtime.distributed)
    for part, optimizer, (model_keys, optim_keys) in zip(parts, optimizers, keys, strict=True):
        set_state_dict(part, optimizer, options=STATE_OPTIONS,
                       model_state_dict={k: v for k, v in state["model"].items() if k in model_keys},
                       optim_state_dict={k: v for k, v in state["optim"].items() if k in optim_keys})
    if restore_rng:
        _set_rng_state(state[rng_key])
    return meta
