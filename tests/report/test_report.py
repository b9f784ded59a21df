"""The report turns a known results folder into headline tables, readable details, history and plots."""

import json
from dataclasses import replace
from pathlib import Path

import matplotlib.pyplot as plt
import pytest

from ai_system.bench.metrics import Baseline, Metric, Projection, Spread
from ai_system.cli import main
from ai_system.report.format import format_value
from ai_system.report.headline import headlines
from ai_system.report.load import Row, Run, load_results, newest_rows
from ai_system.report.pages import seed_table_rows
from ai_system.report.plots import draw_references, is_scatter, same_quantity
from ai_system.report.tables import detail_tables

HARDWARE = {"cpu_model": "Test CPU", "cpu_cores": 2, "ram_gib": 8.0, "gpu": None, "python": "3.11",
            "torch": "2.13.0", "triton": None, "torch_threads": 2}
LABEL = "Test CPU, 2 cores, 8.0 GiB, torch 2.13.0"


def write_run(results: Path, when: str, commit: str, tests: dict[str, list], skipped=(), profile="quick",
              hardware: str = "test-cpu-2c") -> Path:
    """A results file; ``tests`` maps a test id to its metrics (Metric, or a raw dict as older files hold)."""
    data = {
        "datetime": when,
        "commit_info": {"id": commit, "dirty": False},
        "benchmarks": [{"fullname": test, "stats": {},
                        "extra_info": {"metrics": [m.to_dict() if isinstance(m, Metric) else m for m in metrics]}}
                       for test, metrics in tests.items()],
        "aisys": {"profile": profile, "hardware": HARDWARE, "hardware_slug": hardware,
                  "hardware_label": LABEL if hardware == "test-cpu-2c" else hardware, "skipped": list(skipped)},
    }
    folder = results / hardware
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{when[:10]}-{profile}.json"
    path.write_text(json.dumps(data))
    return path


def throughput(value: float, **judgement) -> Metric:
    return Metric(name="train_samples_per_s", value=value, unit="samples/s", better="higher", area="training",
                  scale="1 process", seed_row="training_throughput", **judgement)


MFU = Metric(name="train_mfu", value=60.0, unit="%", better="higher", area="training", scale="1 process",
             question="What share of the matmul peak does training reach?", goal=50.0,
             baseline=Baseline(name="fp32 matmul peak", value=0.2, unit="TFLOP/s", kind="peak", ours=0.12),
             spread=Spread(55.0, 60.0, 62.0, 3))
PROJECTED = [Metric(name="train_samples_per_s_32gpu", value=value, unit="samples/s", better="higher",
                    area="training", scale="32 GPUs", kind="projected", seed_row="training_throughput",
                    params={"overlap": overlap}, projection=Projection(model="fsdp comm", inputs={"per_gpu": 400.0}))
             for value, overlap in ((12345.678, True), (9000.0, False))]
REPLICAS = Metric(name="fleet_replicas", value=3.333e5, unit="replicas", better="lower", area="serving",
                  scale="1M QPS", kind="projected", seed_row="inference_latency",
                  projection=Projection(model="fleet", inputs={"p99_ms": 40.0}))
SWEEP = [Metric(name=f"serving_latency_{which}", value=value, unit="ms", better="lower", area="serving",
                scale="debug model", params={"batching": "dynamic", "qps": qps}, x="qps",
                goal=50.0 if which == "p99" else None)
         for qps, which, value in ((10.0, "p50", 20.0), (10.0, "p99", 30.0), (20.0, "p50", 40.0),
                                   (20.0, "p99", 80.0))]
LOOKUPS = [Metric(name="lookup_vs_gather", value=value, unit="ratio", better="higher", area="recommender",
                  scale="rows", params={"shards": shards}, question="Is the store close to memory speed?", goal=0.5,
                  baseline=Baseline(name="numpy gather", value=20.0, unit="Mrows/s", ours=20.0 * value))
           for shards, value in ((1, 0.55), (4, 0.28))]
CURVE = Metric(name="loss_curve", value=1.25, unit="nats", better="lower", area="training", scale="debug",
               curve={"step": [1, 2, 3], "loss": [3.0, 2.0, 1.25]})
