"""``ai-system plan``: lay out a training run over a GPU fleet, rank the layouts, print how to run them.

Every layout it prints is an ``ai_system.distributed.layout.Layout``, and each comes with the exact
``ai-system train`` command that runs it. ``--gpu this-machine`` plans for this machine as measured
now (a training step's FLOP/s and the all-reduce bandwidth of ``--gpus`` local ranks).

Every number it reads is checked (counts >= 1, budgets and prices finite and positive, fractions in
range, model shapes through ``TrainConfig``), and every number it prints is finite: a bad value is
one line naming it, exit status 2, and ``--json`` is standard JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys

from ai_system.cli import number
from ai_system.distributed.launch import run_distributed
from ai_system.distributed.layout import Layout
from ai_system.models.config import MODEL_CONFIGS, get_config
from ai_system.planning.accelerators import ACCELERATORS, Accelerator, get_accelerator
from ai_system.planning.measure import measured_machine
from ai_system.planning.planner import PRECISIONS, Estimate, Job, estimate, run_summary, search
from ai_system.training.cli import layout_argument, train_arguments
from ai_system.training.config import TrainConfig

SHAPE_FLAGS = {"layers": "n_layers", "dim": "dim", "heads": "n_heads", "kv_heads": "n_kv_heads",
               "ffn": "ffn_dim", "vocab": "vocab_size"}
THIS_MACHINE = "this-machine"
PARAM_DTYPE = {"bf16-mixed": "bfloat16", "fp32": "float32"}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("plan", help="capacity planner: fastest layouts of a training run that fit memory",
                                   description=__doc__)
    parser.add_argument("--model", default="1T", choices=sorted(MODEL_CONFIGS), help="named shape (default 1T)")
    for flag in SHAPE_FLAGS:
        parser.add_argument(f"--{flag.replace('_', '-')}", type=number(int, 1),
                            help=f"override the shape's {flag}")
    parser.add_argument("--seq", type=number(int, 1), default=2048, help="sequence length (default 2048)")
    parser.add_argument("--global-batch", type=number(int, 1), default=1536,
                        help="sequences per iteration (default 1536)")
    parser.add_argument("--gpu", default="H100-SXM", choices=[*sorted(ACCELERATORS), THIS_MACHINE],
                        help=f"accelerator, or {THIS_MACHINE}: measure this machine with --gpus local ranks")
    parser.add_argument("--gpus", type=number(int, 1), default=2048,
                        help="GPU (or local rank) count (default 2048)")
    parser.add_argument("--precision", default="bf16-mixed", choices=sorted(PRECISIONS))
    parser.add_argument("--efficiency", type=number(float, 0, 1, low_open=True), default=None,
                        help="plan with the flat time model: every FLOP at this fraction of peak (default: the GPU's "
                             "time model calibrated on published runs; 1.0 for this-machine, whose peak is a "
                             "measured training step)")
    parser.add_argument("--dp-overlap", type=number(float, 0, 1), default=None,
                        help="with the flat model, the fraction of data-parallel communication hidden by compute "
                             "(default 0)")
    parser.add_argument("--tokens", type=number(float, 0, low_open=True),
                        help="training token budget, for total time and GPU-hours")
    parser.add_argument("--price-per-gpu-hour", type=number(float, 0), help="USD per GPU-hour, for the cost")
    parser.add_argument("--top", type=number(int, 1), default=5, help="layouts to list (default 5)")
    parser.add_argument("--layout", type=layout_argument,
                        help="evaluate one layout instead of searching, e.g. 'dp=16,tp=8,pp=16,mb=1,recompute=full'")
    parser.add_argument("--json", action="store_true", help="print the ranked summaries as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        return _plan(args)
    except ValueError as error:
        print(f"ai-system plan: error: {error}", file=sys.stderr)
        return 2
    except OverflowError:
        print("ai-system plan: error: a model shape, --seq or --global-batch is too large to compute with",
              file=sys.stderr)
        return 2


def train_config(args: argparse.Namespace, layout: Layout) -> TrainConfig:
    """The training run a plan describes, as ``ai-system train`` will run it."""
    overrides = {field: getattr(args, flag) for flag, field in SHAPE_FLAGS.items() if getattr(args, flag) is not None}
    if args.seq > get_config(args.model).max_seq_len:
        overrides["max_seq_len"] = args.seq
    return TrainConfig(model=args.model, model_overrides=overrides, seq_len=args.seq, batch_size=args.global_batch,
                       layout=layout, param_dtype=PARAM_DTYPE[args.precision])


def train_command(args: argparse.Namespace, layout: Layout) -> str:
    return shlex.join(["ai-system", "train", *train_arguments(train_config(args, layout))])


def accelerator_for(args: argparse.Namespace) -> Accelerator:
    if args.gpu != THIS_MACHINE:
        return get_accelerator(args.gpu)
    cores = os.cpu_count() or 1
    if args.gpus > cores:
        raise ValueError(f"--gpus {args.gpus} with --gpu {THIS_MACHINE} starts that many local ranks; this machine "
                         f"has {cores} cores: expected at most {cores}")
    return run_distributed(measured_machine, args.gpus, train_config(args, Layout()))


def summary_of(result: Estimate, args: argparse.Namespace) -> dict[str, float | int | str]:
    """A plan's figures; raises if one is not a finite number (inputs so large that they overflow)."""
    summary = {**run_summary(result, args.tokens, args.price_per_gpu_hour),
               "train_command": train_command(args, result.layout)}
    for key, value in summary.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"the plan's {key} is {value}: the model shape, --tokens or --price-per-gpu-hour is "
                             "too large to compute")
    return summary


