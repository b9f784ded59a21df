"""Two ranks under torchrun (gloo on loopback): FSDP2 equals one process, and a killed rank recovers."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from ai_system.distributed.launch import rank_process, run_torchrun, start_torchrun
from ai_system.training.cli import parse_config
from ai_system.training.metrics import read_log, step_records
from ai_system.training.trainer import train

STEPS = 40
TRAIN_ARGS = ["--model", "debug", "--model-overrides", json.dumps({"dim": 32, "n_heads": 2, "max_seq_len": 32}),
              "--seq-len", "32", "--batch-size", "8", "--steps", str(STEPS),
              "--warmup-steps", "2", "--lr", "1e-2", "--checkpoint-every", "10", "--no-progress"]


def job_args(directory: Path) -> list[str]:
    """Two FSDP ranks, each accumulating two micro-batches of two sequences."""
    return [*TRAIN_ARGS, "--layout", "dp=2,mb=2", "--log-file", str(directory / "log.jsonl"),
            "--checkpoint-dir", str(directory / "ckpt"),
            "--resume", "auto"]


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("uninterrupted")
    run_torchrun(2, job_args(directory), timeout_s=240, log_path=directory / "out.txt")
    return directory / "log.jsonl"


def test_two_rank_fsdp_matches_one_process_step_for_step(two_rank_run, tmp_path):
    single = train(parse_config([*TRAIN_ARGS, "--checkpoint-every", "0"]))
    sharded = step_records(two_rank_run)
    assert sorted(sharded) == list(range(1, STEPS + 1))
    assert [sharded[s]["loss"] for s in sorted(sharded)] == pytest.approx(single.losses, abs=1e-5, rel=0)
    assert read_log(two_rank_run)[0]["world_size"] == 2


def test_a_two_rank_checkpoint_resumes_on_one_process(two_rank_run):
    """DCP reshards on load: the 2-rank job's step-30 checkpoint continues unsharded to the same losses."""
    checkpoint = two_rank_run.parent / "ckpt" / "step_00000030"
    resumed = train(parse_config([*TRAIN_ARGS, "--checkpoint-every", "0", "--resume", str(checkpoint)]))
    sharded = step_records(two_rank_run)
    assert resumed.start_step == 30
    assert resumed.losses == pytest.approx([sharded[s]["loss"] for s in range(31, STEPS + 1)], abs=1e-5, rel=0)


def last_logged_step(log_file: Path) -> int:
    if not log_file.exists():
        return 0
    return max(step_records(log_file), default=0)


def test_sigkilled_rank_restarts_from_checkpoint_and_finishes_with_the_same_loss(two_rank_run, tmp_path):
    job = start_torchrun(2, job_args(tmp_path), max_restarts=1, log_path=tmp_path / "out.txt")
    try:
        deadline = time.monotonic() + 180
        victim = None
        while victim is None and time.monotonic() < deadline and job.poll() is None:
            if last_logged_step(tmp_path / "log.jsonl") >= 12:
                victim = rank_process(job, rank=1)
            time.sleep(0.02)
        assert victim is not None, f"rank 1 never got past step 12:\n{(tmp_path / 'out.txt').read_text()[-2000:]}"
        victim.send_signal(signal.SIGKILL)
        assert job.wait(timeout=240) == 0, (tmp_path / "out.txt").read_text()[-3000:]
    finally:
        if job.poll() is None:
            job.terminate()
            job.wait(timeout=60)
    resumes = [r for r in read_log(tmp_path / "log.jsonl") if r["event"] == "resume"]
    assert len(resumes) == 1 and 10 <= resumes[0]["step"] < STEPS
    recovered, uninterrupted = step_records(tmp_path / "log.jsonl"), step_records(two_rank_run)
    assert recovered[STEPS]["loss"] == uninterrupted[STEPS]["loss"]
    for step in range(1, STEPS + 1):
        assert recovered[step]["loss"] == uninterrupted[step]["loss"], f"step {step}"
