from __future__ import annotations

import math
from pathlib import Path

import pytest

from ai_system.planning.calibration import CALIBRATED, FITTED, constants_table
from ai_system.planning.validation import (
    Case,
    Excluded,
    case_of,
    fit_time_model,
    held_out_table,
    layout_rank,
    leave_one_out,
    planned_config,
    predicted,
    published_cases,
    validation_table,
)

CASES, EXCLUDED = published_cases()
BY_ID = {case.run.run_id: case for case in CASES}


def test_every_run_is_a_case_or_excluded_with_its_reason() -> None:
    assert len(CASES) + len(EXCLUDED) == 75
    assert len(CASES) >= 50
    reasons = {excluded.run.run_id: excluded.reason for excluded in EXCLUDED}
    assert "Float8" in reasons["torchtitan2412-8b-8gpu-fsdp-compile-float8"]
    assert "context parallelism" in reasons["llama3-405b-128k-16384gpu"]
    assert "async TP" in reasons["torchtitan2506-8b-64gpu-async-tp"]
    assert all(isinstance(case_of(case.run), Case) for case in CASES[:3])
    assert all(isinstance(case_of(excluded.run), Excluded) for excluded in EXCLUDED[:3])


def test_unpublished_knobs_are_listed_as_assumptions() -> None:
    megatron = BY_ID["megatron2021-t1-1008b"]
    assert any("micro-batch not published" in text for text in megatron.assumptions)
    assert len(megatron.layouts) > 1
    korthikanti = BY_ID["korthikanti2022-530b-selective-sp"]
    assert len(korthikanti.layouts) == 1 and korthikanti.layouts[0].recompute == "selective"
    assert korthikanti.implementation.sequence_parallel(korthikanti.layouts[0])


def test_gelu_runs_are_planned_with_the_same_weights() -> None:
    run = BY_ID["megatron2021-t1-7.5b"].run
    config, notes = planned_config(run)
    gelu_mlp, swiglu_mlp = 2 * run.dim * run.ffn_dim, 3 * run.dim * config.hidden_dim
    assert swiglu_mlp == pytest.approx(gelu_mlp, rel=0.01) and "SwiGLU" in notes[0]


@pytest.mark.parametrize("gpu", sorted(FITTED))
def test_stored_calibration_is_the_fit_of_the_published_runs(gpu: str) -> None:
    fitted = fit_time_model(CASES, gpu)
    for name in FITTED[gpu]:
        stored, now = getattr(CALIBRATED[gpu], name), getattr(fitted, name)
        assert stored == pytest.approx(now, rel=0.01, abs=1e-7), (
            f"{gpu} {name}: stored {stored:.3g}, the published runs now fit {now:.3g}; update CALIBRATED")


def test_calibrated_predictions_stay_near_the_published_runs() -> None:
    """A regression guard on the model, far looser than the benchmark's 10% goal."""
    errors = {case.run.run_id: predicted(case, CALIBRATED[case.gpu]) / case.published - 1 for case in CASES}
    assert all(math.isfinite(error) for error in errors.values())
    assert sorted(abs(error) for error in errors.values())[len(errors) // 2] < 0.08
    assert max(abs(error) for error in errors.values()) < 0.3, max(errors.items(), key=lambda item: abs(item[1]))


def test_leave_one_out_refits_without_the_case() -> None:
    llama = [case for case in CASES if case.gpu == "H100-SXM"]
    held_out = leave_one_out(llama)
    assert set(held_out) == {case.run.run_id for case in llama}
    for case in llama:
        assert held_out[case.run.run_id] != pytest.approx(predicted(case, CALIBRATED[case.gpu]), rel=1e-6)


def test_published_layout_ranks_among_the_trainers_candidates() -> None:
    case = BY_ID["korthikanti2022-530b-selective-sp"]
    rank = layout_rank(case, CALIBRATED[case.gpu])
    assert rank.rank == 1 and rank.best_speedup == 1.0
    baseline = BY_ID["megatron2021-t2-zero3-174.6b-1536gpu"]
    slow = layout_rank(baseline, CALIBRATED[baseline.gpu])
    assert slow.rank > 5 and slow.best_speedup > 1.5


def test_capacity_planner_page_shows_the_generated_tables() -> None:
    """The page's constants and per-run tables are generated; regenerate with
    ``python -m ai_system.planning.validation`` and ``calibration.constants_table()``."""
    page = (Path(__file__).resolve().parents[2] / "docs" / "systems" / "capacity-planner.md").read_text()
    assert "\n".join(constants_table()) in page
    assert "\n".join(validation_table(CASES, EXCLUDED)) in page


def test_capacity_planner_page_shows_the_held_out_rows_of_the_h100_runs() -> None:
    """The H100 constants refit in seconds; ``python -m ai_system.planning.validation`` regenerates every row."""
    h100 = [case for case in CASES if case.gpu.startswith("H100")]
    ranks = {case.run.run_id: layout_rank(case, CALIBRATED[case.gpu]) for case in h100}
    page = (Path(__file__).resolve().parents[2] / "docs" / "systems" / "capacity-planner.md").read_text()
    for line in held_out_table(h100, leave_one_out(h100), ranks):
        assert line in page
