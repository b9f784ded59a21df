"""Parity of every parallel layout with the single-process transformer (gloo ranks on this CPU).

Tolerances are fp32: logits and loss within 1e-5 absolute (values are O(1)), gradients within
1e-6 absolute (the largest reference gradient is ~3e-2), and the loss curves of 10 AdamW steps
within 1e-4 of the reference at every step. Observed differences are ~1e-7 (different summation
order of the sharded matmuls and all-reduces), far inside these bounds.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from ai_system.models.config import get_config
from ai_system.parallel.compose import Layout
from ai_system.parallel.launch import run_distributed
from ai_system.parallel.runs import Comparison, RunSpec, compare_explicit_tensor_parallel, compare_layouts

SPEC = RunSpec(get_config("debug", n_layers=4), batch=8, seq_len=32, steps=10)
TWO_RANK_LAYOUTS = [
    Layout(tp=2),
    Layout(tp=2, sequence_parallel=False),
    Layout(pp=2, n_microbatches=4, schedule="gpipe"),
    Layout(pp=2, n_microbatches=4, schedule="1f1b"),
    Layout(pp=2, n_microbatches=4, schedule="interleaved-1f1b"),
]
FOUR_RANK_LAYOUTS = [
    Layout(dp=2, tp=2),
    Layout(pp=2, tp=2, n_microbatches=4),
    Layout(pp=2, dp=2, n_microbatches=2, checkpoint=True),
]


def assert_matches_reference(result: Comparison) -> None:
    assert result.logits_max_diff < 1e-5, result
    assert result.loss_diff < 1e-5, result
    assert result.grad_max_diff < 1e-6, result
    assert result.grad_max_abs > 1e-3, "reference gradients are too small for the tolerance to mean anything"
    assert not result.missing_grads, f"{result.layout} produced no gradient for {result.missing_grads}"
    for step, (ours, reference) in enumerate(zip(result.losses, result.reference_losses, strict=True)):
        assert abs(ours - reference) < 1e-4, f"{result.layout} step {step}: {ours} vs {reference}"


@pytest.fixture(scope="module")
def two_rank_results() -> dict[str, Comparison]:
    results = run_distributed(compare_layouts, 2, TWO_RANK_LAYOUTS, SPEC)
    return {layout.label(): result for layout, result in zip(TWO_RANK_LAYOUTS, results, strict=True)}


@pytest.mark.parametrize("key", ["pp1-dp1-tp2", "pp1-dp1-tp2-nosp", "pp2-dp1-tp1-gpipe", "pp2-dp1-tp1-1f1b",
                                 "pp2-dp1-tp1-interleaved-1f1b"])
def test_two_rank_layout_matches_single_process(two_rank_results: dict[str, Comparison], key: str) -> None:
    assert_matches_reference(two_rank_results[key])


def test_training_actually_moves_the_loss(two_rank_results: dict[str, Comparison]) -> None:
    losses = two_rank_results["pp1-dp1-tp2"].losses
    assert losses[-1] < losses[0] - 0.5


def test_four_rank_compositions_match_single_process() -> None:
    for result in run_distributed(compare_layouts, 4, FOUR_RANK_LAYOUTS, SPEC):
        assert_matches_reference(result)


@pytest.mark.slow
def test_three_dimensional_layout_matches_single_process() -> None:
    """PP × FSDP × TP = 2 × 2 × 2 with activation checkpointing: 8 ranks, so 3 steps keep it ~40 s."""
    layout = Layout(pp=2, dp=2, tp=2, n_microbatches=2, checkpoint=True)
    assert_matches_reference(run_distributed(compare_layouts, 8, [layout], replace(SPEC, steps=3))[0])


def test_explicit_collectives_match_single_process() -> None:
    result = run_distributed(compare_explicit_tensor_parallel, 2, SPEC)
    assert result.logits_max_diff < 1e-5 and result.loss_diff < 1e-5 and result.grad_max_diff < 1e-6, result
