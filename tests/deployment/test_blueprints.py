"""The blueprint: the case studies' YAML loads, round-trips, and impossible systems fail with a clear message."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ai_system.architecture import DistributedAISystem, TrainingSpec
from ai_system.cli import main
from ai_system.distributed.layout import Layout

BLUEPRINTS = Path(__file__).parents[2] / "architectures"
QUICK_START = {"training_nodes": 4, "inference_nodes": 8, "gpu_per_node": 4}


@pytest.mark.parametrize("stem", ["quickstart", "recommender", "search", "llm-training"])
def test_blueprints_load_and_round_trip(stem):
    system = DistributedAISystem.from_yaml(BLUEPRINTS / f"{stem}.yaml")
    assert DistributedAISystem.from_yaml(system.to_yaml()) == system
    assert DistributedAISystem.from_dict(yaml.safe_load(system.to_yaml())) == system


def test_the_quickstart_blueprint_is_the_readme_system():
    assert DistributedAISystem.from_yaml(BLUEPRINTS / "quickstart.yaml") == DistributedAISystem(**QUICK_START)


def test_case_studies_describe_their_scale():
    llm = DistributedAISystem.from_yaml(BLUEPRINTS / "llm-training.yaml")
    assert llm.training.model == "1T" and llm.training_gpus == 2048 and llm.serving is None
    recommender = DistributedAISystem.from_yaml(BLUEPRINTS / "recommender.yaml")
    assert recommender.kv_store.shards > 1 and recommender.training is None
    search = DistributedAISystem.from_yaml(str(BLUEPRINTS / "search.yaml"))
    assert search.inference_gpus == 128 and search.search.device == "cuda"
    assert (search.search_min_replicas, search.search_max_replicas) == (16, 128)


def test_sections_accept_mappings_and_layout_text():
    system = DistributedAISystem(**QUICK_START, training={"model": "1B", "layout": "dp=8,tp=2,pp=1,zero=2"})
    assert system.training == TrainingSpec(layout=Layout(dp=8, tp=2, zero=2))
    assert system.to_dict()["training"]["layout"] == "dp=8,tp=2,pp=1,zero=2,recompute=none"


@pytest.mark.parametrize("changes, message", [
    ({"gpu_per_node": 0}, r"gpu_per_node must be an integer >= 1, got 0"),
    ({"training_nodes": -1}, r"training_nodes must be an integer >= 0, got -1"),
    ({"inference_nodes": True}, r"inference_nodes must be an integer >= 0, got True"),
    ({"gpu_model": "X100"}, r"gpu_model must be one of .*'H100-SXM'.*got 'X100'"),
    ({"scheduler_policy": "fastest"}, r"scheduler_policy must be one of .*got 'fastest'"),
    ({"name": "My_System"}, r"name must be a DNS label .*got 'My_System'"),
    ({"image": "ai system"}, r"image must be a container image reference"),
    ({"gpu_utilization_target_pct": 120}, r"gpu_utilization_target_pct must be in \(0, 100\], got 120"),
    ({"training": {"model": "2T"}}, r"training.model must be one of .*got '2T'"),
    ({"training": {"layout": "dp=8,tp=2,pp=2,mb=1"}}, r"uses 32 GPUs, but 4 training nodes x 4 GPUs have 16"),
    ({"training": {"layout": "dp=2,tp=8"}}, r"tp=8 exceeds gpu_per_node=4"),
    ({"training": {"global_batch": 0}}, r"training.global_batch must be an integer >= 1, got 0"),
    ({"training_nodes": 0}, r"a training section needs training_nodes >= 1"),
    ({"serving": {"model": "8B"}}, r"serving.model is '8B' and training.model is '1B'"),
    ({"serving": {"model": "1T", "weights": "random"}}, r"'1T' needs \d+ GB of fp32 weights, more than 72 GB"),
    ({"serving": {"slo_p99_ms": -5}}, r"slo_p99_ms must be a finite number > 0, got -5"),
    ({"serving": {"max_replicas": 64}}, r"max_replicas=64 exceeds the 32 inference GPUs"),
    ({"serving": {"min_replicas": 9, "max_replicas": 8}}, r"min_replicas=9 exceeds max_replicas=8"),
    ({"kv_store": {"memory_gib": 64, "storage_gib": 32}}, r"storage_gib=32 is smaller than memory_gib=64"),
    ({"training": None, "serving": None}, r"'fgd-pack' derives its target workload .* no training, serving or GPU"),
    ({"search": {}}, r"search has no inference GPU left: serving.max_replicas=32 takes all 32"),
    ({"serving": {"max_replicas": 24}, "search": {"max_replicas": 12}},
     r"search.max_replicas=12 plus 24 serving replicas exceed the 32 inference GPUs"),
    ({"serving": {"max_replicas": 24}, "search": {"vectors": 200_000_000, "dim": 128}},
     r"200,000,000 x 128 float32 vectors \(102 GB\), more than 72 GB usable on one H100-SXM"),
    ({"search": {"nprobe": 64, "nlist": 32}}, r"search.nprobe=64 exceeds nlist=32"),
    ({"search": {"data": "corpus.csv"}}, r"search.data must be 'clustered', 'python-docs' or a .npy file"),
    ({"search": {"device": "tpu"}}, r"search.device must be one of \['cpu', 'cuda'\], got 'tpu'"),
    ({"search": {"index": "hnsw"}}, r"search.index must be one of .*got 'hnsw'"),
    ({"serving": "fast"}, r"serving must be a ServingSpec, a mapping of its fields or None"),
    ({"kv_store": {"replicas": 2}}, r"unknown key\(s\) \['replicas'\] in kv_store"),
])
def test_impossible_systems_are_refused_with_the_value(changes, message):
    with pytest.raises(ValueError, match=message):
        DistributedAISystem(**{**QUICK_START, **changes})


def test_cpu_search_leaves_the_gpus_to_the_model_servers():
    system = DistributedAISystem(**QUICK_START, search={"device": "cpu", "vectors": 10**9})
    assert (system.search_min_replicas, system.search_max_replicas) == (8, 8)


def test_yaml_errors_name_the_file(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("training_nodes: 4\ngpus_per_node: 4\n")
    with pytest.raises(ValueError, match=r"typo.yaml: unknown key\(s\) \['gpus_per_node'\] in the system"):
        DistributedAISystem.from_yaml(path)
    path.write_text("[1, 2]\n")
    with pytest.raises(ValueError, match="a blueprint is a mapping"):
        DistributedAISystem.from_yaml(path)


def test_diagram_draws_every_component():
    diagram = DistributedAISystem(**QUICK_START).diagram()
    assert diagram.startswith("graph TB")
    for piece in ("training pool: 4 nodes x 4 x H100-SXM", "ai-system serve x 8..32", "Redis Cluster: 3 shard(s)",
                  "policy fgd-pack", "Prometheus", "shared -- model export --> server"):
        assert piece in diagram


def test_the_deploy_command_prints_one_line_on_bad_input(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("gpu_per_node: 0\n")
    assert main(["deploy", "render", str(path), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "gpu_per_node must be an integer >= 1, got 0" in error
    assert main(["deploy", "capacity", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml: [Errno 2] No such file" in capsys.readouterr().err
    with pytest.raises(ValueError, match="missing.yaml: .*No such file"):
        DistributedAISystem.from_yaml(str(tmp_path / "missing.yaml"))