SKIP = {"test": "benchmarks/test_serving_x.py::test_gpu[a]", "area": "serving", "reason": "needs a CUDA GPU"}
TRAIN = "benchmarks/test_training_x.py::test_train"


@pytest.fixture
def results(tmp_path) -> Path:
    folder = tmp_path / "results"
    write_run(folder, "2026-01-01T00:00:00+00:00", "a" * 40,
              {TRAIN: [throughput(100.0)], "benchmarks/test_serving_x.py::test_sweep": SWEEP})
    write_run(folder, "2026-02-01T00:00:00+00:00", "b" * 40,
              {TRAIN: [throughput(120.0, spread=Spread(110.0, 120.0, 125.0, 5)), MFU, *PROJECTED, CURVE],
               "benchmarks/test_serving_x.py::test_fleet": [REPLICAS],
               "benchmarks/test_recommender_x.py::test_lookup[1]": [LOOKUPS[0]],
               "benchmarks/test_recommender_x.py::test_lookup[4]": [LOOKUPS[1]]},
              skipped=[SKIP], profile="full")
    return folder


def test_values_read_with_three_significant_figures():
    assert [format_value(v) for v in (0.05991520317389386, 19.66, 12345.678, 3.333e5, 6.985e-9, 0.0, 7)] == [
        "0.0599", "19.7", "12,300", "333,000", "6.99e-09", "0", "7"]


def test_newest_rows_come_from_one_run_per_test(results):
    rows = newest_rows(load_results(results).rows)
    training = [row for row in rows if row.test == TRAIN]
    assert {row.run.profile for row in training} == {"full"}
    assert [row.metric.value for row in training if row.metric.name == "train_samples_per_s"] == [120.0]
    sweep = [row for row in rows if row.test.endswith("test_sweep")]
    assert {row.run.profile for row in sweep} == {"quick"}


def test_seed_table_has_one_row_per_seed_metric_and_projection_apart(results):
    rows = load_results(results).rows
    table = seed_table_rows(newest_rows(rows), rows)
    assert [line[0] for line in table] == ["Training Throughput", "Inference Latency", "Resource Utilization"]
    training, latency, utilization = table
    assert training[2].startswith("120 (110–125) samples/s<br><small>1 process; " + LABEL)
    assert training[3].startswith("9,000–12,300 samples/s") and "aisys-not-met" in training[3]
    assert "by fsdp comm" in training[3]
    assert latency[2] == "not yet measured" and latency[3] == "not yet projected"
    assert utilization[2] == "not yet measured"


def test_cost_and_replicas_go_in_the_projection_note_never_in_a_latency_cell(results, tmp_path):
    p99 = Metric(name="fleet_p99", value=40.0, unit="ms", better="lower", area="serving", scale="1M QPS",
                 kind="projected", seed_row="inference_latency", projection=Projection(model="fleet", inputs={"a": 1}))
    write_run(results, "2026-03-01T00:00:00+00:00", "c" * 40, {"benchmarks/test_serving_x.py::test_fleet": [
        REPLICAS, p99]})
    rows = load_results(results).rows
    latency = seed_table_rows(newest_rows(rows), rows)[1]
    assert latency[3].startswith("40.0 ms") and "aisys-met" in latency[3]
    assert "also 333,000 replicas" in latency[3] and "replicas" not in latency[2]


def test_headline_shows_ours_the_peer_the_ratio_the_goal_and_the_weakest_case(results):
    rows = [row for row in newest_rows(load_results(results).rows)]
    by_question = {head.question: head for head in headlines(rows)}
    mfu = by_question["What share of the matmul peak does training reach?"].cells()
    assert mfu[1:] == ["0.120 TFLOP/s", "fp32 matmul peak: 0.200 TFLOP/s", "60.0%", "≥ 50%",
                       '<span class="aisys-status aisys-met">✓ met</span>']
    lookup = by_question["Is the store close to memory speed?"]
    assert lookup.status == "not-met" and lookup.shown.metric.params == {"shards": 4}
    cells = lookup.cells()
    assert "worst of 2: shards 4" in cells[0] and cells[1] == "5.60 Mrows/s" and cells[3] == "0.280×"
    assert cells[5] == '<span class="aisys-status aisys-not-met">✗ not met (1 of 2)</span>'


