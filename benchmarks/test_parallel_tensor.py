"""Tensor parallelism on 2 gloo ranks: explicit collectives vs the DTensor plan vs no sharding.

Forward + backward of one batch of the ``small`` model, each rank with one thread; the unsharded
model runs on every rank alone at the same time, so all variants share the two cores alike. The
gap between the explicit version and the DTensor plan is DTensor's per-op dispatch on CPU for a
model this small, and it is what the capacity planner (which counts only FLOPs and bytes) misses
in its TP step-time prediction.
"""

from __future__ import annotations

from ai_system.bench.metrics import Baseline
from ai_system.distributed.launch import run_distributed
from ai_system.training.config import TrainConfig
from ai_system.training.parity import time_tensor_parallel_variants

RANKS = 2


def test_tensor_parallel_variants(benchmark, record):
    config = TrainConfig(model="small", dataset="synthetic", batch_size=8, seq_len=128, progress=False)
    seconds = benchmark.pedantic(run_distributed, args=(time_tensor_parallel_variants, RANKS, config),
                                 rounds=1, iterations=1)
    for variant, value in seconds.items():
        params = {"variant": variant, "tp": RANKS, "model": "small", "batch": config.batch_size,
                  "seq_len": config.seq_len, "device": "cpu", "backend": "gloo"}
        record(name="tp_forward_backward_seconds", value=value, unit="s", better="lower", area="parallel",
               scale=f"{RANKS} gloo ranks", params=params,
               description=f"{variant}: median forward+backward of {config.batch_size}×{config.seq_len} tokens")
        if variant != "unsharded":
            record(name="tp_speedup_vs_unsharded", value=seconds["unsharded"] / value, unit="×", better="higher",
                   area="parallel", scale=f"{RANKS} gloo ranks", params=params,
                   question="Does 2-way tensor parallelism make a training step faster than one process?",
                   baseline=Baseline("one unsharded process", seconds["unsharded"], "s", ours=value),
                   description=f"{variant}: unsharded forward+backward time / tensor-parallel time")
