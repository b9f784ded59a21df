"""The capacity summary reuses the planner (the same plan and train command as ``ai-system plan``) and
measured results (labelled, with where they were measured), and says what it does not know."""

from __future__ import annotations

import json
from pathlib import Path

from ai_system.architecture import DistributedAISystem
from ai_system.bench.metrics import Metric, Projection
from ai_system.cli import main

BLUEPRINTS = Path(__file__).parents[2] / "architectures"


def _results(folder: Path, gpu: str | None, metrics: list[Metric]) -> Path:
    """A results file as the benchmark harness writes it, with ``gpu`` as the name of its GPU (None: no GPU)."""
    gpus = {"name": gpu, "count": 1, "memory_gib": 79.2, "capability": "9.0", "driver": None, "cuda": "12.8"}
    hardware = {"cpu_model": "Test CPU", "cpu_cores": 8, "ram_gib": 64.0, "gpu": gpus if gpu else None,
                "python": "3.11", "torch": "2.11.0", "triton": None, "torch_threads": 8}
    data = {"datetime": "2026-11-27T09:00:00", "commit_info": {"id": "abcdef1234", "dirty": False},
            "benchmarks": [{"fullname": "benchmarks/test_x.py::test_x", "stats": {},
                            "extra_info": {"metrics": [metric.to_dict() for metric in metrics]}}],
            "aisys": {"profile": "full", "hardware": hardware, "hardware_slug": "test", "hardware_label": f"test {gpu}",
                      "skipped": []}}
    (folder / "test").mkdir(parents=True)
    (folder / "test" / "20261127T090000Z-full.json").write_text(json.dumps(data))
    return folder


def _serving(name: str, value: float, **params: object) -> Metric:
    return Metric(name=name, value=value, unit="req/s", better="higher", area="serving", scale="debug model",
                  params={"batching": "dynamic", **params})


def test_training_plan_is_what_ai_system_plan_prints(capsys):
    system = DistributedAISystem.from_yaml(BLUEPRINTS / "llm-training.yaml")
    summary = system.capacity_summary()
    assert main(["plan", "--model", "1T", "--gpus", "2048", "--seq", "2048", "--global-batch", "1536", "--json",
                 "--top", "1"]) == 0
    printed = json.loads(capsys.readouterr().out)[0]
    assert summary.training.train_command == printed["train_command"]
    assert summary.training.planned and summary.training.layout.world_size == 2048
    iteration = summary.figure("training_iteration_seconds")
    assert iteration.kind == "projected" and iteration.value == printed["iteration_seconds"]
    assert summary.figure("training_samples_per_s").value == 1536 / printed["iteration_seconds"]


def test_nodes_smaller_than_the_gpus_datasheet_node_bound_tensor_parallelism():
    summary = DistributedAISystem(training_nodes=4, inference_nodes=1, gpu_per_node=2).capacity_summary()
    assert summary.training.layout.tp <= 2
    assert summary.training.train_arguments[:2] == ["--model", "1B"]


def test_serving_capacity_comes_from_measured_results_and_is_labelled(tmp_path):
    results = _results(tmp_path, "NVIDIA H100 80GB HBM3", [
        _serving("serving_max_qps_at_slo", 120.0, slo_ms=50.0), _serving("serving_saturation_throughput", 300.0)])
    summary = DistributedAISystem(training_nodes=4, inference_nodes=8, gpu_per_node=4).capacity_summary(results)
    replica = summary.figure("serving_replica_qps_at_slo")
    fleet = summary.figure("serving_fleet_qps_at_slo")
    assert replica.kind == "measured" and replica.value == 120.0 and "test NVIDIA H100" in replica.basis
    assert fleet.kind == "projected" and fleet.value == 32 * 120.0 and "32 replicas" in fleet.basis
    assert summary.figure("serving_fleet_saturation").value == 32 * 300.0
    assert not any("not on H100-SXM" in note for note in summary.notes)


