"""``ai-system plan``: lay out a training run over a GPU fleet and print the fastest layouts."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace

from ai_system.planning.accelerators import ACCELERATORS, get_accelerator
from ai_system.planning.planner import PRECISIONS, Job, Parallelism, estimate, model_shape, run_summary, search

SHAPE_FLAGS = {"layers": "n_layers", "dim": "dim", "heads": "n_heads", "kv_heads": "n_kv_heads",
               "ffn": "ffn_dim", "vocab": "vocab_size"}


def parse_layout(text: str, gpus: int) -> Parallelism:
    """``tp,pp,micro_batch,zero,recompute`` → a layout over ``gpus`` GPUs."""
    parts = text.split(",")
    if len(parts) != 5:
        raise ValueError(f"--layout wants tp,pp,micro_batch,zero,recompute (e.g. 8,64,1,0,full), got {text!r}")
    tp, pp, micro_batch, zero = (int(part) for part in parts[:4])
    if gpus % (tp * pp):
        raise ValueError(f"--gpus {gpus} is not a multiple of tp·pp = {tp * pp}")
    return Parallelism(tp=tp, pp=pp, dp=gpus // (tp * pp), micro_batch=micro_batch, zero=zero, recompute=parts[4])


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("plan", help="capacity planner: fastest layouts of a training run that fit memory",
                                   description=__doc__)
    parser.add_argument("--model", default="1T", help="named shape: 1T, debug, small, 125M, 1B, 8B (default 1T)")
    for flag in SHAPE_FLAGS:
        parser.add_argument(f"--{flag.replace('_', '-')}", type=int, help=f"override the shape's {flag}")
    parser.add_argument("--seq", type=int, default=2048, help="sequence length (default 2048)")
    parser.add_argument("--global-batch", type=int, default=1536, help="sequences per iteration (default 1536)")
    parser.add_argument("--gpu", default="H100-SXM", choices=sorted(ACCELERATORS))
    parser.add_argument("--gpus", type=int, default=2048, help="GPU count (default 2048)")
    parser.add_argument("--precision", default="bf16-mixed", choices=sorted(PRECISIONS))
    parser.add_argument("--efficiency", type=float, default=0.5,
                        help="fraction of peak FLOP/s the matmuls reach (default 0.5)")
    parser.add_argument("--dp-overlap", type=float, default=0.0,
                        help="fraction of data-parallel communication hidden by compute (default 0)")
    parser.add_argument("--tokens", type=float, help="training token budget, for total time and GPU-hours")
    parser.add_argument("--price-per-gpu-hour", type=float, help="USD per GPU-hour, for the cost")
    parser.add_argument("--top", type=int, default=5, help="layouts to list (default 5)")
    parser.add_argument("--layout", help="evaluate one layout instead of searching: tp,pp,micro_batch,zero,recompute "
                                         "(e.g. 8,64,1,0,full); dp is gpus / (tp·pp)")
    parser.add_argument("--json", action="store_true", help="print the ranked summaries as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        return _plan(args)
    except ValueError as error:
        print(f"ai-system plan: {error}", file=sys.stderr)
        return 2


def _plan(args: argparse.Namespace) -> int:
    overrides = {field: getattr(args, flag) for flag, field in SHAPE_FLAGS.items() if getattr(args, flag) is not None}
    config = replace(model_shape(args.model), **overrides)
    job = Job(config, seq_len=args.seq, global_batch=args.global_batch, precision=PRECISIONS[args.precision])
    accelerator = get_accelerator(args.gpu)
    if args.layout:
        result = estimate(job, parse_layout(args.layout, args.gpus), accelerator, args.efficiency, args.dp_overlap)
        summary = run_summary(result, args.tokens, args.price_per_gpu_hour)
        summary["fits"] = result.fits()
        summary["hardware_tflops_per_gpu"] = result.hardware_flops / result.iteration_seconds / args.gpus / 1e12
        print(json.dumps(summary, indent=2) if args.json else "\n".join(f"{k:<32}{v}" for k, v in summary.items()))
        return 0
    ranked = search(job, accelerator, args.gpus, compute_efficiency=args.efficiency, dp_overlap=args.dp_overlap)
    if not ranked:
        print(f"no layout of {config.num_params() / 1e9:.1f}B parameters fits {args.gpus} × {args.gpu}")
        return 1
    summaries = [run_summary(result, args.tokens, args.price_per_gpu_hour) for result in ranked[:args.top]]
    if args.json:
        print(json.dumps(summaries, indent=2))
        return 0
    print(f"{config.num_params() / 1e9:,.1f}B parameters, seq {args.seq}, global batch {args.global_batch}, "
          f"{args.gpus} × {args.gpu}, {args.precision}, efficiency {args.efficiency}: "
          f"{len(ranked)} layouts fit")
    print(f"{'layout':<44}{'mem GB':>8}{'iter s':>9}{'MFU':>7}{'bubble':>8}")
    for summary in summaries:
        print(f"{summary['layout']:<44}{summary['memory_gb']:>8.1f}{summary['iteration_seconds']:>9.2f}"
              f"{summary['mfu']:>7.1%}{summary['bubble']:>8.1%}")
    print("\nbest layout:")
    for key, value in summaries[0].items():
        print(f"  {key:<32}{value:,.3f}" if isinstance(value, float) else f"  {key:<32}{value}")
    return 0
