"""The monitoring files pass ``promtool``: configuration, rules, rule unit tests that fire every alert, and
every dashboard query parses. Also the training metrics sidecar serves the trainer's log.

Debian builds Prometheus without Kubernetes service discovery, so ``promtool check config`` reads
the in-cluster configuration with each ``kubernetes_sd_configs`` block swapped for a static target
(the relabelling, which is what can be wrong, is kept), and the discovery blocks and the meta labels
they relabel are checked against Prometheus v2.53.0's own source (tests/data/k8s-schemas/prometheus/).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
from pathlib import Path

import httpx
import pytest
import yaml

from ai_system.architecture import DistributedAISystem
from ai_system.deployment import KubernetesDeployment
from ai_system.deployment.exporter import TrainingLogCollector, serve_exporter
from ai_system.deployment.monitoring import alerting_rules, dashboard, dashboard_queries, prometheus_config
from ai_system.deployment.text import yaml_text

BLUEPRINTS = sorted((Path(__file__).parents[2] / "architectures").glob("*.yaml"))
PROMETHEUS_SOURCE = Path(__file__).parents[1] / "data" / "k8s-schemas" / "prometheus"
needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None,
                                    reason="needs promtool (Debian package 'prometheus'; scripts/system-deps.sh "
                                           "installs it)")


def _write_monitoring(system: DistributedAISystem, folder: Path) -> Path:
    KubernetesDeployment(system).render().write(folder)
    return folder / "monitoring"


def _promtool(*args: str, cwd: Path) -> str:
    done = subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@needs_promtool
@pytest.mark.parametrize("blueprint", BLUEPRINTS, ids=lambda path: path.stem)
def test_rules_check_and_their_unit_tests_fire_every_alert(blueprint, tmp_path):
    system = DistributedAISystem.from_yaml(blueprint)
    folder = _write_monitoring(system, tmp_path)
    _promtool("check", "rules", "alerts.yml", cwd=folder)
    assert "SUCCESS" in _promtool("test", "rules", "alerts.test.yml", cwd=folder)
    tests = yaml.safe_load((folder / "alerts.test.yml").read_text())["tests"]
    fired = {case["alertname"] for test in tests for case in test.get("alert_rule_test", []) if case["exp_alerts"]}
    assert fired == {rule["alert"] for rule in alerting_rules(system)}


@needs_promtool
@pytest.mark.parametrize("blueprint", BLUEPRINTS, ids=lambda path: path.stem)
def test_prometheus_configuration_checks(blueprint, tmp_path):
    system = DistributedAISystem.from_yaml(blueprint)
    folder = _write_monitoring(system, tmp_path)
    config = yaml.safe_load((folder / "prometheus.yml").read_text())
    for job in config["scrape_configs"]:
        assert job.pop("kubernetes_sd_configs")
        job["static_configs"] = [{"targets": ["127.0.0.1:9"]}]
    (folder / "prometheus.yml").write_text(yaml_text(config))
    _promtool("check", "config", "prometheus.yml", cwd=folder)
    local = prometheus_config(system, static_targets={"serving": ["127.0.0.1:8000"]})
    (folder / "local.yml").write_text(yaml_text(local))
    _promtool("check", "config", "local.yml", cwd=folder)


def _go_yaml_fields(source: str, struct: str) -> set[str]:
    body = re.search(rf"type {struct} struct \{{(.*?)\n\}}", source, flags=re.S).group(1)
    return {tag.split(",")[0] for tag in re.findall(r'`yaml:"([^"]*)"', body)} - {""}


def test_discovery_blocks_use_prometheus_fields_and_meta_labels():
    kubernetes_go = (PROMETHEUS_SOURCE / "kubernetes.go").read_text()
    pod_go = (PROMETHEUS_SOURCE / "pod.go").read_text()
    sd_fields = _go_yaml_fields(kubernetes_go, "SDConfig")
    namespace_fields = _go_yaml_fields(kubernetes_go, "NamespaceDiscovery")
    constants = set(re.findall(r'\w+\s*=\s*metaLabelPrefix \+ "(\w+)"', pod_go + kubernetes_go))
    assert '+string(role)+"_name"' in kubernetes_go and '+string(role)+"_label_"' in kubernetes_go
    constants.add("pod_name")  # object metadata: <role>_name and <role>_label_<label>
    for blueprint in BLUEPRINTS:
        for job in prometheus_config(DistributedAISystem.from_yaml(blueprint))["scrape_configs"]:
            for block in job["kubernetes_sd_configs"]:
                assert set(block) <= sd_fields and set(block["namespaces"]) <= namespace_fields
                assert block["role"] == "pod"
            for rule in job["relabel_configs"]:
                for label in rule["source_labels"]:
                    name = label.removeprefix("__meta_kubernetes_")
                    assert name in constants or name.startswith("pod_label_"), label


@needs_promtool
def test_every_dashboard_query_parses(tmp_path):
    queries = sorted({query for blueprint in BLUEPRINTS
                      for query in dashboard_queries(dashboard(DistributedAISystem.from_yaml(blueprint)))})
    assert len(queries) > 10
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:query_{index}", "expr": query}
                                                         for index, query in enumerate(queries)]}]}
    (tmp_path / "queries.yml").write_text(yaml_text(rules))
    _promtool("check", "rules", "queries.yml", cwd=tmp_path)


def test_dashboard_is_grafana_json_with_one_query_per_target():
    board = json.loads(json.dumps(dashboard(DistributedAISystem(training_nodes=4, inference_nodes=8, gpu_per_node=4))))
    assert board["schemaVersion"] == 39 and board["templating"]["list"][0]["type"] == "datasource"
    titles = [panel["title"] for panel in board["panels"]]
    assert {"Request latency", "Requests per second", "GPU utilization", "Training throughput"} <= set(titles)
    assert all(panel["datasource"]["uid"] == "${datasource}" and panel["targets"] for panel in board["panels"])


def test_training_exporter_serves_the_trainers_log(tmp_path):
    log = tmp_path / "train.jsonl"
    clock = iter([100.0, 160.0, 220.0, 280.0])
    collector = TrainingLogCollector(log, clock=lambda: next(clock))
    server = serve_exporter(collector, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert httpx.get(f"{url}/healthz").text == "ok\n"
        assert "aisys_train_last_progress_timestamp_seconds 100.0" in httpx.get(f"{url}/metrics").text
        step = {"event": "step", "step": 1, "loss": 5.5, "tokens_per_s": 1000.0, "samples_per_s": 4.0, "mfu": 0.3,
                "step_time_s": 0.5, "lr": 1e-3, "grad_norm": 1.0, "peak_memory_bytes": 1}
        log.write_text(json.dumps({"event": "start", "step": 0}) + "\n" + json.dumps(step) + "\n" + '{"event": "st')
        text = httpx.get(f"{url}/metrics").text
        assert "aisys_train_step 1.0" in text and "aisys_train_loss 5.5" in text
        assert "aisys_train_last_progress_timestamp_seconds 160.0" in text and "aisys_train_starts_total 1.0" in text
        with log.open("a") as handle:
            handle.write('ep", "step": 1, "loss": 5.4}\n{"event": "done", "step": 1}\n')
        text = httpx.get(f"{url}/metrics").text
        assert "aisys_train_done 1.0" in text and "aisys_train_loss 5.4" in text
        assert "aisys_train_last_progress_timestamp_seconds 160.0" in text
        assert httpx.get(f"{url}/nothing").status_code == 404
    finally:
        server.shutdown()
        server.server_close()
