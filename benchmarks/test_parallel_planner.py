"""Capacity planner vs measurement: plan this machine, run the plans with the trainer, compare.

``plan → run → verify``: the planner is given this machine as measured in the same run (one rank's
training-step FLOP/s, gloo all-reduce bus bandwidth, efficiency 1), picks its fastest layouts, and
the one trainer runs each; predicted and measured step time and peak memory are published side by
side (``planner_*_measured`` next to the projected ``planner_*_predicted``, one row per layout on the
results page) with the planner's error. Memory is the peak of live tensor bytes (``LiveTensorMemory``).
A second set of fixed layouts (full profile) covers what the planner would not pick here:
checkpointing, TP without SP, GPipe, 4-rank compositions, whose step times on two shared cores
are oversubscribed (only memory counts).
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from ai_system.bench.metrics import Baseline, Projection
from ai_system.distributed.launch import run_distributed
from ai_system.distributed.layout import Layout
from ai_system.planning.measure import plan_and_verify, validate_layouts
from ai_system.training.config import TrainConfig

PLAN_RANKS = 2
FIXED_TWO_RANK = ["dp=2", "tp=2", "tp=2,sp=off", "pp=2,mb=2", "pp=2,mb=2,schedule=gpipe", "dp=2,recompute=full"]
FIXED_FOUR_RANK = ["dp=2,tp=2", "pp=2,tp=2,mb=2", "pp=2,dp=2,mb=2"]


def _config(profile) -> TrainConfig:
    return TrainConfig(model="small", dataset="synthetic", batch_size=8, seq_len=128, progress=False,
                       steps=profile.pick(quick=3, full=5))


def _params(row: dict, config: TrainConfig, plan_rank: int | None) -> dict:
    params = {"layout": row["layout"], "ranks": row["ranks"], "schedule": row["schedule"],
              "recompute": row["recompute"], "model": config.model, "batch": config.batch_size,
              "seq_len": config.seq_len, "device": "cpu", "backend": "gloo"}
    if plan_rank is not None:
        params["plan_rank"] = plan_rank
    return params


def _record_side_by_side(record, row: dict, params: dict, origin: str, what: str, unit: str, scale_to_unit: float,
                         measured: float, predicted: float) -> None:
    """The measured figure and the planner's projection of it, as two columns of one layout's row on the site."""
    calibration = Projection(model="capacity planner (ai_system.planning.planner.estimate), efficiency 1",
                             inputs={"layout": row["layout"], "rank_gflops": round(row["rank_flops"] / 1e9, 3),
                                     "bus_gb_per_s": round(row["bus_bandwidth"] / 1e9, 4)})
    scale = f"{row['ranks']} gloo ranks"
    record(name=f"planner_{what}_measured", value=measured * scale_to_unit, unit=unit, better="lower",
           area="parallel", scale=scale, params=params,
           baseline=Baseline("planner's prediction", predicted * scale_to_unit, unit, kind="formula"),
           description=f"{origin} {row['layout']}: {what.replace('_', ' ')} measured by the trainer")
    record(name=f"planner_{what}_predicted", value=predicted * scale_to_unit, unit=unit, better="lower",
           area="parallel", scale=scale, params=params, kind="projected", projection=calibration,
           description=f"{origin} {row['layout']}: {what.replace('_', ' ')} the planner predicts for this machine, "
                       "calibrated in the same run")


def _record_rows(record, rows: list[dict], config: TrainConfig, planned: bool) -> None:
    for index, row in enumerate(rows):
        params = _params(row, config, index + 1 if planned else None)
        origin = f"plan #{index + 1} for this machine" if planned else "fixed layout"
        _record_side_by_side(record, row, params, origin, "peak_memory", "MB", 1e-6, row["measured_bytes"],
                             row["predicted_bytes"])
        memory_error = row["predicted_bytes"] / row["measured_bytes"] - 1
        record(name="planner_memory_error", value=100 * abs(memory_error), unit="%", better="lower",
               area="parallel", scale=f"{row['ranks']} gloo ranks", params=params, goal=10.0,
               question="How close is the capacity planner's memory prediction to a measured run?",
               baseline=Baseline("planner's prediction", row["predicted_bytes"] / 1e6, "MB", kind="formula",
                                 ours=row["measured_bytes"] / 1e6),
               description=f"{origin} {row['layout']}: planner memory per rank {row['predicted_bytes'] / 1e6:.1f} MB "
                           f"vs measured peak live tensors {row['measured_bytes'] / 1e6:.1f} MB "
                           f"({100 * memory_error:+.1f}%); goal within 10%")
        if row["ranks"] <= PLAN_RANKS:
            _record_side_by_side(record, row, params, origin, "step_seconds", "s", 1.0, row["measured_seconds"],
                                 row["predicted_seconds"])
            time_error = row["predicted_seconds"] / row["measured_seconds"] - 1
            record(name="planner_time_error", value=100 * abs(time_error), unit="%", better="lower",
                   area="parallel", scale=f"{row['ranks']} gloo ranks", params=params,
                   question="How close is the capacity planner's time prediction to a measured run?",
                   baseline=Baseline("planner's prediction", row["predicted_seconds"], "s", kind="formula",
                                     ours=row["measured_seconds"]),
                   description=f"{origin} {row['layout']}: planner step time {row['predicted_seconds']:.3f} s vs "
                               f"measured {row['measured_seconds']:.3f} s ({100 * time_error:+.1f}%), calibrated "
                               f"to {row['rank_flops'] / 1e9:.2f} GFLOP/s per rank and "
                               f"{row['bus_bandwidth'] / 1e9:.3f} GB/s bus bandwidth; gloo on a shared 2-core CPU")


def test_planner_top_plans_run_as_predicted(benchmark, record, profile):
    """The planner's best layouts for this machine, run by the trainer: the plan → run → verify loop."""
    config = _config(profile)
    count = profile.pick(quick=3, full=4)
    rows = benchmark.pedantic(run_distributed, args=(plan_and_verify, PLAN_RANKS, config, count),
                              rounds=1, iterations=1)
    assert len(rows) == count, f"the planner proposed {len(rows)} distinct layouts, expected {count}"
    _record_rows(record, rows, config, planned=True)


