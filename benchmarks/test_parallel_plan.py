"""The 1T-parameter plan: what the capacity planner projects for a stated H100 fleet.

Projected, not measured: the inputs are NVIDIA's datasheet figures for the GPU, the time model's
constants for the H100 fitted on published Llama 3 runs (``ai_system/planning/calibration.py``;
``test_parallel_published.py`` holds the model against every published run), and the planner's
own formulas.
"""

from ai_system.bench.metrics import Baseline, Projection
from ai_system.models.config import get_config
from ai_system.planning.accelerators import get_accelerator
from ai_system.planning.calibration import calibrated_time_model
from ai_system.planning.planner import USABLE_MEMORY, Job, run_summary, search

FLEET_GPU = "H100-SXM"
FLEET_SIZE = 2048
GLOBAL_BATCH = 1536
SEQ_LEN = 2048
TRAINING_TOKENS = 1e12
ONE_TRILLION = get_config("1T")


def test_one_trillion_plan(benchmark, record):
    accelerator = get_accelerator(FLEET_GPU)
    model = calibrated_time_model(accelerator)
    job = Job(ONE_TRILLION, seq_len=SEQ_LEN, global_batch=GLOBAL_BATCH)
    ranked = benchmark.pedantic(search, args=(job, accelerator, FLEET_SIZE), rounds=1, iterations=1)
    best = run_summary(ranked[0], training_tokens=TRAINING_TOKENS)
    projection = Projection(
        model="capacity planner (ai_system.planning.planner.search), fastest fitting layout",
        inputs={"gpu": FLEET_GPU, "gpus": FLEET_SIZE, "peak_bf16_tflops": accelerator.peak_flops / 1e12,
                "memory_gb": accelerator.memory_bytes / 1e9, "nvlink_gb_s": accelerator.intra_node_bandwidth / 1e9,
                "network_gb_s": accelerator.inter_node_bandwidth / 1e9, "time_model": model.source,
                "matmul_efficiency": model.matmul_efficiency, "params": ONE_TRILLION.num_params(),
                "seq_len": SEQ_LEN, "global_batch": GLOBAL_BATCH, "training_tokens": TRAINING_TOKENS})
    scale = f"{FLEET_SIZE} × {FLEET_GPU}, 1T params"
    common = {"area": "parallel", "scale": scale, "kind": "projected", "projection": projection,
              "params": {"layout": best["layout"], "gpu": FLEET_GPU, "gpus": FLEET_SIZE}}
    record(name="plan_1t_iteration_seconds", value=best["iteration_seconds"], unit="s", better="lower",
           description=f"time per iteration of {GLOBAL_BATCH}×{SEQ_LEN} tokens, layout {best['layout']}", **common)
    record(name="plan_1t_mfu", value=100 * best["mfu"], unit="%", better="higher",
           question="What MFU does the planner project for a 1T-parameter model on its fleet?",
           description="model FLOPs utilization (6N + 12·L·d·s per token, no recompute FLOPs)", **common)
    memory_gb = accelerator.memory_bytes / 1e9
    record(name="plan_1t_memory_per_gpu", value=best["memory_gb"], unit="GB", better="lower",
           goal=USABLE_MEMORY * memory_gb,
           question="Does the planned 1T layout fit the GPU's memory, with room for what the model does not count?",
           baseline=Baseline(f"{FLEET_GPU} memory", memory_gb, "GB", "limit"),
           description="parameters + gradients + optimizer + activations + FSDP buffers on the busiest stage; "
                       f"goal {USABLE_MEMORY:.0%} of the GPU's memory", **common)
    record(name="plan_1t_training_days", value=best["training_days"], unit="days", better="lower",
           description=f"{TRAINING_TOKENS:.0e} training tokens at the projected iteration time", **common)
    record(name="plan_1t_gpu_hours", value=best["gpu_hours"] / 1e6, unit="M GPU-hours", better="lower",
           description=f"{TRAINING_TOKENS:.0e} tokens × {FLEET_SIZE} GPUs", **common)
