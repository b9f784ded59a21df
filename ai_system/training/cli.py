"""Command line for training: ``ai-system train`` and ``implementation/training/train.py`` share it."""

from __future__ import annotations

import argparse
import dataclasses
import json

from ai_system.models.config import MODEL_CONFIGS
from ai_system.training.config import DATASETS, PARAM_DTYPES, TrainConfig

DEFAULTS = TrainConfig()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    arg = parser.add_argument
    arg("--model", default=DEFAULTS.model, choices=sorted(MODEL_CONFIGS), help="named model config")
    arg("--model-overrides", type=json.loads, default={}, help='JSON, e.g. \'{"n_layers": 2}\'')
    arg("--dataset", default=DEFAULTS.dataset, choices=DATASETS,
        help="stdlib: Python's standard library sources, byte-level; synthetic: seeded random tokens")
    arg("--seq-len", type=int, default=DEFAULTS.seq_len)
    arg("--batch-size", type=int, default=DEFAULTS.batch_size, help="global sequences per optimizer step")
    arg("--grad-accum-steps", type=int, default=DEFAULTS.grad_accum_steps)
    arg("--steps", type=int, default=DEFAULTS.steps)
    arg("--lr", type=float, default=DEFAULTS.lr)
    arg("--min-lr-ratio", type=float, default=DEFAULTS.min_lr_ratio)
    arg("--warmup-steps", type=int, default=DEFAULTS.warmup_steps)
    arg("--weight-decay", type=float, default=DEFAULTS.weight_decay)
    arg("--grad-clip", type=float, default=DEFAULTS.grad_clip, help="max global grad norm; 0 disables")
    arg("--seed", type=int, default=DEFAULTS.seed)
    arg("--param-dtype", default=DEFAULTS.param_dtype, choices=PARAM_DTYPES,
        help="bfloat16: FSDP mixed precision with fp32 gradient reduction (torchrun only)")
    arg("--activation-checkpointing", action="store_true")
    arg("--compile", action="store_true", help="torch.compile each transformer block")
    arg("--threads", type=int, default=None, help="torch CPU threads per process")
    arg("--checkpoint-dir", default=None)
    arg("--checkpoint-every", type=int, default=DEFAULTS.checkpoint_every, help="steps; 0: only at the end")
    arg("--keep-checkpoints", type=int, default=DEFAULTS.keep_checkpoints)
    arg("--resume", default=None, help="'auto' (latest in --checkpoint-dir, if any) or a checkpoint directory")
    arg("--log-file", default=None, help="JSON-lines metrics file (rank 0)")
    arg("--log-every", type=int, default=DEFAULTS.log_every)
    arg("--no-progress", dest="progress", action="store_false")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in vars(args).items() if k in names})


def run(args: argparse.Namespace) -> int:
    from ai_system.training.trainer import train

    train(config_from_args(args))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="train the transformer (one process, or every rank under torchrun)",
                                   description=__doc__)
    add_arguments(parser)
    parser.set_defaults(func=run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="FSDP2 training of the shared transformer")
    add_arguments(parser)
    return parser


def parse_config(argv: list[str] | None = None) -> TrainConfig:
    return config_from_args(build_parser().parse_args(argv))


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))
