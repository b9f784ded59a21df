"""Shared by the trainer, checkpoint and planner fault tests: a tiny training config and a command runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from ai_system.distributed.launch import REPO_ROOT
from ai_system.training.config import TrainConfig

TINY_MODEL = {"dim": 32, "n_layers": 2, "n_heads": 2, "max_seq_len": 32}
TINY_RUN = {"model_overrides": TINY_MODEL, "seq_len": 32, "batch_size": 8, "steps": 6, "warmup_steps": 2,
            "dataset": "synthetic", "progress": False}
TINY_ARGS = ["--model-overrides", json.dumps(TINY_MODEL), "--seq-len", "32", "--batch-size", "8", "--steps", "6",
             "--warmup-steps", "2", "--dataset", "synthetic", "--no-progress"]
"""``tiny_config()`` as ``ai-system train`` options (a later ``--steps`` wins)."""


def tiny_config(**fields: object) -> TrainConfig:
    """A seconds-long single-process run of a 2-layer, 32-wide model on synthetic tokens."""
    return TrainConfig(**{**TINY_RUN, **fields})


def python_env() -> dict[str, str]:
    """This environment with the repository first on ``PYTHONPATH``, for child processes."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}


def run_command(*args: str, timeout_s: float = 180) -> subprocess.CompletedProcess:
    """``python -m ai_system.cli ARGS`` in a fresh process, output captured as text."""
    return subprocess.run([sys.executable, "-m", "ai_system.cli", *args], capture_output=True, text=True,
                          timeout=timeout_s, cwd=REPO_ROOT, env=python_env())


def one_error_line(stderr: str) -> str:
    """The single line a refused command prints; fails on a traceback or on several lines."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, f"expected one error line, got:\n{stderr}"
    return lines[0]
