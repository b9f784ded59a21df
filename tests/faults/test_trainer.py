"""``ai-system train`` under bad input: every mistake a user can make is one line naming the bad value
and what was expected, exit status 2, before any step runs (issue 11, items 5 and 8)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ai_system.cli import main
from ai_system.training.metrics import step_records
from ai_system.training.trainer import train

from .helpers import TINY_ARGS, one_error_line, run_command, tiny_config

BAD_VALUES = [
    (["--lr", "inf"], "lr=inf"),
    (["--lr", "nan"], "lr=nan"),
    (["--lr", "0"], "need a finite lr > 0"),
    (["--lr", "abc"], "argument --lr: invalid float value: 'abc'"),
    (["--weight-decay", "nan"], "weight_decay must be a finite number >= 0, got nan"),
    (["--grad-clip", "nan"], "grad_clip must be a finite number >= 0, got nan"),
    (["--grad-clip", "-1"], "grad_clip must be a finite number >= 0, got -1.0"),
    (["--min-lr-ratio", "2"], "min_lr_ratio=2.0"),
    (["--steps", "0"], "steps must be positive, got 0"),
    (["--batch-size", "0"], "batch_size must be positive, got 0"),
    (["--seq-len", "4096"], "seq_len=4096 exceeds model 'debug' max_seq_len=32"),
    (["--warmup-steps", "-1"], "warmup_steps must be a finite number >= 0, got -1"),
    (["--keep-checkpoints", "0"], "keep_checkpoints must be positive, got 0"),
    (["--threads", "0"], "threads must be positive or None, got 0"),
    (["--seed", "-1"], "seed must be >= 0, got -1"),
    (["--max-restarts", "-1"], "max_restarts must be >= 0, got -1"),
    (["--model", "2B"], "argument --model: invalid choice: '2B'"),
    (["--model-overrides", '{"dim": "64"}'], "model_overrides['dim'] must be an integer > 0, got '64' (str)"),
    (["--model-overrides", '{"n_kv_heads": 0}'], "model_overrides['n_kv_heads'] must be an integer > 0, got 0"),
    (["--model-overrides", '{"dimm": 64}'], "model_overrides key 'dimm' is not a ModelConfig field"),
    (["--model-overrides", "dim=64"], "expected a JSON object such as '{\"n_layers\": 2}', got 'dim=64'"),
    (["--model-overrides", "[64]"], "expected a JSON object such as '{\"n_layers\": 2}', got '[64]'"),
    (["--layout", "dp=0"], "layout dp must be an integer >= 1, got 0"),
    (["--layout", "dp=3"], "global batch 8 does not split over dp=3 replicas"),
    (["--layout", "fsdp"], "layout item 'fsdp' is not key=value"),
    (["--checkpoint-every", "2"], "checkpoint_every=2 needs a checkpoint_dir"),
    (["--resume", "auto"], "resume='auto' needs a checkpoint_dir"),
    (["--param-dtype", "bfloat16"], "param_dtype='bfloat16' needs FSDP's mixed precision"),
]


def refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``ai-system ARGV`` in this process; it must exit 2 with one line on stderr, which is returned."""
    try:
        status = main(argv)
    except SystemExit as exit_:
        status = exit_.code
    assert status == 2
    return one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize(("args", "message"), BAD_VALUES, ids=[" ".join(args) for args, _ in BAD_VALUES])
def test_a_bad_value_is_one_line_naming_it(args, message, capsys):
    line = refused(["train", *TINY_ARGS, *args], capsys)
    assert line.startswith("ai-system train: error: ") and message in line


@pytest.fixture
def a_file(tmp_path: Path) -> Path:
    path = tmp_path / "not-a-directory"
    path.write_text("")
    return path


@pytest.mark.parametrize(("option", "path", "message"), [
    ("--checkpoint-dir", "{file}", "checkpoint_dir '{file}' is a file; expected a directory"),
    ("--checkpoint-dir", "{file}/ckpt", "checkpoint_dir '{file}/ckpt' is not writable: Not a directory"),
    ("--checkpoint-dir", "/proc", "checkpoint_dir '/proc' is not writable"),
    ("--checkpoint-dir", "/sys/ai-system/ckpt", "checkpoint_dir '/sys/ai-system/ckpt' is not writable"),
    ("--export-dir", "{file}", "export_dir '{file}' is a file; expected a directory"),
    ("--log-file", "{directory}", "log_file '{directory}' is a directory; expected a file"),
    ("--log-file", "/proc/metrics.jsonl", "log_file's directory '/proc' is not writable"),
], ids=["file", "under-a-file", "read-only-dir", "cannot-create", "export-file", "log-dir", "log-read-only"])
def test_an_unwritable_output_path_is_refused_before_the_first_step(option, path, message, a_file, tmp_path, capsys):
    names = {"file": str(a_file), "directory": str(tmp_path)}
    log_file = tmp_path / "log.jsonl"
    extra = [] if option == "--log-file" else ["--log-file", str(log_file)]
    line = refused(["train", *TINY_ARGS, *extra, option, path.format(**names)], capsys)
    assert message.format(**names) in line
    assert not log_file.exists() or not step_records(log_file)


def test_a_multi_rank_run_is_refused_before_torchrun_starts(a_file, capsys):
    """The launcher runs the same checks before it starts any rank (no torchrun output, no traceback)."""
    line = refused(["train", *TINY_ARGS, "--layout", "dp=2", "--checkpoint-dir", str(a_file)], capsys)
    assert f"checkpoint_dir '{a_file}' is a file" in line


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The step-6 checkpoint of a finished tiny run."""
    root = tmp_path_factory.mktemp("saved")
    train(tiny_config(checkpoint_dir=str(root)))
    return root / "step_00000006"


@pytest.mark.parametrize(("args", "message"), [
    (["--model-overrides", json.dumps({"dim": 64, "n_layers": 2, "n_heads": 2, "max_seq_len": 32})],
     "holds a model of shape"),
    (["--seed", "1"], "was trained with seed=0, this run has seed=1"),
    (["--dataset", "stdlib"], "was trained with dataset='synthetic', this run has dataset='stdlib'"),
    (["--steps", "4"], "is at step 6, past this run's steps=4"),
], ids=["other-shape", "other-seed", "other-data", "past-the-end"])
def test_a_checkpoint_of_another_run_is_refused_naming_the_difference(saved, args, message, capsys):
    line = refused(["train", *TINY_ARGS, "--resume", str(saved), *args], capsys)
    assert f"checkpoint {saved} " in line and message in line


def test_a_missing_checkpoint_is_named(tmp_path, capsys):
    line = refused(["train", *TINY_ARGS, "--resume", str(tmp_path / "nowhere")], capsys)
    assert f"no checkpoint at {tmp_path / 'nowhere'}" in line


def test_a_diverging_run_stops_with_one_line_and_status_1():
    done = run_command("train", *TINY_ARGS, "--lr", "1e30")
    assert done.returncode == 1
    assert "loss became" in one_error_line(done.stderr)