def test_planner_fixed_layouts_predicted_vs_measured(benchmark, record, profile):
    if profile.name == "quick":
        pytest.skip("full profile only: the quick profile verifies the planner's own top plans")
    config = _config(profile)

    def run_all() -> list[dict]:
        rows = run_distributed(validate_layouts, 1, [config, replace(config, layout=Layout(recompute="full"))])
        for ranks, layouts in ((2, FIXED_TWO_RANK), (4, FIXED_FOUR_RANK)):
            rows += run_distributed(validate_layouts, ranks,
                                    [replace(config, layout=Layout.parse(text)) for text in layouts])
        return rows

    rows = benchmark.pedantic(run_all, rounds=1, iterations=1)
    _record_rows(record, rows, config, planned=False)


@pytest.mark.gpu
def test_planner_memory_on_one_gpu(benchmark, record):
    """One GPU: the planner's memory for the unsharded 125M model, with and without checkpointing."""
    config = TrainConfig(model="125M", dataset="synthetic", batch_size=8, seq_len=512, steps=3, progress=False)
    configs = [config, replace(config, layout=Layout(recompute="full"))]
    rows = benchmark.pedantic(run_distributed, args=(validate_layouts, 1, configs), kwargs={"backend": "nccl"},
                              rounds=1, iterations=1)
    for row in rows:
        error = row["predicted_bytes"] / row["measured_bytes"] - 1
        record(name="planner_memory_error_gpu", value=100 * abs(error), unit="%", better="lower", area="parallel",
               scale="1 GPU", params={"layout": row["layout"], "recompute": row["recompute"], "model": "125M",
                                      "batch": config.batch_size, "seq_len": config.seq_len, "device": "cuda"},
               question="How close is the capacity planner's memory prediction to a measured run?", goal=10.0,
               baseline=Baseline("planner's prediction", row["predicted_bytes"] / 1e6, "MB", kind="formula",
                                 ours=row["measured_bytes"] / 1e6),
               description=f"{row['layout']}: planner memory {row['predicted_bytes'] / 1e6:.0f} MB vs "
                           f"torch.cuda.max_memory_allocated {row['measured_bytes'] / 1e6:.0f} MB "
                           f"({100 * error:+.1f}%), fp32 AdamW")