def test_detail_tables_pivot_a_sweep_into_one_row_per_setting():
    run = Run(path=Path("r.json"), hardware_slug="h", hardware_label="H", hardware={}, profile="quick",
              datetime="2026-01-01T00:00:00", commit="c", dirty=False)
    rows = [Row(run=run, test="benchmarks/test_serving_x.py::test_sweep", metric=m) for m in SWEEP]
    [table] = detail_tables(rows)
    assert table.title == "Sweep" and table.caption == "batching dynamic"
    assert table.header == ["qps", "latency p50 (ms)", "latency p99 (ms)"]
    assert table.rows == [["10.0", "20.0", "30.0"], ["20.0", "40.0", "80.0"]]


def test_references_drawn_on_plots():
    fig, ax = plt.subplots()
    assert draw_references(ax, [SWEEP[1]]) and ax.get_legend_handles_labels()[1] == ["goal ≤ 50 ms"]
    assert draw_references(ax, [MFU]) and ax.get_legend_handles_labels()[1][-1] == "100% of fp32 matmul peak"
    assert not draw_references(ax, [SWEEP[0]])
    plt.close(fig)


def test_report_writes_headlines_details_history_and_plots(results, tmp_path):
    out = tmp_path / "docs-results"
    assert main(["report", "--results", str(results), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.glob("*.md")) == [
        "history.md", "home-summary.md", "index.md", "recommender.md", "serving.md", "training.md"]
    assert (out / "results.css").exists()
    assert sorted(p.name for p in (out / "img").glob("*.png")) == [
        "serving-serving-latency-p50.png", "serving-serving-latency-p99.png", "training-loss-curve-curve.png"]
    training = (out / "training.md").read_text()
    glance, details = training.split("## Details")
    assert "| What share of the matmul peak does training reach? | 0.120 TFLOP/s |" in glance
    assert "120 (110–125)" in details and "| 100 |" not in details
    assert "projected by *fsdp comm* from per_gpu=400.0" in details
    serving = (out / "serving.md").read_text()
    assert "- `test_gpu`: needs a CUDA GPU" in serving
    history = (out / "history.md").read_text()
    assert "`2026-01-01-quick`" in history and "`2026-02-01-full`" in history
    assert "| train_samples_per_s · — | samples/s | 100 | 120 (110–125) |" in history
    summary = (out / "home-summary.md").read_text()
    assert "[Training pipeline](results/training.md)" in summary and "1 of 1 goals met" in summary
    assert "[Recommender](results/recommender.md)" in summary and "0 of 1 goals met" in summary


def test_a_second_hardware_gets_a_comparison_page(results, tmp_path):
    out = tmp_path / "docs-results"
    main(["report", "--results", str(results), "--out", str(out)])
    assert not (out / "compare.md").exists()
    write_run(results, "2026-03-01T00:00:00+00:00", "c" * 40, {TRAIN: [replace(MFU, value=45.0, spread=None)]},
              hardware="big-gpu")
    main(["report", "--results", str(results), "--out", str(out)])
    compare = (out / "compare.md").read_text()
    assert f"| Question | big-gpu | {LABEL} |" in compare
    assert "aisys-met" in compare and "aisys-not-met" in compare and "aisys-not-measured" in compare


def test_unknown_and_broken_files_are_skipped_with_one_line_each(results, tmp_path, capsys):
    (results / "case-studies").mkdir()
    (results / "case-studies" / "recommender-embedded.json").write_text(json.dumps({"backend": "embedded"}))
    (results / "test-cpu-2c" / "half-written.json").write_text('{"datetime": ')
    bad = throughput(1.0).to_dict() | {"value": "fast"}
    write_run(results, "2026-03-01T00:00:00+00:00", "c" * 40, {TRAIN: [bad, throughput(130.0)]})
    assert main(["report", "--results", str(results), "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and "Traceback" not in "".join(err)
    assert any("recommender-embedded.json: not an ai-system results file" in line for line in err)
    assert any("half-written.json: not readable JSON" in line for line in err)
    assert any("skipped a metric in" in line and "finite number" in line for line in err)


def test_older_files_get_their_judgement_from_params_and_an_impossible_utilization_is_dropped(tmp_path):
    legacy = {"name": "training_mfu_cpu_process", "value": 60.4, "unit": "%", "better": "higher",
              "area": "training", "scale": "s", "kind": "measured", "seed_row": None, "projection": None,
              "params": {"threads": 2, "peak_tflops": 0.19}, "x": None, "curve": {}, "description": ""}
    impossible = legacy | {"value": 108.4, "params": {"threads": 1, "peak_tflops": 0.073}}
    gather = {**legacy, "name": "lookup_embedded_1shard_vs_numpy_gather", "value": 0.5, "unit": "ratio",
              "area": "recommender", "params": {"shards": 1, "numpy_gather_rows_per_s": 2e7}}
    rows_per_s = {**legacy, "name": "lookup_embedded_1shard_rows_per_s", "value": 10.0, "unit": "Mrows/s",
                  "area": "recommender", "params": {"shards": 1}}
    write_run(tmp_path, "2026-01-01T00:00:00+00:00", "a" * 40,
              {TRAIN: [legacy, impossible], "benchmarks/test_recommender_x.py::test_l": [gather, rows_per_s]})
    results = load_results(tmp_path)
    assert len(results.warnings) == 1 and "108.4% of fp32 matmul peak" in results.warnings[0]
    mfu, lookup, _ = (row.metric for row in results.rows)
    assert mfu.params == {"threads": 2} and mfu.goal == 50.0 and mfu.baseline.value == 0.19
    assert mfu.baseline.ours == pytest.approx(0.19 * 0.604)
    assert lookup.baseline.value == 20.0 and lookup.baseline.ours == 10.0 and lookup.met is True


def test_compare_two_runs_flags_only_changes_beyond_noise(tmp_path, capsys):
    steady = {"name": "steady", "unit": "s", "better": "lower", "area": "training", "scale": "s"}
    first = write_run(tmp_path, "2026-01-01T00:00:00+00:00", "a" * 40, {TRAIN: [
        Metric(**steady, value=1.0, spread=Spread(0.9, 1.0, 1.2, 3)), throughput(100.0),
        Metric(name="gone", value=5.0, unit="s", better="lower", area="training", scale="s")]})
    second = write_run(tmp_path, "2026-02-01T00:00:00+00:00", "b" * 40, {TRAIN: [
        Metric(**steady, value=1.1, spread=Spread(1.0, 1.1, 1.3, 3)), throughput(80.0)]}, profile="full")
    assert main(["report", "--results", str(tmp_path), "--compare", first.stem, str(second)]) == 0
    out = capsys.readouterr().out
    assert "1 worse, 1 within noise, 1 only in A" in out
    assert out.index("worse") < out.index("within noise")
    assert "-20.0%" in out and "±10%" in out and "spreads" in out


def test_compare_names_a_missing_run_in_one_line(results, capsys):
    assert main(["report", "--results", str(results), "--compare", "1999", "2026-02"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no run '1999'" in err


def test_report_needs_an_existing_results_folder(tmp_path, capsys):
    assert main(["report", "--results", str(tmp_path / "missing"), "--out", str(tmp_path / "out")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_predicted_against_measured_is_drawn_as_points_with_the_diagonal(tmp_path):
    scatter = Metric(name="planner_vs_published", value=5.0, unit="%", better="lower", area="parallel",
                     scale="published runs", curve={"published_rate": [300.0, 10.0, 2000.0],
                                                    "predicted_rate": [280.0, 11.0, 2100.0]})
    assert is_scatter(scatter.curve["published_rate"]) and not is_scatter(CURVE.curve["step"])
    assert same_quantity("published_rate", "predicted_rate") and not same_quantity("step", "loss")
    results = tmp_path / "results"
    write_run(results, "2026-03-01T00:00:00+00:00", "c" * 40, {"benchmarks/test_parallel_x.py::test_runs": [scatter]})
    assert main(["report", "--results", str(results), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "img" / "parallel-planner-vs-published-curve.png").exists()
