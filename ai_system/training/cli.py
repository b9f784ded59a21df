"""``ai-system train``: one command for every layout.

``--layout`` takes the text ``ai-system plan`` prints (``dp=2,tp=1,pp=1,zero=3,...``). A layout of more
than one rank started outside torchrun re-launches itself under torchrun with that many local
ranks (``--max-restarts`` for fault tolerance with ``--resume auto``); under torchrun (or a plain
single process) it trains. ``implementation/training/train.py`` is the same command.

Anything a user can get wrong (a value, an unwritable path, a damaged or mismatched checkpoint) is
one line on stderr naming it, exit status 2, before any step runs; the launcher checks it before it
starts torchrun. A run whose loss diverges stops with one line and exit status 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
from typing import Any

from ai_system.cli import CommandParser
from ai_system.distributed.launch import ALONE, REPO_ROOT, torchrun_command
from ai_system.distributed.layout import Layout
from ai_system.distributed.parallelize import PARAM_DTYPES
from ai_system.models.config import MODEL_CONFIGS
from ai_system.training.config import DATASETS, TrainConfig
from ai_system.training.preflight import RunRefused, preflight

DEFAULTS = TrainConfig()


def layout_argument(text: str) -> Layout:
    try:
        return Layout.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def json_object_argument(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"n_layers\": 2}}', got {text!r} "
                                         f"({error.msg})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"n_layers\": 2}}', got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    arg = parser.add_argument
    arg("--model", default=DEFAULTS.model, choices=sorted(MODEL_CONFIGS), help="named model config")
    arg("--model-overrides", type=json_object_argument, default={}, help='JSON, e.g. \'{"n_layers": 2}\'')
    arg("--dataset", default=DEFAULTS.dataset, choices=DATASETS,
        help="stdlib: Python's standard library sources, byte-level; synthetic: seeded random tokens")
    arg("--seq-len", type=int, default=DEFAULTS.seq_len)
    arg("--batch-size", type=int, default=DEFAULTS.batch_size, help="global sequences per optimizer step")
    arg("--layout", type=layout_argument, default=DEFAULTS.layout,
        help="how the run splits over ranks, e.g. 'dp=2' (FSDP), 'tp=2', 'pp=2,mb=2,schedule=1f1b', "
             "'dp=2,tp=2,recompute=full'; keys: dp tp pp zero mb schedule v recompute sp (ai-system plan prints one)")
    arg("--steps", type=int, default=DEFAULTS.steps)
    arg("--lr", type=float, default=DEFAULTS.lr)
    arg("--min-lr-ratio", type=float, default=DEFAULTS.min_lr_ratio)
    arg("--warmup-steps", type=int, default=DEFAULTS.warmup_steps)
    arg("--weight-decay", type=float, default=DEFAULTS.weight_decay)
    arg("--grad-clip", type=float, default=DEFAULTS.grad_clip, help="max global grad norm; 0 disables")
    arg("--seed", type=int, default=DEFAULTS.seed)
    arg("--param-dtype", default=DEFAULTS.param_dtype, choices=sorted(PARAM_DTYPES),
        help="bfloat16: FSDP mixed precision with fp32 gradient reduction (needs a process group)")
    arg("--compile", action="store_true", help="torch.compile each transformer block")
    arg("--threads", type=int, default=None, help="torch CPU threads per process")
    arg("--checkpoint-dir", default=None)
    arg("--checkpoint-every", type=int, default=DEFAULTS.checkpoint_every, help="steps; 0: only at the end")
    arg("--keep-checkpoints", type=int, default=DEFAULTS.keep_checkpoints)
    arg("--resume", default=None, help="'auto' (latest in --checkpoint-dir, if any) or a checkpoint directory")
    arg("--max-restarts", type=int, default=0,
        help="when this command starts torchrun itself: restarts after a rank fails (use with --resume auto)")
    arg("--export-dir", default=None,
        help="at the end, export the model (safetensors + config + tokenizer) for ai-system serve --checkpoint")
    arg("--log-file", default=None, help="JSON-lines metrics file (rank 0)")
    arg("--log-every", type=int, default=DEFAULTS.log_every)
    arg("--no-progress", dest="progress", action="store_false")
    arg("--profile-dir", default=None,
        help="write a torch.profiler Chrome trace of steps 3-5 per rank (rank{r}.json) into this directory")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in vars(args).items() if k in names})


def train_arguments(config: TrainConfig) -> list[str]:
    """The ``ai-system train`` options that reproduce ``config`` (fields left at their defaults are omitted)."""
    arguments: list[str] = []
    for spec in dataclasses.fields(TrainConfig):
        value = getattr(config, spec.name)
        if value == getattr(DEFAULTS, spec.name):
            continue
        if spec.name == "progress":
            arguments.append("--no-progress")
        elif spec.name == "compile":
            arguments.append("--compile")
        elif spec.name == "betas":
            raise ValueError(f"betas={value} has no command-line option; only the default {DEFAULTS.betas} does")
        elif spec.name == "model_overrides":
            arguments += ["--model-overrides", json.dumps(value)]
        else:
            arguments += [f"--{spec.name.replace('_', '-')}", str(value)]
    return arguments


def refuse(message: str, status: int = 2) -> int:
    """One line on stderr (from rank 0 only, under torchrun) and the exit status."""
    if os.environ.get("RANK", "0") == "0":
        print(f"ai-system train: error: {message}", file=sys.stderr)
    return status


def run(args: argparse.Namespace) -> int:
    """Train here, or check the run and start torchrun with the layout's ranks running this same command."""
    try:
        config = config_from_args(args)
        if args.max_restarts < 0:
            raise ValueError(f"max_restarts must be >= 0, got {args.max_restarts}")
    except (TypeError, ValueError, OverflowError) as error:
        return refuse(str(error))
    if config.layout.world_size > 1 and "WORLD_SIZE" not in os.environ:
        try:
            preflight(config, ALONE)
        except RunRefused as error:
            return refuse(str(error))
        command = torchrun_command(config.layout.world_size, train_arguments(config), args.max_restarts)
        return subprocess.call(command, cwd=REPO_ROOT, env={**os.environ, "OMP_NUM_THREADS": os.environ.get(
            "OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // config.layout.world_size)))})
    from ai_system.training.trainer import train

    try:
        train(config)
    except RunRefused as error:
        return refuse(str(error))
    except FloatingPointError as error:
        return refuse(f"{error}; lower --lr, or resume from an earlier checkpoint with a lower one", status=1)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="train the transformer (one process, or every rank under torchrun)",
                                   description=__doc__)
    add_arguments(parser)
    parser.set_defaults(func=run)


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(prog="ai-system train", description="FSDP2 training of the shared transformer")
    add_arguments(parser)
    return parser


def parse_config(argv: list[str] | None = None) -> TrainConfig:
    return config_from_args(build_parser().parse_args(argv))


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))
