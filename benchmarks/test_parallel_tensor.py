"""Tensor parallelism on 2 gloo ranks: explicit collectives vs the DTensor plan vs no sharding.

Forward + backward of one batch of the ``small`` model, each rank with one thread; the unsharded
model runs on every rank alone at the same time, so all variants share the two cores alike. The
gap between the explicit version and the DTensor plan is DTensor's per-op dispatch on CPU for a
model this small, and it is what the capacity planner (which counts only FLOPs and bytes) misses
in its TP step-time prediction.
"""

from __future__ import annotations

from ai_system.models.config import get_config
from ai_system.parallel.launch import run_distributed
from ai_system.parallel.runs import RunSpec, time_tensor_parallel_variants

RANKS = 2


def test_tensor_parallel_variants(benchmark, record):
    spec = RunSpec(get_config("small"), batch=8, seq_len=128)
    seconds = benchmark.pedantic(run_distributed, args=(time_tensor_parallel_variants, RANKS, spec),
                                 rounds=1, iterations=1)
    for variant, value in seconds.items():
        params = {"variant": variant, "tp": RANKS, "model": "small", "batch": spec.batch, "seq_len": spec.seq_len,
                  "device": "cpu", "backend": "gloo"}
        record(name="tp_forward_backward_seconds", value=value, unit="s", better="lower", area="parallel",
               scale=f"{RANKS} gloo ranks", params=params,
               description=f"{variant}: median forward+backward of {spec.batch}×{spec.seq_len} tokens")
        if variant != "unsharded":
            record(name="tp_speedup_vs_unsharded", value=seconds["unsharded"] / value, unit="×", better="higher",
                   area="parallel", scale=f"{RANKS} gloo ranks", params=params,
                   description=f"{variant}: unsharded forward+backward time / tensor-parallel time")
