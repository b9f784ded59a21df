"""Checkpoint faults: damaged files are caught before anything loads, ``--resume auto`` falls back to the
newest intact checkpoint and says why, and a process killed mid-checkpoint resumes to the same losses."""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp

from ai_system.distributed.launch import REPO_ROOT
from ai_system.models.config import ModelConfig
from ai_system.models.transformer import Transformer
from ai_system.training import checkpoint
from ai_system.training.checkpoint import CheckpointError, file_sha256, newest_intact, verify_checkpoint
from ai_system.training.export import consolidated_state_dict, export_checkpoint
from ai_system.training.metrics import read_log, step_records
from ai_system.training.preflight import RunRefused
from ai_system.training.trainer import train

from .helpers import TINY_ARGS, one_error_line, python_env, run_command, tiny_config

STEPS, EVERY = 6, 2
SHARD = "__0_0.distcp"


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[float]]:
    """Checkpoints at steps 2, 4 and 6 of an uninterrupted run, and that run's losses."""
    root = tmp_path_factory.mktemp("saved")
    result = train(tiny_config(steps=STEPS, checkpoint_dir=str(root), checkpoint_every=EVERY, keep_checkpoints=5))
    return root, result.losses


@pytest.fixture
def root(saved_run: tuple[Path, list[float]], tmp_path: Path) -> Path:
    """A private copy of the saved checkpoints, free to damage."""
    return Path(shutil.copytree(saved_run[0], tmp_path / "ckpt"))


def step_dir(root: Path, step: int) -> Path:
    return checkpoint.checkpoint_dir_for(root, step)


def weight_offset(path: Path, name: str = "output.weight") -> int:
    """Where the bytes of one model weight sit inside the checkpoint's shard file."""
    _, weights = consolidated_state_dict(path)
    offset = (path / SHARD).read_bytes().find(weights[name].numpy().tobytes())
    assert offset > 0
    return offset


def overwrite(file: Path, offset: int, data: bytes) -> None:
    with file.open("r+b") as handle:
        handle.seek(offset)
        handle.write(data)


def flip(file: Path, offset: int, count: int = 8) -> None:
    data = bytearray(file.read_bytes()[offset:offset + count])
    overwrite(file, offset, bytes(byte ^ 0xFF for byte in data))


