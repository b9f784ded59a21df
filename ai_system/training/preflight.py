"""What a run can be refused for, found before any model is built: a bad run fails in seconds, in one line.

``TrainConfig`` checks its own values; this module checks what the filesystem and the checkpoints
answer. The output paths (checkpoint, export and profile directories, metrics log) must be writable
now, not after the last step has trained. The checkpoint to resume from must be intact (every file
matches the SHA-256 in its manifest) and written for this model, data and step budget. ``--resume
auto`` takes the newest intact checkpoint and reports each newer one it skipped, with the reason;
if checkpoints exist and none is intact, the run is refused rather than silently restarted from
step 0.

``preflight`` runs on every rank at the start of ``train`` (a collective: the ranks reach one
verdict), and ``ai-system train`` runs the same checks once on its own before it starts torchrun.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ai_system.distributed.launch import Runtime, decided_on_main
from ai_system.training.checkpoint import CheckpointError, Skipped, newest_intact, verify_checkpoint
from ai_system.training.config import TrainConfig

# Fields of a checkpoint's TrainConfig that must match for its data position to mean the same samples.
DATA_FIELDS = ("dataset", "seq_len", "seed")


class RunRefused(ValueError):
    """A run that cannot start as configured; the message is one line naming the bad value and what was expected."""


@dataclass(frozen=True)
class ResumePoint:
    """The verified checkpoint a run continues from, its metadata, and the newer checkpoints skipped."""

    path: Path
    meta: dict[str, Any]
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def step(self) -> int:
        return int(self.meta["step"])


def check_writable_directory(path: Path, option: str) -> None:
    """Create ``path`` if needed and prove a file can be created in it; raise naming ``option`` if not."""
    if path.exists() and not path.is_dir():
        raise RunRefused(f"{option} {str(path)!r} is a file; expected a directory to write into")
    try:
        path.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".write-probe-", dir=path)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise RunRefused(f"{option} {str(path)!r} is not writable: {error.strerror or error}") from None


def check_output_paths(config: TrainConfig) -> None:
    """The checkpoint, export and profile directories and the metrics log can all be written."""
    if config.export_dir is not None:
        check_writable_directory(Path(config.export_dir), "export_dir")
    if config.checkpoint_path is not None:
        check_writable_directory(config.checkpoint_path, "checkpoint_dir")
    if config.profile_dir is not None:
        check_writable_directory(Path(config.profile_dir), "profile_dir")
    if config.log_file is not None:
        log_file = Path(config.log_file)
        if log_file.is_dir():
            raise RunRefused(f"log_file {config.log_file!r} is a directory; expected a file to append to")
        check_writable_directory(log_file.parent, "log_file's directory")
        try:
            log_file.open("a").close()
        except OSError as error:
            raise RunRefused(f"log_file {config.log_file!r} cannot be appended to: {error.strerror or error}") from None


def check_resumable(meta: dict[str, Any], config: TrainConfig, path: Path) -> None:
    """A checkpoint continues this run only if it holds this model, reads the same samples and is not past the end."""
    model_config = asdict(config.model_config())
    if meta.get("model_config") != model_config:
        raise RunRefused(f"checkpoint {path} holds a model of shape {meta.get('model_config')}, "
                         f"but this run builds {model_config}")
    saved = meta.get("train_config", {})
    for name in DATA_FIELDS:
        if name in saved and saved[name] != getattr(config, name):
            raise RunRefused(f"checkpoint {path} was trained with {name}={saved[name]!r}, this run has "
                             f"{name}={getattr(config, name)!r}; its data position would point at other samples")
    if meta.get("step", 0) > config.steps:
        raise RunRefused(f"checkpoint {path} is at step {meta['step']}, past this run's steps={config.steps}")


def resume_point(config: TrainConfig, runtime: Runtime) -> ResumePoint | None:
    """Collective: the verified checkpoint ``config.resume`` names (``auto``: the newest intact one), or None."""
    if config.resume is None:
        return None
    if config.resume == "auto":
        root = config.checkpoint_path
        assert root is not None, "TrainConfig requires a checkpoint_dir with resume='auto'"
        path, meta, skipped = newest_intact(root, runtime)
        if path is None:
            if skipped:
                raise RunRefused(f"resume='auto': none of the {len(skipped)} checkpoints in {str(root)!r} is intact "
                                 f"({'; '.join(s.reason for s in skipped)}); move them away to start afresh")
            return None
    else:
        path, skipped = Path(config.resume), []
        meta = verify_checkpoint(path, runtime)
    check_resumable(meta, config, path)
    return ResumePoint(path, meta, skipped)


def preflight(config: TrainConfig, runtime: Runtime) -> ResumePoint | None:
    """Collective: check the output paths (decided on rank 0) and find the checkpoint to resume from.

    Raises ``RunRefused`` on every rank alike, before any model exists.
    """
    try:
        decided_on_main(runtime, lambda: check_output_paths(config))
        return resume_point(config, runtime)
    except CheckpointError as error:
        raise RunRefused(str(error)) from None
