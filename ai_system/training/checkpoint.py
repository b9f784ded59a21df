"""Sharded, atomic, verified checkpoints with ``torch.distributed.checkpoint`` (DCP).

Each rank writes only its own shards of the model and optimizer (plus its RNG) into
``step_XXXXXXXX.tmp/``, keyed by the plain model's parameter names whatever the layout (a pipeline
rank's stages contribute their own layers), so DCP can reshard a checkpoint into any other layout.
After every rank has finished, rank 0 adds ``train_meta.json`` (step, scheduler, data position,
shapes), then ``manifest.json``: the size and SHA-256 of every file, hashed by all ranks in
parallel. Both are fsynced before the directory is renamed to ``step_XXXXXXXX``; a rename is
atomic, so a crash mid-save leaves the last good checkpoint untouched and at worst a ``.tmp``
directory the next save clears.

The manifest is what makes a checkpoint trustworthy later: a file truncated, overwritten or with
flipped bits after it was written (a full disk, a bad copy, bit rot) loads without complaint in DCP
and trains on with a different or NaN loss. ``verify_checkpoint`` hashes every file again before
anything is loaded, and ``newest_intact`` gives ``--resume auto`` the newest checkpoint that passes,
with the reason each newer one was skipped; the trainer then ``quarantine``s those.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

from ai_system.distributed.launch import ALONE, Runtime, from_main

PREFIX = "step_"
CHECKPOINT_NAME = re.compile(rf"{PREFIX}(\d+)")
STATE_OPTIONS = StateDictOptions(flatten_optimizer_state_dict=True)
TMP_SUFFIX = ".tmp"
DAMAGED_SUFFIX = ".damaged-"
META_FILE = "train_meta.json"
MANIFEST_FILE = "manifest.json"
MANIFEST_VERSION = 1
HASH_CHUNK_BYTES = 4 << 20


class CheckpointError(ValueError):
    """A checkpoint that cannot be trusted: missing, unfinished or damaged. The message names the file."""


@dataclass(frozen=True)
class Skipped:
    """A checkpoint ``--resume auto`` passed over, and why."""

    path: Path
    reason: str


def checkpoint_dir_for(root: Path, step: int) -> Path:
    return root / f"{PREFIX}{step:08d}"


def complete_checkpoints(root: Path) -> list[Path]:
    """Finished (renamed) checkpoints under ``root``, oldest first; ``.tmp`` and other names are ignored.

    Finished says nothing about intact: ``verify_checkpoint`` says that.
    """
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and CHECKPOINT_NAME.fullmatch(p.name)]
    return sorted(found, key=lambda p: int(CHECKPOINT_NAME.fullmatch(p.name).group(1)))


def _read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path.parent}: expected a directory holding {path.name}")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"checkpoint {path.parent}: {path.name} is not readable {what} ({error})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"checkpoint {path.parent}: {path.name} holds {type(data).__name__}, expected {what}")
    return data


def read_meta(path: Path) -> dict[str, Any]:
    """The run metadata of a checkpoint (not verified: ``verify_checkpoint`` does that)."""
    return _read_json(path / META_FILE, "run metadata (JSON object)")


def file_sha256(path: Path) -> tuple[int, str]:
    """Size in bytes and SHA-256 hex digest of a file, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _hash_files(directory: Path, names: list[str], runtime: Runtime) -> dict[str, dict[str, Any] | str]:
    """Size and SHA-256 of each named file (or why it could not be read), the files split over the
    ranks (rank r hashes ``names[r::world_size]``); every rank gets every answer."""
    mine: dict[str, dict[str, Any] | str] = {}
    for name in names[runtime.rank::runtime.world_size]:
        try:
            size, sha256 = file_sha256(directory / name)
            mine[name] = {"bytes": size, "sha256": sha256}
        except FileNotFoundError:
            mine[name] = "is missing"
        except OSError as error:
            mine[name] = f"is unreadable ({error.strerror or error})"
    if not runtime.distributed:
        return mine
    gathered: list[dict[str, dict[str, Any] | str] | None] = [None] * runtime.world_size
    dist.all_gather_object(gathered, mine)
    return {name: answer for part in gathered for name, answer in part.items()}


