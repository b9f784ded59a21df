"""Capacity planner vs measurement: peak memory and step time of real runs of each layout.

The planner is given this machine as measured in the same run (one rank's training-step FLOP/s,
gloo all-reduce bus bandwidth, efficiency 1), fp32 AdamW, FSDP over dp; memory is the peak of live
tensor bytes (``LiveTensorMemory``). Four-rank layouts share two cores, so their step times are
oversubscribed and only their memory is meaningful.
"""

from __future__ import annotations

import pytest

from ai_system.models.config import get_config
from ai_system.parallel.compose import Layout
from ai_system.parallel.launch import run_distributed
from ai_system.parallel.runs import RunSpec
from ai_system.planning.measure import validate_layouts

TWO_RANK = [Layout(tp=2), Layout(pp=2, n_microbatches=4), Layout(dp=2)]
TWO_RANK_FULL = [Layout(tp=2, sequence_parallel=False), Layout(pp=2, n_microbatches=4, schedule="gpipe")]
FOUR_RANK = [Layout(dp=2, tp=2), Layout(pp=2, tp=2, n_microbatches=4), Layout(pp=2, dp=2, n_microbatches=2)]


def _run_all(groups: list[list[Layout]], spec: RunSpec) -> list[dict]:
    rows = []
    for layouts in groups:
        rows += run_distributed(validate_layouts, layouts[0].world_size, layouts, spec)
    return rows


def test_planner_predicted_vs_measured(benchmark, record, profile):
    spec = RunSpec(get_config("small"), batch=8, seq_len=128, steps=profile.pick(quick=2, full=4))
    groups = profile.pick(quick=[TWO_RANK],
                          full=[[Layout(), Layout(checkpoint=True)], TWO_RANK + TWO_RANK_FULL, FOUR_RANK])
    rows = benchmark.pedantic(_run_all, args=(groups, spec), rounds=1, iterations=1)
    for row in rows:
        ranks = row["ranks"]
        params = {"layout": row["layout"], "schedule": row["schedule"], "sequence_parallel": row["sequence_parallel"],
                  "checkpoint": row["checkpoint"], "model": "small", "batch": spec.batch, "seq_len": spec.seq_len,
                  "device": "cpu", "backend": "gloo"}
        memory_error = row["predicted_bytes"] / row["measured_bytes"] - 1
        record(name="planner_memory_error", value=100 * abs(memory_error), unit="%", better="lower",
               area="parallel", scale=f"{ranks} gloo ranks",
               params={**params, "measured_mb": round(row["measured_bytes"] / 1e6, 2),
                       "predicted_mb": round(row["predicted_bytes"] / 1e6, 2)},
               description=f"{row['layout']}: planner memory per rank {row['predicted_bytes'] / 1e6:.1f} MB vs "
                           f"measured peak live tensors {row['measured_bytes'] / 1e6:.1f} MB "
                           f"({100 * memory_error:+.1f}%); goal within 10%")
        if ranks <= 2:
            time_error = row["predicted_seconds"] / row["measured_seconds"] - 1
            record(name="planner_time_error", value=100 * abs(time_error), unit="%", better="lower",
                   area="parallel", scale=f"{ranks} gloo ranks",
                   params={**params, "measured_s": round(row["measured_seconds"], 4),
                           "predicted_s": round(row["predicted_seconds"], 4),
                           "rank_gflops": round(row["rank_flops"] / 1e9, 2),
                           "bus_gb_per_s": round(row["bus_bandwidth"] / 1e9, 3)},
                   description=f"{row['layout']}: planner step time {row['predicted_seconds']:.3f} s vs measured "
                               f"{row['measured_seconds']:.3f} s ({100 * time_error:+.1f}%); gloo on a shared "
                               "2-core CPU, collectives latency-bound")


@pytest.mark.gpu
def test_planner_memory_on_one_gpu(benchmark, record):
    """One GPU: the planner's memory for the unsharded 125M model, with and without checkpointing."""
    spec = RunSpec(get_config("125M"), batch=8, seq_len=512, steps=3, device="cuda")
    layouts = [Layout(), Layout(checkpoint=True)]
    rows = benchmark.pedantic(run_distributed, args=(validate_layouts, 1, layouts, spec), kwargs={"backend": "nccl"},
                              rounds=1, iterations=1)
    for row in rows:
        error = row["predicted_bytes"] / row["measured_bytes"] - 1
        record(name="planner_memory_error_gpu", value=100 * abs(error), unit="%", better="lower", area="parallel",
               scale="1 GPU", params={"layout": row["layout"], "checkpoint": row["checkpoint"], "model": "125M",
                                      "batch": spec.batch, "seq_len": spec.seq_len, "device": "cuda",
                                      "measured_mb": round(row["measured_bytes"] / 1e6, 1),
                                      "predicted_mb": round(row["predicted_bytes"] / 1e6, 1)},
               description=f"{row['layout']}: planner memory {row['predicted_bytes'] / 1e6:.0f} MB vs "
                           f"torch.cuda.max_memory_allocated {row['measured_bytes'] / 1e6:.0f} MB "
                           f"({100 * error:+.1f}%), fp32 AdamW")
