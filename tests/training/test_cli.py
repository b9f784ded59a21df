"""The training command line: one process via ``ai-system train``, errors before anything runs."""

from __future__ import annotations

import json

import pytest

from ai_system.cli import main as cli_main
from ai_system.training.cli import main
from ai_system.training.metrics import step_records


def test_cli_rejects_a_batch_the_ranks_cannot_split(capsys):
    with pytest.raises(ValueError, match="batch_size=6 is not divisible by world_size=1 × grad_accum_steps=4"):
        main(["--batch-size", "6", "--grad-accum-steps", "4", "--dataset", "synthetic", "--no-progress"])


def test_ai_system_train_subcommand_runs_one_process(tmp_path):
    log_file = tmp_path / "log.jsonl"
    assert cli_main(["train", "--dataset", "synthetic", "--steps", "2", "--no-progress", "--log-file", str(log_file),
                     "--model-overrides", json.dumps({"dim": 32, "n_heads": 2})]) == 0
    assert sorted(step_records(log_file)) == [1, 2]