def write_manifest(directory: Path, runtime: Runtime = ALONE) -> None:
    """Collective: record the size and SHA-256 of every file in ``directory`` in ``manifest.json`` (fsynced)."""
    names = from_main(runtime, sorted(p.name for p in directory.iterdir() if p.is_file() and p.name != MANIFEST_FILE)
                    if runtime.is_main else None)
    files = _hash_files(directory, names, runtime)
    unreadable = {name: answer for name, answer in files.items() if isinstance(answer, str)}
    if unreadable:
        raise CheckpointError(f"checkpoint {directory}: cannot hash what was just written: {unreadable}")
    if runtime.is_main:
        _write_json_durably(directory / MANIFEST_FILE,
                            {"version": MANIFEST_VERSION, "algorithm": "sha256", "files": files})


def verify_checkpoint(path: Path, runtime: Runtime = ALONE) -> dict[str, Any]:
    """Collective: check every file against the manifest; returns the run metadata, or raises
    ``CheckpointError`` naming each missing, resized or altered file (on every rank alike)."""
    manifest = _read_json(path / MANIFEST_FILE, "checkpoint manifest (JSON object)")
    files = manifest.get("files")
    if manifest.get("algorithm") != "sha256" or not isinstance(files, dict) or not files:
        raise CheckpointError(f"checkpoint {path}: {MANIFEST_FILE} lists no sha256 file checksums")
    actual = _hash_files(path, sorted(files), runtime)
    problems = []
    for name in sorted(files):
        expected, found = files[name], actual[name]
        if isinstance(found, str):
            problems.append(f"{name} {found}")
        elif found["bytes"] != expected.get("bytes"):
            problems.append(f"{name} has {found['bytes']} bytes, the manifest says {expected.get('bytes')} "
                            "(truncated or overwritten)")
        elif found["sha256"] != expected.get("sha256"):
            problems.append(f"{name} does not match its SHA-256 in the manifest (its bytes changed after saving)")
    if problems:
        raise CheckpointError(f"checkpoint {path} is damaged: {'; '.join(problems)}")
    return read_meta(path)


def newest_intact(root: Path, runtime: Runtime = ALONE
                  ) -> tuple[Path | None, dict[str, Any] | None, list[Skipped]]:
    """Collective: the newest checkpoint under ``root`` that verifies and its metadata, and the newer
    ones skipped with the reason; (None, None, skipped) when none does."""
    candidates = from_main(runtime, complete_checkpoints(root) if runtime.is_main else None)
    skipped = []
    for path in reversed(candidates):
        try:
            return path, verify_checkpoint(path, runtime), skipped
        except CheckpointError as error:
            skipped.append(Skipped(path, str(error)))
    return None, None, skipped


def quarantine(path: Path) -> Path:
    """Rename a damaged checkpoint out of the way (``step_N.damaged-<time>``), kept for inspection: it no
    longer counts as a checkpoint, so it can neither be resumed nor push an intact one out of rotation."""
    target = path.with_name(f"{path.name}{DAMAGED_SUFFIX}{time.time_ns()}")
    path.rename(target)
    return target


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
    write_manifest(tmp, runtime)
    if runtime.is_main:
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
                    runtime: Runtime, verified_meta: dict[str, Any]) -> None:
    """Load this rank's shards into ``parts`` and ``optimizers``.

    ``verified_meta`` is what ``verify_checkpoint(path)`` returned: only a verified checkpoint loads.
    DCP reshards on load, so a checkpoint from another world size or layout loads too; the RNG is
    then left as seeded, since its per-rank streams no longer correspond.
    """
    model_state, optim_state, keys = _states(parts, optimizers)
    state: dict[str, Any] = {"model": model_state, "optim": optim_state}
    rng_key = f"rng_rank{runtime.rank}"
    restore_rng = verified_meta["world_size"] == runtime.world_size
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
