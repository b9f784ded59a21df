"""Every layout trains the same model as one process: the one trainer, sharded, next to itself unsharded.

Gloo ranks on this CPU, batches of the stdlib corpus, the full recipe on both sides (AdamW with decay
groups, clipping, warmup-cosine schedule). Tolerances are fp32: the first loss within 1e-5 absolute (values are O(1)),
gradients within 1e-6 absolute (the largest reference gradient is ~3e-2), and the loss curves of
10 steps within 1e-4 of the reference at every step. Observed differences are ~1e-7 or below
(different summation order of the sharded matmuls and reductions), far inside these bounds.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from ai_system.distributed.launch import run_distributed
from ai_system.distributed.layout import Layout
from ai_system.training.config import TrainConfig
from ai_system.training.parity import Comparison, compare_explicit_tensor_parallel, compare_layouts

CONFIG = TrainConfig(model="debug", model_overrides={"n_layers": 4}, dataset="stdlib", seq_len=32, batch_size=8,
                     steps=10, warmup_steps=2, progress=False)
TWO_RANK_LAYOUTS = [
    "dp=2",
    "dp=2,zero=2",
    "dp=2,zero=0,recompute=selective",
    "tp=2",
    "tp=2,sp=off",
    "pp=2,mb=2,schedule=gpipe",
    "pp=2,mb=2,schedule=1f1b",
    "pp=2,mb=1,schedule=interleaved-1f1b",
]
FOUR_RANK_LAYOUTS = [
    "dp=2,tp=2",
    "dp=2,tp=2,zero=0",
    "pp=2,tp=2,mb=2",
    "pp=2,dp=2,mb=2,recompute=full",
]


def configs(layouts: list[str], **changes: object) -> list[TrainConfig]:
    return [replace(CONFIG, layout=Layout.parse(text), **changes) for text in layouts]


def assert_matches_reference(result: Comparison) -> None:
    assert result.loss_diff < 1e-5, result
    assert result.grad_max_diff < 1e-6, result
    assert result.grad_max_abs > 1e-3, "reference gradients are too small for the tolerance to mean anything"
    assert not result.missing_grads, f"{result.layout} produced no gradient for {result.missing_grads}"
    for step, (ours, reference) in enumerate(zip(result.losses, result.reference_losses, strict=True)):
        assert abs(ours - reference) < 1e-4, f"{result.layout} step {step}: {ours} vs {reference}"


@pytest.fixture(scope="module")
def two_rank_results() -> dict[str, Comparison]:
    results = run_distributed(compare_layouts, 2, configs(TWO_RANK_LAYOUTS))
    return {text: result for text, result in zip(TWO_RANK_LAYOUTS, results, strict=True)}


@pytest.mark.parametrize("layout", TWO_RANK_LAYOUTS)
def test_two_rank_layout_matches_single_process(two_rank_results: dict[str, Comparison], layout: str) -> None:
    assert_matches_reference(two_rank_results[layout])


def test_training_actually_moves_the_loss(two_rank_results: dict[str, Comparison]) -> None:
    losses = two_rank_results["tp=2"].losses
    assert losses[-1] < losses[0] - 1.0


def test_four_rank_compositions_match_single_process() -> None:
    for result in run_distributed(compare_layouts, 4, configs(FOUR_RANK_LAYOUTS)):
        assert_matches_reference(result)


@pytest.mark.slow
def test_three_dimensional_layout_matches_single_process() -> None:
    """PP × FSDP × TP = 2 × 2 × 2 with activation checkpointing: 8 ranks, so 3 steps keep it ~40 s."""
    layouts = configs(["pp=2,dp=2,tp=2,mb=2,recompute=full"], steps=3)
    assert_matches_reference(run_distributed(compare_layouts, 8, layouts)[0])


def test_explicit_collectives_match_single_process() -> None:
    result = run_distributed(compare_explicit_tensor_parallel, 2, CONFIG)
    assert result.loss_diff < 1e-5 and result.grad_max_diff < 1e-6, result
