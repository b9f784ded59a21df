"""The 1T-parameter plan: what the capacity planner projects for a stated H100 fleet.

Projected, not measured: the inputs are NVIDIA's datasheet figures for the GPU, an assumed matmul
efficiency, and the planner's own formulas (validated on CPU by ``test_parallel_planner.py``).
"""

from __future__ import annotations

from ai_system.bench.metrics import Projection
from ai_system.planning.accelerators import get_accelerator
from ai_system.planning.planner import ONE_TRILLION, Job, run_summary, search

FLEET_GPU = "H100-SXM"
FLEET_SIZE = 2048
GLOBAL_BATCH = 1536
SEQ_LEN = 2048
EFFICIENCY = 0.5
TRAINING_TOKENS = 1e12


def test_one_trillion_plan(benchmark, record):
    accelerator = get_accelerator(FLEET_GPU)
    job = Job(ONE_TRILLION, seq_len=SEQ_LEN, global_batch=GLOBAL_BATCH)
    ranked = benchmark.pedantic(search, args=(job, accelerator, FLEET_SIZE),
                                kwargs={"compute_efficiency": EFFICIENCY}, rounds=1, iterations=1)
    best = run_summary(ranked[0], training_tokens=TRAINING_TOKENS)
    projection = Projection(
        model="capacity planner (ai_system.planning.planner.search), fastest fitting layout",
        inputs={"gpu": FLEET_GPU, "gpus": FLEET_SIZE, "peak_bf16_tflops": accelerator.peak_flops / 1e12,
                "memory_gb": accelerator.memory_bytes / 1e9, "nvlink_gb_s": accelerator.intra_node_bandwidth / 1e9,
                "network_gb_s": accelerator.inter_node_bandwidth / 1e9, "assumed_matmul_efficiency": EFFICIENCY,
                "params": ONE_TRILLION.num_params(), "seq_len": SEQ_LEN, "global_batch": GLOBAL_BATCH,
                "training_tokens": TRAINING_TOKENS})
    scale = f"{FLEET_SIZE} × {FLEET_GPU}, 1T params"
    common = {"area": "parallel", "scale": scale, "kind": "projected", "projection": projection,
              "params": {"layout": best["layout"], "gpu": FLEET_GPU, "gpus": FLEET_SIZE}}
    record(name="plan_1t_iteration_seconds", value=best["iteration_seconds"], unit="s", better="lower",
           description=f"time per iteration of {GLOBAL_BATCH}×{SEQ_LEN} tokens, layout {best['layout']}", **common)
    record(name="plan_1t_mfu", value=100 * best["mfu"], unit="%", better="higher",
           description="model FLOPs utilization (6N + 12·L·d·s per token, no recompute FLOPs)", **common)
    record(name="plan_1t_memory_per_gpu", value=best["memory_gb"], unit="GB", better="lower",
           description="parameters + gradients + optimizer + activations + FSDP buffers on the busiest stage",
           **common)
    record(name="plan_1t_training_days", value=best["training_days"], unit="days", better="lower",
           description=f"{TRAINING_TOKENS:.0e} training tokens at the projected iteration time", **common)
    record(name="plan_1t_gpu_hours", value=best["gpu_hours"] / 1e6, unit="M GPU-hours", better="lower",
           description=f"{TRAINING_TOKENS:.0e} tokens × {FLEET_SIZE} GPUs", **common)
