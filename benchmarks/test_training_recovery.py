"""Recovery from a SIGKILL: how long training takes to continue, how many steps it replays, what checkpoints cost.

Two FSDP ranks under torchrun with ``--max-restarts 1 --resume auto``. Rank 1 is SIGKILLed while the
job is between two checkpoints; torchrun stops rank 0 and restarts both, which verify the newest
checkpoint against its manifest, load it and replay the steps after it. The log's wall-clock
stamps give the recovery time: from the kill to the first step the restarted job finishes.
"""

from __future__ import annotations

import signal
import statistics
import time
from pathlib import Path

from ai_system.bench.metrics import Spread
from ai_system.distributed.launch import rank_process, start_torchrun
from ai_system.training.metrics import read_log, step_records

RANKS = 2


def _kill_and_recover(tmp_path: Path, args: list[str], kill_after: int, timeout_s: float) -> tuple[float, int]:
    """Start the job, SIGKILL rank 1 once step ``kill_after`` is logged; (kill time, last step logged before)."""
    log_file = tmp_path / "log.jsonl"
    job = start_torchrun(RANKS, [*args, "--log-file", str(log_file)], max_restarts=1,
                         log_path=tmp_path / "out.txt")
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and job.poll() is None:
            if log_file.exists() and max(step_records(log_file), default=0) >= kill_after:
                victim = rank_process(job, rank=1)
                if victim is not None:
                    reached = max(step_records(log_file))
                    killed_at = time.time()
                    victim.send_signal(signal.SIGKILL)
                    break
            time.sleep(0.01)
        else:
            raise AssertionError(f"the job never reached step {kill_after}:\n"
                                 f"{(tmp_path / 'out.txt').read_text()[-2000:]}")
        assert job.wait(timeout=timeout_s) == 0, (tmp_path / "out.txt").read_text()[-3000:]
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
    return killed_at, reached


def test_training_recovery_after_sigkill(benchmark, record, profile, tmp_path):
    steps, every = profile.pick(quick=(16, 5), full=(40, 10))
    kill_after = 2 * every + every // 2
    args = ["--model", "small", "--dataset", "synthetic", "--seq-len", "128", "--batch-size", "4",
            "--steps", str(steps), "--warmup-steps", "2", "--threads", "1", "--layout", f"dp={RANKS}",
            "--checkpoint-dir", str(tmp_path / "ckpt"), "--checkpoint-every", str(every), "--resume", "auto",
            "--no-progress"]
    killed_at, reached = benchmark.pedantic(_kill_and_recover, args=(tmp_path, args, kill_after, 600),
                                            rounds=1, iterations=1)
    records = read_log(tmp_path / "log.jsonl")
    resume_index = next(i for i, r in enumerate(records) if r["event"] == "resume")
    resume = records[resume_index]
    first_step = next(r for r in records[resume_index:] if r["event"] == "step")
    assert step_records(tmp_path / "log.jsonl").keys() == set(range(1, steps + 1))
    params = {"model": "small", "seq_len": 128, "batch_size": 4, "ranks": RANKS, "checkpoint_every": every,
              "layout": f"dp={RANKS}"}
    scale = f"small, {RANKS} FSDP ranks under torchrun, gloo"
    record(name="training_recovery_seconds", value=first_step["time"] - killed_at, unit="s", better="lower",
           area="training", scale=scale, params=params,
           question="How long after a SIGKILL does training make progress again?",
           description=f"rank 1 SIGKILLed after step {reached}; seconds until the restarted job finished its first "
                       "step: torchrun's restart, imports, rendezvous, verifying "
                       f"({resume['preflight_seconds']:.2f} s) and loading checkpoint step {resume['step']}, model "
                       f"setup ({resume['setup_seconds']:.2f} s in all), one step")
    record(name="training_steps_replayed_after_kill", value=reached - resume["step"], unit="steps", better="lower",
           area="training", scale=scale, params=params, goal=float(every),
           question="How much work does a SIGKILL cost?",
           description=f"steps trained before the kill ({reached}) minus the step resumed from ({resume['step']}); "
                       f"at most --checkpoint-every = {every}, plus a step in flight")
    saves = [r["seconds"] for r in records if r["event"] == "checkpoint"]
    step_seconds = statistics.median(r["step_time_s"] for r in records if r["event"] == "step")
    record(name="checkpoint_save_seconds", value=statistics.median(saves), unit="s", better="lower",
           area="training", scale=scale, params=params, spread=Spread.of(saves) if len(saves) > 1 else None,
           description=f"one checkpoint: DCP shards, metadata, SHA-256 manifest of every file (hashed by both ranks), "
                       f"fsync and rename; a training step takes {step_seconds:.3f} s")
