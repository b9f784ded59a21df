from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import pytest

from ai_system.models.config import get_config
from ai_system.planning.published_runs import (
    COLUMNS,
    FLOP_CONVENTIONS,
    PUBLISHED_RUNS_CSV,
    UNITS,
    PublishedRun,
    load_published_runs,
    runs_table,
)

RUNS = load_published_runs()
BY_ID = {run.run_id: run for run in RUNS}


def by_id(run_id: str) -> PublishedRun:
    return BY_ID[run_id]


def test_table_covers_megatron_table_1_and_torchtitan_llama_on_h100() -> None:
    megatron = [run for run in RUNS if run.run_id.startswith("megatron2021-t1-")]
    assert len(megatron) == 10
    assert [run.gpu_count for run in megatron] == [32, 64, 128, 256, 512, 1024, 1536, 1920, 2520, 3072]
    assert by_id("megatron2021-t1-1008b").throughput.value == 163
    eager, compiled = by_id("torchtitan2412-8b-8gpu-fsdp"), by_id("torchtitan2412-8b-8gpu-fsdp-compile")
    assert (eager.compile, compiled.compile) == (False, True)
    assert (eager.throughput.value, compiled.throughput.value) == (5762, 6667)
    assert {run.model for run in RUNS if run.run_id.startswith("torchtitan2412-")} >= {
        "Llama 3.1 8B", "Llama 3.1 70B", "Llama 3.1 405B"}


def test_every_row_cites_its_source() -> None:
    for run in RUNS:
        assert run.source and run.reference, run.run_id
        assert run.url.startswith("https://"), run.run_id


def test_run_ids_are_unique() -> None:
    assert len(BY_ID) == len(RUNS)


def test_layout_multiplies_to_the_gpu_count_where_published() -> None:
    complete = [run for run in RUNS if run.world_size is not None]
    assert len(complete) == len(RUNS)
    for run in complete:
        assert run.tp * run.cp * run.pp * run.dp == run.gpu_count, run.run_id


def test_units_and_conventions_are_known() -> None:
    for run in RUNS:
        assert run.throughput.unit in UNITS
        assert run.flop_convention in FLOP_CONVENTIONS


@pytest.mark.parametrize("run", [run for run in RUNS if run.cross_check is not None], ids=lambda run: run.run_id)
def test_the_sources_second_figure_converts_to_the_same_tokens_per_second(run: PublishedRun) -> None:
    """Both published figures of a run, each through its own unit and the source's FLOP convention.

    2% covers the sources' rounding (Megatron-LM prints % of peak as an integer; Llama 3 prints
    400 TFLOP/s beside 41%, i.e. 40.4% of 989).
    """
    headline = run.tokens_per_second_per_gpu()
    assert run.tokens_per_second_per_gpu(run.cross_check) == pytest.approx(headline, rel=0.02)


def test_model_tflops_apply_the_callers_formula_to_tokens_per_second() -> None:
    megatron = by_id("megatron2021-t1-1008b")
    assert megatron.model_tflops_per_gpu(FLOP_CONVENTIONS["narayanan_eq3"]) == pytest.approx(163)
    without_recompute = megatron.model_tflops_per_gpu(FLOP_CONVENTIONS["megatron_model"])
    assert without_recompute / 163 == pytest.approx(0.75, abs=0.01)
    torchtitan = by_id("torchtitan2412-8b-8gpu-fsdp")
    assert torchtitan.model_tflops_per_gpu(lambda run: 1e12) == pytest.approx(5762)


def test_torchtitan_mfu_convention_is_this_projects_model_flops() -> None:
    """torchtitan counts 6N + 12·L·d·s without the input embedding, as ModelConfig does."""
    run = by_id("torchtitan2412-8b-8gpu-fsdp")
    assert run.model_config().num_params() == get_config("8B").num_params()
    assert run.source_flops_per_token() == get_config("8B").train_flops_per_token(8192)
    mfu = 100 * run.model_tflops_per_gpu(lambda r: r.model_config().train_flops_per_token(r.seq_len)) / 989
    assert 33 <= mfu < 34


def test_iteration_seconds_returns_a_published_step_time() -> None:
    assert by_id("bloom-176b-384gpu").iteration_seconds() == pytest.approx(104.70)
    with pytest.raises(ValueError, match="global_batch is not published"):
        by_id("korthikanti2022-530b-2240gpu-selective-sp").iteration_seconds()


def test_megatron_formulas_refuse_shapes_they_do_not_describe() -> None:
    llama = replace(by_id("llama3-405b-8k-8192gpu"), flop_convention="narayanan_eq3")
    with pytest.raises(ValueError, match="MHA, 4h GeLU MLP"):
        llama.source_flops_per_token()
    with pytest.raises(ValueError, match="SwiGLU"):
        by_id("megatron2021-t1-1008b").model_config()


def write_rows(path: Path, rows: list[dict[str, str]]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def first_row() -> dict[str, str]:
    with open(PUBLISHED_RUNS_CSV, newline="") as handle:
        return next(csv.DictReader(handle))


@pytest.mark.parametrize(("column", "value", "message"), [
    ("tp", "2", r"tp\*cp\*pp\*dp = 2\*1\*1\*32 = 64, expected gpu_count=32"),
    ("url", "arxiv.org/abs/2104.04473", "expected an https:// link"),
    ("source", "", "source is empty"),
    ("throughput_unit", "tflops", "throughput_value/throughput_unit: unit 'tflops'"),
    ("throughput_value", "", "throughput_value and throughput_unit go together"),
    ("n_layers", "", "n_layers is empty: expected an integer"),
    ("dim", "2304.5", "dim='2304.5': expected an integer"),
    ("interleaved", "true", "interleaved='true': expected yes, no or empty"),
    ("recompute", "partial", "recompute='partial': expected one of"),
    ("peak_tflops", "", "percent_of_peak figure needs peak_tflops"),
    ("micro_batch", "5", "micro_batch=5 does not divide the 16 sequences"),
])
def test_bad_cells_are_named_with_file_line_run_and_field(tmp_path: Path, column: str, value: str,
                                                          message: str) -> None:
    row = first_row()
    row[column] = value
    path = write_rows(tmp_path / "runs.csv", [first_row(), {**row, "run_id": "bad-row"}])
    with pytest.raises(ValueError, match=message) as error:
        load_published_runs(path)
    assert f"{path}:3: run 'bad-row'" in str(error.value)


def test_duplicated_run_id_names_both_lines(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "runs.csv", [first_row(), first_row()])
    with pytest.raises(ValueError, match=r"runs.csv:3: run_id 'megatron2021-t1-1.7b' duplicates line 2"):
        load_published_runs(path)


def test_header_must_match_the_columns(tmp_path: Path) -> None:
    path = tmp_path / "runs.csv"
    path.write_text("run_id,source\nx,y\n")
    with pytest.raises(ValueError, match="header does not match"):
        load_published_runs(path)


def test_docs_page_shows_the_generated_runs_table() -> None:
    """Regenerate with ``python -m ai_system.planning.published_runs`` if the CSV changes."""
    page = Path(__file__).resolve().parents[2] / "docs" / "systems" / "published-runs.md"
    assert "\n".join(runs_table(RUNS)) in page.read_text()
