"""The report turns a known results folder into exactly the expected tables and plots."""

import json
from pathlib import Path

import pytest

from ai_system.bench.metrics import Metric, Projection
from ai_system.cli import main
from ai_system.report.load import load_results
from ai_system.report.pages import seed_table_rows

HARDWARE = {"cpu_model": "Test CPU", "cpu_cores": 2, "ram_gib": 8.0, "gpu": None, "python": "3.11",
            "torch": "2.13.0", "triton": None}
LABEL = "Test CPU, 2 cores, 8.0 GiB, torch 2.13.0"


def write_run(results: Path, when: str, commit: str, metrics: list[Metric], skipped=()) -> None:
    data = {
        "datetime": when,
        "commit_info": {"id": commit, "dirty": False},
        "benchmarks": [{"fullname": f"benchmarks/test_x.py::test_{m.name}", "stats": {},
                        "extra_info": {"metrics": [m.to_dict()]}} for m in metrics],
        "aisys": {"profile": "quick", "hardware": HARDWARE, "hardware_slug": "test-cpu-2c",
                  "hardware_label": LABEL, "skipped": list(skipped)},
    }
    folder = results / "test-cpu-2c"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{when[:10]}-quick.json").write_text(json.dumps(data))


def throughput(value: float) -> Metric:
    return Metric(name="train_samples_per_s", value=value, unit="samples/s", better="higher", area="training",
                  scale="1 process", seed_row="training_throughput")


PROJECTED = Metric(name="train_samples_per_s_32gpu", value=12345.678, unit="samples/s", better="higher",
                   area="training", scale="32 GPUs", kind="projected", seed_row="training_throughput",
                   projection=Projection(model="FSDP comm model", inputs={"per_gpu": 400.0}))
BANDWIDTH = [Metric(name="softmax_bw", value=value, unit="GB/s", better="higher", area="inference", scale="rows",
                    params={"width": width}, x="width", description="read + write bytes per second")
             for width, value in ((1024, 10.0), (4096, 20.0))]
CURVE = Metric(name="loss_curve", value=1.25, unit="nats", better="lower", area="training", scale="debug",
               curve={"step": [1, 2, 3], "loss": [3.0, 2.0, 1.25]})


@pytest.fixture
def results(tmp_path) -> Path:
    folder = tmp_path / "results"
    write_run(folder, "2026-01-01T00:00:00+00:00", "a" * 40, [throughput(100.0)])
    write_run(folder, "2026-02-01T00:00:00+00:00", "b" * 40, [throughput(120.0), PROJECTED, *BANDWIDTH, CURVE],
              skipped=[{"test": "benchmarks/test_inference_k.py::test_gpu", "area": "inference", "reason": "no GPU"}])
    return folder


def test_seed_table_has_newest_figures_and_says_what_is_missing(results):
    rows, _ = load_results(results)
    assert seed_table_rows(rows) == [
        ["Training Throughput", "10k samples/sec", "120 samples/s", "1 process", LABEL, "measured",
         "[Training pipeline](training.md)", "12k samples/sec"],
        ["Training Throughput", "10k samples/sec", "1.235e+04 samples/s", "32 GPUs", LABEL, "projected",
         "[Training pipeline](training.md)", "12k samples/sec"],
        ["Inference Latency", "50ms", "not yet measured", "1M QPS", "—", "—", "—", "35ms"],
        ["Resource Utilization", "85%", "not yet measured", "100 nodes", "—", "—", "—", "88%"],
    ]


def test_report_writes_pages_and_plots(results, tmp_path):
    out = tmp_path / "docs-results"
    assert main(["report", "--results", str(results), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.glob("*.md")) == ["index.md", "inference.md", "training.md"]
    assert sorted(p.name for p in (out / "img").glob("*.png")) == [
        "inference-softmax-bw.png", "training-loss-curve-curve.png", "training-train-samples-per-s-history.png"]
    training = (out / "training.md").read_text()
    assert "| train_samples_per_s | — | 120 | samples/s | higher | 1 process | measured | bbbbbbb |" in training
    assert "projected by *FSDP comm model* from per_gpu=400.0" in training
    inference = (out / "inference.md").read_text()
    assert "| softmax_bw | width=4096 | 20 | GB/s | higher | rows | measured | bbbbbbb |" in inference
    assert "- `benchmarks/test_inference_k.py::test_gpu`: no GPU" in inference
    assert inference.count("- `softmax_bw`: read + write bytes per second") == 1
    overview = (out / "index.md").read_text()
    assert "- [Training pipeline](training.md)" in overview and "- [Inference system](inference.md)" in overview


def test_report_rejects_a_foreign_json_file(tmp_path):
    folder = tmp_path / "results" / "box"
    folder.mkdir(parents=True)
    (folder / "other.json").write_text(json.dumps({"benchmarks": []}))
    with pytest.raises(ValueError, match="no 'aisys' block"):
        load_results(tmp_path / "results")


def test_report_needs_an_existing_results_folder(tmp_path):
    with pytest.raises(SystemExit, match="does not exist"):
        main(["report", "--results", str(tmp_path / "missing"), "--out", str(tmp_path / "out")])
