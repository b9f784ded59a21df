"""The capacity planner held against published large-scale training runs (``published_runs.csv``).

Projected, not measured: nothing runs on a GPU here. For every published run the planner can model
it predicts the throughput from the run's model, layout, framework and GPU datasheet, with the time
model's constants fitted on the *other* published runs of that GPU (leave-one-out), and publishes
the prediction next to the throughput the source measured; then it searches the layouts of the
run's GPU count and says where the published layout ranks. The first planner's flat model (every
FLOP at 50% of peak, bandwidth-only links) is the baseline the calibrated one improves on.
"""

from __future__ import annotations

from ai_system.bench.metrics import Baseline, Projection
from ai_system.planning.calibration import CALIBRATED
from ai_system.planning.time_model import TimeModel
from ai_system.planning.validation import (
    FLAT_EFFICIENCY,
    FRAMEWORKS,
    Case,
    case_estimate,
    layout_rank,
    leave_one_out,
    predicted,
    published_cases,
    tokens_per_second_per_gpu,
)

ERROR_GOAL = 10.0
RANK_GOAL = 5
UNIT = "tok/s/GPU"


def _projection(case: Case) -> Projection:
    accelerator = case.accelerator
    return Projection(
        model="capacity planner time model (ai_system.planning.time_model) with constants fitted on the other "
              "published runs of the same GPU (leave-one-out)",
        inputs={"gpu": case.gpu, "peak_tflops": accelerator.peak_flops / 1e12,
                "hbm_tb_s": (accelerator.memory_bandwidth or 0) / 1e12,
                "nvlink_gb_s": accelerator.intra_node_bandwidth / 1e9,
                "network_gb_s": accelerator.inter_node_bandwidth / 1e9, "framework": FRAMEWORKS[case.framework].name,
                "source": f"{case.run.source.split(':')[0]}, {case.run.reference}"})


def test_planner_against_published_runs(benchmark, record):
    cases, excluded = published_cases()
    held_out = benchmark.pedantic(leave_one_out, args=(cases,), rounds=1, iterations=1)
    flat = TimeModel.flat_efficiency(FLAT_EFFICIENCY)
    published, predicted_held_out = [], []
    for case in cases:
        run_id, calibrated = case.run.run_id, CALIBRATED[case.gpu]
        fitted = case_estimate(case, calibrated)
        loo = held_out[run_id]
        error = 100 * abs(loo / case.published - 1)
        flat_error = 100 * abs(predicted(case, flat) / case.published - 1)
        rank = layout_rank(case, calibrated)
        published.append(case.published)
        predicted_held_out.append(loo)
        common = {"area": "parallel", "scale": f"{case.run.gpu_count} × {case.run.gpu}", "kind": "projected",
                  "projection": _projection(case),
                  "params": {"run": run_id, "gpu": case.gpu, "layout": fitted.layout.label()}}
        record(name="published_run_predicted_tokens_per_s", value=loo, unit=UNIT, better="higher",
               baseline=Baseline(f"published ({case.run.source.split(':')[0]})", case.published, UNIT, "peer"),
               description="throughput per GPU the planner predicts for the published run, with constants fitted "
                           "without it", **common)
        record(name="published_run_error", value=error, unit="%", better="lower", goal=ERROR_GOAL,
               question="How close is the planner's throughput to published large-scale runs, with its constants "
                        "fitted on the other runs (leave-one-out)?",
               baseline=Baseline(f"the first planner (flat {FLAT_EFFICIENCY:.0%} of peak)", max(flat_error, 1e-3),
                                 "%", "formula"),
               description="|predicted − published| / published, the prediction made with constants fitted on "
                           "the other published runs of the same GPU", **common)
        record(name="published_run_fit_error",
               value=100 * abs(tokens_per_second_per_gpu(fitted) / case.published - 1), unit="%", better="lower",
               description="the same error with the constants fitted on every run (the planner's calibration)",
               **common)
        record(name="published_run_layout_rank", value=rank.rank, unit="rank", better="lower", goal=RANK_GOAL,
               question="Does the planner's layout search rank the published layout among its five fastest?",
               description="where the published layout ranks among the trainer's candidate layouts of the same "
                           "GPU count that fit memory, with the published recomputation and the framework's "
                           "ZeRO stages, timed by the calibrated model (1 = the planner's pick)", **common)
        record(name="published_run_best_layout_gain", value=100 * (rank.best_speedup - 1), unit="%", better="lower",
               description="how much faster the planner predicts its own best layout than the published one",
               **common)
    worst = max(range(len(cases)), key=lambda index: abs(predicted_held_out[index] / published[index] - 1))
    record(name="published_runs_predicted_vs_published",
           value=100 * abs(predicted_held_out[worst] / published[worst] - 1), unit="%", better="lower",
           area="parallel", kind="projected",
           scale=f"{len(cases)} published runs ({len(excluded)} left out)",
           projection=Projection(model="capacity planner time model, leave-one-out",
                                 inputs={"runs": len(cases), "left_out": len(excluded)}),
           params={"runs": len(cases)},
           curve={"published_tok_s_per_gpu": published, "predicted_tok_s_per_gpu": predicted_held_out},
           description=f"every modelled run, predicted (leave-one-out) against published throughput per GPU; the "
                       f"value is the worst error, {cases[worst].run.run_id}")
