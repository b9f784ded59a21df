"""Parity of every parallel layout with the single-process model, published with its loss curve.

The tests (``tests/parallel``) assert the tolerances; this benchmark publishes the observed worst
gradient difference and the 10-step loss curves, so the results page shows them per layout. Full
profile only: the quick profile leaves parity to the tests.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from ai_system.distributed.launch import run_distributed
from ai_system.distributed.layout import Layout
from ai_system.training.config import TrainConfig
from ai_system.training.parity import compare_layouts

TWO_RANK = ["dp=2", "tp=2", "pp=2,mb=2,schedule=gpipe", "pp=2,mb=2", "pp=2,mb=1,schedule=interleaved-1f1b"]
FOUR_RANK = ["dp=2,tp=2", "pp=2,tp=2,mb=2", "pp=2,dp=2,mb=2,recompute=full"]


def _compare_all(config: TrainConfig) -> list:
    def configs(layouts: list[str]) -> list[TrainConfig]:
        return [replace(config, layout=Layout.parse(text)) for text in layouts]

    return (run_distributed(compare_layouts, 2, configs(TWO_RANK))
            + run_distributed(compare_layouts, 4, configs(FOUR_RANK)))


def test_layouts_match_single_process(benchmark, record, profile):
    if profile.name == "quick":
        pytest.skip("full profile only; tests/distributed/test_layout_parity.py asserts parity in CI")
    config = TrainConfig(model="debug", model_overrides={"n_layers": 4}, dataset="synthetic", seq_len=32, batch_size=8,
                         steps=10, warmup_steps=2, progress=False)
    results = benchmark.pedantic(_compare_all, args=(config,), rounds=1, iterations=1)
    for text, result in zip(TWO_RANK + FOUR_RANK, results, strict=True):
        layout = Layout.parse(text)
        record(name="parity_grad_max_abs_diff", value=result.grad_max_diff, unit="abs", better="lower",
               area="parallel", scale=f"{layout.world_size} gloo ranks", goal=1e-6,
               question="Does every parallel layout compute the same gradients as one process?",
               params={"layout": result.layout, "schedule": layout.schedule if layout.pp > 1 else "none",
                       "recompute": layout.recompute, "model": "debug-4-layers", "dtype": "float32",
                       "loss_abs_diff": result.loss_diff},
               curve={"step": list(range(1, config.steps + 1)), "loss": result.losses,
                      "single_process_loss": result.reference_losses},
               description=f"{result.layout}: worst |gradient - single-process gradient| after gathering "
                           f"(largest gradient {result.grad_max_abs:.2e}); curve: 10 steps of the full recipe, "
                           "both runs")
