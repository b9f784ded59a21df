"""Pipeline bubble: measured idle fraction of a 2-stage pipeline step vs (p-1)/(v·m+p-1).

Two gloo ranks on this CPU, one thread each, the ``small`` transformer split in two stages (four
with interleaving), trained by the one trainer.
Busy time is each stage's forward/backward compute timed inside the real step; everything else
(waiting for the neighbour, gloo send/recv, schedule bookkeeping) counts as bubble, so on CPU the
measured bubble sits above the formula by the point-to-point and Python overhead per micro-batch;
larger micro-batches (the full profile) shrink that overhead relative to compute.
"""

from __future__ import annotations

from ai_system.distributed.launch import run_distributed
from ai_system.distributed.layout import Layout
from ai_system.training.bubble import measure_bubbles
from ai_system.training.config import TrainConfig

PIPELINE_RANKS = 2


def test_pipeline_bubble_vs_formula(benchmark, record, profile):
    schedules = profile.pick(quick=("1f1b",), full=("gpipe", "1f1b", "interleaved-1f1b"))
    microbatch_counts = profile.pick(quick=(8,), full=(2, 4, 8, 16))
    micro_batch = profile.pick(quick=4, full=8)
    cases = [(schedule, m) for schedule in schedules for m in microbatch_counts]
    configs = [TrainConfig(model="small", dataset="synthetic", batch_size=micro_batch * m, seq_len=128, progress=False,
                           layout=Layout.parse(f"pp={PIPELINE_RANKS},mb={micro_batch},schedule={schedule}"))
               for schedule, m in cases]
    results = benchmark.pedantic(run_distributed, args=(measure_bubbles, PIPELINE_RANKS, configs),
                                 rounds=1, iterations=1)
    for (schedule, m), result in zip(cases, results, strict=True):
        params = {"schedule": schedule, "pp": PIPELINE_RANKS, "microbatches": m, "micro_batch": micro_batch,
                  "formula_pct": round(100 * result["formula"], 2), "device": "cpu", "backend": "gloo"}
        record(name="pipeline_bubble_measured", value=100 * result["measured"], unit="%", better="lower",
               area="parallel", scale=f"{PIPELINE_RANKS} stages × {m} micro-batches", params=params,
               x="microbatches",
               description=f"{schedule}: idle fraction of a pipeline step (1 - stage compute / step time), "
                           f"formula (p-1)/(v·m+p-1) = {100 * result['formula']:.1f}%")
        record(name="pipeline_bubble_error", value=100 * abs(result["measured"] / result["formula"] - 1),
               unit="% of formula", better="lower", area="parallel",
               scale=f"{PIPELINE_RANKS} stages × {m} micro-batches", params=params, x="microbatches",
               description=f"{schedule}: |measured bubble / formula - 1|; the goal is under 10% at m >= 4p")