def truncate(file: Path) -> None:
    with file.open("r+b") as handle:
        handle.truncate(file.stat().st_size // 2)


def load_without_verifying(path: Path) -> dict[str, torch.Tensor]:
    """What DCP alone reads from a checkpoint: the silent failure the manifest exists for."""
    config = ModelConfig(**checkpoint.read_meta(path)["model_config"])
    state = {"model": {name: torch.empty_like(t) for name, t in Transformer(config).state_dict().items()}}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load(state, checkpoint_id=path, no_dist=True)
    return state["model"]


def test_the_manifest_holds_every_file_with_its_size_and_sha256(saved_run):
    for path in checkpoint.complete_checkpoints(saved_run[0]):
        files = json.loads((path / checkpoint.MANIFEST_FILE).read_text())["files"]
        assert sorted(files) == sorted(p.name for p in path.iterdir() if p.name != checkpoint.MANIFEST_FILE)
        assert all(file_sha256(path / name) == (entry["bytes"], entry["sha256"]) for name, entry in files.items())
        assert verify_checkpoint(path)["step"] == int(path.name.removeprefix("step_"))


def test_finite_bytes_overwritten_load_silently_in_dcp_but_fail_verification(root):
    path = step_dir(root, 6)
    offset = weight_offset(path)
    original = load_without_verifying(path)["output.weight"].clone()
    overwrite(path / SHARD, offset, torch.full((16,), 0.5).numpy().tobytes())
    damaged = load_without_verifying(path)["output.weight"]
    assert torch.isfinite(damaged).all() and not torch.equal(damaged, original)  # DCP alone takes it
    with pytest.raises(CheckpointError, match=f"{SHARD} does not match its SHA-256"):
        verify_checkpoint(path)
    with pytest.raises(RunRefused, match=f"step_00000006 is damaged: {SHARD} does not match"):
        train(tiny_config(steps=STEPS, checkpoint_dir=str(root), resume=str(path)))


@pytest.mark.parametrize("name", [SHARD, ".metadata", checkpoint.META_FILE])
def test_flipped_bytes_are_found_in_any_file(root, name):
    path = step_dir(root, 6)
    flip(path / name, weight_offset(path) if name == SHARD else (path / name).stat().st_size // 2)
    with pytest.raises(CheckpointError, match=f"{name} does not match its SHA-256"):
        verify_checkpoint(path)


def test_a_truncated_file_is_named_with_both_sizes(root):
    path = step_dir(root, 6)
    size = (path / SHARD).stat().st_size
    truncate(path / SHARD)
    with pytest.raises(CheckpointError, match=f"{SHARD} has {size // 2} bytes, the manifest says {size} "):
        verify_checkpoint(path)


@pytest.mark.parametrize(("damage", "message"), [
    (lambda path: (path / SHARD).unlink(), f"{SHARD} is missing"),
    (lambda path: (path / checkpoint.MANIFEST_FILE).unlink(), "expected a directory holding manifest.json"),
    (lambda path: (path / checkpoint.MANIFEST_FILE).write_text("{not json"), "manifest.json is not readable"),
    (lambda path: (path / checkpoint.MANIFEST_FILE).write_text('{"files": {}}'), "lists no sha256 file checksums"),
], ids=["shard-deleted", "manifest-deleted", "manifest-garbled", "manifest-empty"])
def test_missing_or_garbled_files_are_named(root, damage, message):
    path = step_dir(root, 6)
    damage(path)
    with pytest.raises(CheckpointError, match=message):
        verify_checkpoint(path)


def test_resume_auto_takes_the_newest_intact_checkpoint_and_says_which_it_skipped(root, saved_run, capsys):
    truncate(step_dir(root, 6) / SHARD)
    flip(step_dir(root, 4) / ".metadata", 100)
    log_file = root / "log.jsonl"
    resumed = train(tiny_config(steps=STEPS, checkpoint_dir=str(root), resume="auto", log_file=str(log_file)))
    assert resumed.start_step == 2
    assert resumed.losses == saved_run[1][2:]
    err = capsys.readouterr().err
    assert f"skipped checkpoint {step_dir(root, 6)} (moved to step_00000006.damaged-" in err
    assert "bytes, the manifest says" in err and ".metadata does not match" in err
    events = [(r["event"], r.get("path")) for r in read_log(log_file)[:3]]
    assert events == [("skipped_checkpoint", str(step_dir(root, 6))), ("skipped_checkpoint", str(step_dir(root, 4))),
                      ("resume", None)]
    assert len(list(root.glob("step_0000000[46].damaged-*"))) == 2  # kept for inspection, out of rotation
    assert [p.name for p in checkpoint.complete_checkpoints(root)] == ["step_00000002", "step_00000006"]
    assert all(verify_checkpoint(path) for path in checkpoint.complete_checkpoints(root))


def test_resume_auto_refuses_when_no_checkpoint_is_intact(root):
    for step in (2, 4, 6):
        truncate(step_dir(root, step) / SHARD)
    with pytest.raises(RunRefused, match="none of the 3 checkpoints in .* is intact"):
        train(tiny_config(steps=STEPS, checkpoint_dir=str(root), resume="auto"))


def test_export_refuses_a_damaged_checkpoint(root, tmp_path):
    flip(step_dir(root, 6) / SHARD, weight_offset(step_dir(root, 6)))
    with pytest.raises(CheckpointError, match="does not match its SHA-256"):
        export_checkpoint(step_dir(root, 6), tmp_path / "export")
    assert not (tmp_path / "export").exists()


def test_the_command_names_the_damaged_file_in_one_line(root):
    truncate(step_dir(root, 6) / SHARD)
    done = run_command("train", *TINY_ARGS, "--checkpoint-dir", str(root), "--resume", str(step_dir(root, 6)))
    assert done.returncode == 2
    assert f"step_00000006 is damaged: {SHARD} has" in one_error_line(done.stderr)


# A training process that SIGKILLs itself at one point inside the save of step KILL_STEP.
KILL_SCRIPT = """
import json, os, signal, sys
from ai_system.training import checkpoint
from ai_system.training.config import TrainConfig
from ai_system.training.trainer import train

point, step = sys.argv[2], sys.argv[3]

def killing(real, after):
    def wrapper(*args, **kwargs):
        hit = any(step in str(arg) for arg in [*args, *kwargs.values()])
        if hit and not after:
            os.kill(os.getpid(), signal.SIGKILL)
        result = real(*args, **kwargs)
        if hit:
            os.kill(os.getpid(), signal.SIGKILL)
        return result
    return wrapper

if point == "shards-written":
    checkpoint.dcp.save = killing(checkpoint.dcp.save, after=True)
elif point == "hashing":
    checkpoint.file_sha256 = killing(checkpoint.file_sha256, after=False)
else:
    checkpoint._fsync_dir = killing(checkpoint._fsync_dir, after=False)
train(TrainConfig.from_dict(json.loads(sys.argv[1])))
"""
KILL_STEP = 4


@pytest.mark.parametrize("point", ["shards-written", "hashing", "manifest-written"])
def test_a_process_killed_mid_checkpoint_resumes_from_the_last_intact_one(saved_run, tmp_path, point):
    """SIGKILL after DCP wrote the shards, while the manifest is hashed, or after it is written but before
    the rename: the half-saved step 4 never counts, the run resumes at step 2 and ends with the same losses."""
    root = tmp_path / "ckpt"
    config = tiny_config(steps=STEPS, checkpoint_dir=str(root), checkpoint_every=EVERY, keep_checkpoints=5)
    killed = subprocess.run([sys.executable, "-c", KILL_SCRIPT, json.dumps(config.to_dict()), point,
                             f"step_{KILL_STEP:08d}"], cwd=REPO_ROOT, env=python_env(), capture_output=True,
                            text=True, timeout=180)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert (root / f"step_{KILL_STEP:08d}.tmp").is_dir()
    assert [p.name for p in checkpoint.complete_checkpoints(root)] == ["step_00000002"]
    resumed = train(tiny_config(steps=STEPS, checkpoint_dir=str(root), checkpoint_every=EVERY, resume="auto"))
    assert resumed.start_step == 2
    assert resumed.losses == saved_run[1][2:]
    assert not (root / f"step_{KILL_STEP:08d}.tmp").exists()
    assert newest_intact(root)[0] == step_dir(root, STEPS)


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_at_most_the_steps_since_the_last_checkpoint(tmp_path):
    """The command, checkpointing every step, SIGKILLed at random moments three times and restarted with
    ``--resume auto`` each time: every restart resumes, and the logged losses equal an uninterrupted run's."""
    steps, kills = 12, 3
    log_file, root = tmp_path / "log.jsonl", tmp_path / "ckpt"
    args = ["train", *TINY_ARGS, "--steps", str(steps), "--checkpoint-dir", str(root), "--checkpoint-every", "1",
            "--resume", "auto", "--log-file", str(log_file)]
    rng = random.Random(0)
    for _ in range(kills):
        reached = max(step_records(log_file), default=0) if log_file.exists() else 0
        job = subprocess.Popen([sys.executable, "-m", "ai_system.cli", *args], cwd=REPO_ROOT, env=python_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and job.poll() is None and \
                (not log_file.exists() or max(step_records(log_file), default=0) <= reached):
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.3))
        job.send_signal(signal.SIGKILL)
        job.wait(timeout=60)
    assert run_command(*args).returncode == 0
    resumes = [r for r in read_log(log_file) if r["event"] == "resume"]
    assert len(resumes) >= 1
    logged = step_records(log_file)
    assert sorted(logged) == list(range(1, steps + 1))
    assert [logged[s]["loss"] for s in range(1, steps + 1)] == train(tiny_config(steps=steps)).losses
