"""The training command line: one process via ``ai-system train``, errors before anything runs."""

from __future__ import annotations

import json

from ai_system.cli import main as cli_main
from ai_system.training.cli import main
from ai_system.training.metrics import step_records


def test_cli_rejects_a_batch_the_ranks_cannot_split_in_one_line(capsys):
    assert main(["--batch-size", "6", "--layout", "mb=4", "--dataset", "synthetic", "--no-progress"]) == 2
    assert capsys.readouterr().err == ("ai-system train: error: each replica's batch of 6 sequences does not split "
                                       "into micro-batches of 4 (global batch 6, dp=1)\n")


def test_ai_system_train_subcommand_runs_one_process(tmp_path):
    log_file = tmp_path / "log.jsonl"
    assert cli_main(["train", "--dataset", "synthetic", "--steps", "2", "--no-progress", "--log-file", str(log_file),
                     "--model-overrides", json.dumps({"dim": 32, "n_heads": 2})]) == 0
    assert sorted(step_records(log_file)) == [1, 2]