def test_serving_measured_elsewhere_says_so(tmp_path):
    results = _results(tmp_path, None, [_serving("serving_max_qps_at_slo", 3.0, slo_ms=50.0)])
    system = DistributedAISystem(training_nodes=4, inference_nodes=8, gpu_per_node=4, serving={"slo_p99_ms": 100})
    summary = system.capacity_summary(results)
    assert any("not on H100-SXM" in note for note in summary.notes)
    assert any("the blueprint's is 100" in note for note in summary.notes)


def test_kv_store_capacity_from_the_recommender_measurements(tmp_path):
    row = Metric(name="sizing_redis_bytes_per_row", value=400.0, unit="bytes", better="lower", area="recommender",
                 scale="rows of dim 64")
    rate = Metric(name="sizing_redis_rows_per_s_per_shard", value=0.5, unit="Mrows/s", better="higher",
                  area="recommender", scale="rows of dim 64")
    nodes = Metric(name="sizing_1b_redis_nodes", value=18, unit="nodes", better="lower", area="recommender",
                   scale="1B users", kind="projected",
                   projection=Projection(model="sizing", inputs={"memory_headroom": 0.5}))
    summary = DistributedAISystem.from_yaml(BLUEPRINTS / "recommender.yaml").capacity_summary(
        _results(tmp_path, None, [row, rate, nodes]))
    assert summary.figure("kv_store_rows").value == 9 * 64 * 2**30 * 0.5 / 400.0
    assert summary.figure("kv_store_rows_per_s").value == 9 * 0.5e6
    assert summary.training is None


def test_no_results_means_no_serving_figures_and_a_note(tmp_path):
    summary = DistributedAISystem(training_nodes=4, inference_nodes=8, gpu_per_node=4).capacity_summary(tmp_path)
    assert not [figure for figure in summary.figures if figure.name.startswith(("serving", "kv_store"))]
    assert any("test_serving_latency.py" in note for note in summary.notes)
    assert "run it:          ai-system train --model 1B" in str(summary)


def _search_load(offered: float, served: float, p99_ms: float) -> list[Metric]:
    params = {"index": "ivf_flat", "offered_qps": offered}
    scale = "100000 × 128 vectors, IVF nlist 256, 8 threads, HTTP"
    return [Metric(name="search_http_served_qps", value=served, unit="req/s", better="higher", area="search",
                   scale=scale, params=params),
            Metric(name="search_http_p99_ms", value=p99_ms, unit="ms", better="lower", area="search", scale=scale,
                   params=params)]


def test_search_capacity_is_the_best_measured_load_within_the_slo(tmp_path):
    loads = _search_load(500, 498.0, 12.0) + _search_load(2000, 1900.0, 40.0) + _search_load(4000, 2500.0, 900.0)
    system = DistributedAISystem.from_yaml(BLUEPRINTS / "search.yaml")
    summary = system.capacity_summary(_results(tmp_path, None, loads))
    replica, fleet = summary.figure("search_replica_qps_at_slo"), summary.figure("search_fleet_qps_at_slo")
    assert replica.kind == "measured" and replica.value == 1900.0 and "p99 40.0 ms <= 50 ms" in replica.basis
    assert fleet.kind == "projected" and fleet.value == 128 * 1900.0 and "128 replicas" in fleet.basis
    assert any("measured on test None (CPU)" in note for note in summary.notes)


def test_search_without_results_says_not_measured(tmp_path):
    summary = DistributedAISystem.from_yaml(BLUEPRINTS / "search.yaml").capacity_summary(tmp_path)
    assert not summary.figures
    assert summary.notes == [next(note for note in summary.notes if note.startswith("search not measured"))]
    too_slow = _results(tmp_path / "slow", None, _search_load(500, 498.0, 80.0))
    summary = DistributedAISystem.from_yaml(BLUEPRINTS / "search.yaml").capacity_summary(too_slow)
    assert not summary.figures and "no load in run" in summary.notes[0]
