"""Parity of every parallel layout with the single-process model, published with its loss curve.

The tests (``tests/parallel``) assert the tolerances; this benchmark publishes the observed worst
gradient difference and the 10-step loss curves, so the results page shows them per layout. Full
profile only: the quick profile leaves parity to the tests.
"""

from __future__ import annotations

import pytest

from ai_system.models.config import get_config
from ai_system.parallel.compose import Layout
from ai_system.parallel.launch import run_distributed
from ai_system.parallel.runs import RunSpec, compare_layouts

TWO_RANK = [Layout(tp=2), Layout(pp=2, n_microbatches=4, schedule="gpipe"), Layout(pp=2, n_microbatches=4),
            Layout(pp=2, n_microbatches=4, schedule="interleaved-1f1b")]
FOUR_RANK = [Layout(dp=2, tp=2), Layout(pp=2, tp=2, n_microbatches=4),
             Layout(pp=2, dp=2, n_microbatches=2, checkpoint=True)]


def _compare_all(spec: RunSpec) -> list:
    return run_distributed(compare_layouts, 2, TWO_RANK, spec) + run_distributed(compare_layouts, 4, FOUR_RANK, spec)


def test_layouts_match_single_process(benchmark, record, profile):
    if profile.name == "quick":
        pytest.skip("full profile only; tests/parallel asserts parity in CI")
    spec = RunSpec(get_config("debug", n_layers=4), batch=8, seq_len=32, steps=10)
    results = benchmark.pedantic(_compare_all, args=(spec,), rounds=1, iterations=1)
    for layout, result in zip(TWO_RANK + FOUR_RANK, results, strict=True):
        record(name="parity_grad_max_abs_diff", value=result.grad_max_diff, unit="abs", better="lower",
               area="parallel", scale=f"{layout.world_size} gloo ranks",
               params={"layout": result.layout, "schedule": layout.schedule if layout.pp > 1 else "none",
                       "checkpoint": layout.checkpoint, "model": "debug-4-layers", "dtype": "float32",
                       "logits_max_abs_diff": result.logits_max_diff, "loss_abs_diff": result.loss_diff},
               curve={"step": list(range(1, spec.steps + 1)), "loss": result.losses,
                      "single_process_loss": result.reference_losses},
               description=f"{result.layout}: worst |gradient - single-process gradient| after gathering "
                           f"(largest gradient {result.grad_max_abs:.2e}); curve: 10 AdamW steps, both runs")
