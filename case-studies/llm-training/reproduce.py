"""Reproduce the LLM-training case study: the 1T-parameter plan and the small measured runs behind it.

    python case-studies/llm-training/reproduce.py            # plan + measured runs (~3 min on 2 cores)
    python case-studies/llm-training/reproduce.py --plan-only

Writes ``plan.json`` (projected) and ``measured.json`` (parity, planner validation, bubble) to --out
(default ``artifacts/llm-training/``).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, replace
from pathlib import Path

from ai_system.distributed.launch import run_distributed
from ai_system.distributed.layout import Layout
from ai_system.models.config import get_config
from ai_system.planning.accelerators import get_accelerator
from ai_system.planning.measure import plan_and_verify
from ai_system.planning.planner import Job, estimate, run_summary, search
from ai_system.training.bubble import measure_bubbles
from ai_system.training.config import TrainConfig
from ai_system.training.parity import compare_layouts

ONE_TRILLION = get_config("1T")
FLEET = {"gpu": "H100-SXM", "gpus": 2048, "global_batch": 1536, "seq_len": 2048, "training_tokens": 1e12,
         "price_per_gpu_hour": 2.5}
MEGATRON_1T = {"gpu": "A100-80GB", "layout": Layout(dp=6, tp=8, pp=64, zero=0, micro_batch=1, recompute="full"),
               "global_batch": 3072, "published_tflops_per_gpu": 163}


def plan() -> dict:
    """The planner's layout for the stated fleet, and its estimate for Megatron-LM's published 1T run."""
    job = Job(ONE_TRILLION, seq_len=FLEET["seq_len"], global_batch=FLEET["global_batch"])
    ranked = search(job, get_accelerator(FLEET["gpu"]), FLEET["gpus"])
    top = [run_summary(result, FLEET["training_tokens"], FLEET["price_per_gpu_hour"]) for result in ranked[:5]]
    megatron = estimate(Job(ONE_TRILLION, seq_len=2048, global_batch=MEGATRON_1T["global_batch"]),
                        MEGATRON_1T["layout"], get_accelerator(MEGATRON_1T["gpu"]))
    achieved = megatron.hardware_flops / megatron.iteration_seconds / megatron.layout.world_size / 1e12
    return {"kind": "projected", "fleet": FLEET, "time_model": ranked[0].time_model.source,
            "layouts_that_fit": len(ranked), "top": top,
            "megatron_1t_check": {"layout": megatron.layout.label(), "gpu": MEGATRON_1T["gpu"],
                                  "predicted_tflops_per_gpu": achieved,
                                  "published_tflops_per_gpu": MEGATRON_1T["published_tflops_per_gpu"],
                                  "predicted_memory_gb": megatron.memory.total / 1e9}}


def measured() -> dict:
    """Parity of layouts with one process, the planner's plans for this machine run and checked, the bubble."""
    parity_config = TrainConfig(model="debug", model_overrides={"n_layers": 4}, dataset="synthetic", seq_len=32,
                                batch_size=8, steps=10, warmup_steps=2, progress=False)

    def configs(base: TrainConfig, layouts: list[str]) -> list[TrainConfig]:
        return [replace(base, layout=Layout.parse(text)) for text in layouts]

    parity = run_distributed(compare_layouts, 2, configs(parity_config, ["tp=2", "pp=2,mb=2"]))
    parity += run_distributed(compare_layouts, 4, configs(parity_config, ["dp=2,tp=2", "pp=2,tp=2,mb=2"]))
    small = TrainConfig(model="small", dataset="synthetic", batch_size=8, seq_len=128, steps=3, progress=False)
    validation = run_distributed(plan_and_verify, 2, small, 3)
    bubble_configs = [replace(small, batch_size=4 * m, layout=Layout.parse("pp=2,mb=4")) for m in (2, 8)]
    bubbles = run_distributed(measure_bubbles, 2, bubble_configs)
    return {"kind": "measured", "parity": [asdict(result) for result in parity], "planner_validation": validation,
            "bubble": [{"microbatches": m, **result} for m, result in zip((2, 8), bubbles, strict=True)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[2] / "artifacts" / "llm-training")
    parser.add_argument("--plan-only", action="store_true", help="skip the measured runs")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    result = plan()
    (args.out / "plan.json").write_text(json.dumps(result, indent=2))
    best = result["top"][0]
    print(f"1T plan on {FLEET['gpus']} × {FLEET['gpu']}: {best['layout']}, {best['memory_gb']:.1f} GB/GPU, "
          f"{best['iteration_seconds']:.1f} s/iteration, MFU {best['mfu']:.1%}, {best['training_days']:.0f} days "
          f"for {FLEET['training_tokens']:.0e} tokens, ${best['cost_usd'] / 1e6:.1f}M")
    check = result["megatron_1t_check"]
    print(f"Megatron-LM 1T check ({check['layout']} on {check['gpu']}): predicted "
          f"{check['predicted_tflops_per_gpu']:.0f} TFLOP/s/GPU vs published {check['published_tflops_per_gpu']}")
    if not args.plan_only:
        runs = measured()
        (args.out / "measured.json").write_text(json.dumps(runs, indent=2))
        for row in runs["planner_validation"]:
            print(f"plan {row['layout']}: memory predicted {row['predicted_bytes'] / 1e6:.1f} MB vs measured "
                  f"{row['measured_bytes'] / 1e6:.1f} MB; step {row['predicted_seconds']:.3f} s vs "
                  f"{row['measured_seconds']:.3f} s")
        for result_row in runs["parity"]:
            print(f"{result_row['layout']}: max |grad diff| {result_row['grad_max_diff']:.1e}, "
                  f"final loss {result_row['losses'][-1]:.4f} vs {result_row['reference_losses'][-1]:.4f}")
        for row in runs["bubble"]:
            print(f"1F1B, 2 stages, m={row['microbatches']}: bubble {row['measured']:.1%} vs formula "
                  f"{row['formula']:.1%}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
