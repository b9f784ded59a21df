"""Start the training entry point under torchrun from Python (benchmarks, the fault test, scripts)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ENTRY_POINT = Path(__file__).resolve().parents[2] / "implementation" / "training" / "train.py"


def torchrun_command(nproc: int, train_args: Sequence[str], max_restarts: int = 0) -> list[str]:
    """``torchrun --standalone``: rendezvous on a free local port, so concurrent jobs do not collide."""
    if nproc <= 0:
        raise ValueError(f"nproc must be positive, got {nproc}")
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            f"--max-restarts={max_restarts}", str(ENTRY_POINT), *train_args]


def start_torchrun(nproc: int, train_args: Sequence[str], max_restarts: int = 0, threads: int = 1,
                   log_path: Path | None = None) -> subprocess.Popen:
    """Launch without waiting; output goes to ``log_path`` (or is discarded) so a full pipe never blocks it."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    sink = log_path.open("w") if log_path is not None else subprocess.DEVNULL
    try:
        return subprocess.Popen(torchrun_command(nproc, train_args, max_restarts), env=env,
                                stdout=sink, stderr=subprocess.STDOUT, cwd=ENTRY_POINT.parents[2])
    finally:
        if log_path is not None:
            sink.close()


def run_torchrun(nproc: int, train_args: Sequence[str], timeout_s: float, threads: int = 1,
                 log_path: Path | None = None) -> None:
    """Run to completion; a failure raises with the tail of the job's output."""
    process = start_torchrun(nproc, train_args, threads=threads, log_path=log_path)
    try:
        code = process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise
    if code:
        tail = log_path.read_text()[-3000:] if log_path is not None else "(output discarded)"
        raise RuntimeError(f"torchrun with {nproc} ranks exited with {code}:\n{tail}")
