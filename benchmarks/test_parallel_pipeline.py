"""Pipeline bubble: measured idle fraction of a pipeline step, next to its prediction and the formula.

Two gloo ranks on this CPU, one thread each, the ``small`` transformer split in two stages (four
with interleaving), trained by the one trainer (``ai_system.training.bubble``). Busy time is each
stage's forward, loss, backward and gradient scaling timed inside the real step; everything else
(waiting for the neighbour, gloo send/recv, schedule bookkeeping) is bubble. The prediction replays
every rank's order of work with the seconds each piece took and the point-to-point time measured
in the same run; the formula (p-1)/(v·m+p-1) assumes equal stages that never communicate, and how
far it is off is published separately (it is what the capacity planner uses).
"""

from __future__ import annotations

from ai_system.bench.metrics import Baseline, Spread
from ai_system.distributed.launch import run_distributed
from ai_system.distributed.layout import Layout
from ai_system.training.bubble import measure_bubbles
from ai_system.training.config import TrainConfig

PIPELINE_RANKS = 2


def test_pipeline_bubble_vs_prediction(benchmark, record, profile):
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
                  "device": "cpu", "backend": "gloo"}
        scale = f"{PIPELINE_RANKS} stages × {m} micro-batches"
        measured, predicted, formula = (100 * result[key] for key in ("measured", "predicted", "formula"))
        record(name="pipeline_bubble_measured", value=measured, unit="%", better="lower", area="parallel",
               scale=scale, params=params, x="microbatches",
               question="How much of a pipeline step do the ranks sit idle?",
               spread=Spread.of([100 * value for value in result["measured_steps"]]),
               baseline=Baseline("formula (p-1)/(v·m+p-1)", formula, "%", kind="formula"),
               description=f"{schedule}: idle fraction of a pipeline step (1 - busy / step time); predicted from the "
                           f"measured stage and transfer times {predicted:.1f}%, formula {formula:.1f}%; step "
                           f"{result['step_seconds']:.3f} s measured, {result['predicted_step_seconds']:.3f} s "
                           f"simulated, one transfer {1e3 * result['transfer_seconds']:.2f} ms")
        record(name="pipeline_bubble_prediction_error", value=100 * abs(result["measured"] / result["predicted"] - 1),
               unit="% of prediction", better="lower", area="parallel", scale=scale, params=params, x="microbatches",
               question="Does the measured bubble match the one predicted from times measured in the same run?",
               goal=10.0 if m >= 4 * PIPELINE_RANKS else None,
               spread=Spread.of([100 * value for value in result["error_steps"]]),
               description=f"{schedule}: |measured / predicted - 1|, the prediction replaying each rank's order of "
                           "work with the seconds each piece took and the measured point-to-point time")
        record(name="pipeline_bubble_error", value=100 * abs(result["measured"] / result["formula"] - 1),
               unit="% of formula", better="lower", area="parallel", scale=scale, params=params, x="microbatches",
               description=f"{schedule}: |measured / formula - 1|: what assuming equal stages that never communicate "
                           "costs the capacity planner's bubble")