def _plan(args: argparse.Namespace) -> int:
    config = train_config(args, Layout()).model_config()
    job = Job(config, seq_len=args.seq, global_batch=args.global_batch, precision=PRECISIONS[args.precision])
    accelerator = accelerator_for(args)
    efficiency = args.efficiency if args.efficiency is not None else (1.0 if args.gpu == THIS_MACHINE else None)
    if args.layout:
        if args.layout.world_size != args.gpus:
            raise ValueError(f"--layout {args.layout} uses {args.layout.world_size} GPUs but --gpus is {args.gpus}")
        result = estimate(job, args.layout, accelerator, efficiency, args.dp_overlap)
        summary = summary_of(result, args)
        summary["fits"] = result.fits()
        summary["hardware_tflops_per_gpu"] = result.hardware_flops / result.iteration_seconds / args.gpus / 1e12
        print(json.dumps(summary, indent=2, allow_nan=False) if args.json
              else "\n".join(f"{k:<32}{v}" for k, v in summary.items()))
        return 0
    ranked = search(job, accelerator, args.gpus, compute_efficiency=efficiency, dp_overlap=args.dp_overlap)
    if not ranked:
        print(f"no layout of {config.num_params() / 1e9:.1f}B parameters fits {args.gpus} × {args.gpu}")
        return 1
    summaries = [summary_of(result, args) for result in ranked[:args.top]]
    if args.json:
        print(json.dumps(summaries, indent=2, allow_nan=False))
        return 0
    print(f"{config.num_params() / 1e9:,.3g}B parameters, seq {args.seq}, global batch {args.global_batch}, "
          f"{args.gpus} × {args.gpu}, {args.precision}, time model: {ranked[0].time_model.source}: "
          f"{len(ranked)} layouts fit")
    print(f"{'layout':<72}{'mem GB':>8}{'iter s':>10}{'MFU':>7}{'bubble':>8}")
    for summary in summaries:
        print(f"{summary['layout']:<72}{summary['memory_gb']:>8.3g}{summary['iteration_seconds']:>10.4g}"
              f"{summary['mfu']:>7.1%}{summary['bubble']:>8.1%}")
    print("\nbest layout:")
    for key, value in summaries[0].items():
        if key != "train_command":
            print(f"  {key:<32}{value:,.3f}" if isinstance(value, float) else f"  {key:<32}{value}")
    print(f"\nrun it:\n  {summaries[0]['train_command']}")
    return 0
