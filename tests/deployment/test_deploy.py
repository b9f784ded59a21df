"""``deploy()``: writes the manifests and says how to apply them when no cluster is reachable; applies them
with ``kubectl`` when one is (a stand-in ``kubectl`` records what it was asked)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ai_system.architecture import DistributedAISystem
from ai_system.cli import main
from ai_system.deployment import DeploymentError, KubernetesDeployment

SYSTEM = DistributedAISystem(training_nodes=4, inference_nodes=8, gpu_per_node=4)
FAKE_KUBECTL = """#!/bin/sh
echo "$@" >> "{log}"
case "$1" in
  config) {context} ;;
  version) echo '{{"serverVersion": {{"gitVersion": "v1.33.0"}}}}' ;;
  api-versions) printf 'v1\\napps/v1\\n{groups}' ;;
  apply) echo "applied $3" ;;
esac
"""


def _kubectl(tmp_path: Path, context: bool = True, groups: str = "kueue.x-k8s.io/v1beta2\\n") -> tuple[str, Path]:
    log = tmp_path / "kubectl.log"
    path = tmp_path / "kubectl"
    path.write_text(FAKE_KUBECTL.format(log=log, groups=groups,
                                        context="echo test-cluster" if context else "echo 'error: unset' >&2; exit 1"))
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path), log


def test_without_a_cluster_it_writes_and_says_how_to_apply(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    result = KubernetesDeployment(SYSTEM).deploy(tmp_path / "out")
    assert not result.applied and (tmp_path / "out" / "kubernetes" / "40-serving.yaml").is_file()
    printed = capsys.readouterr().out
    assert "no 'kubectl' on PATH" in printed and f"kubectl apply -f {tmp_path / 'out' / 'kubernetes'}" in printed
    assert "ai-system.io/pool=training" in printed
    assert "needs Kueue installed" in printed
    adapter_rules = tmp_path / "out" / "monitoring" / "prometheus-adapter.yaml"
    assert f"Prometheus Adapter with the rules in {adapter_rules}" in printed and adapter_rules.is_file()


def test_default_folder_is_under_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    kubectl, _ = _kubectl(tmp_path, context=False)
    result = KubernetesDeployment(SYSTEM, kubectl=kubectl).deploy()
    assert result.directory == Path("ai-system-deploy") / "ai-system" and not result.applied
    assert "kubectl has no cluster context" in result.message


def test_with_a_cluster_it_applies_with_server_dry_run(tmp_path):
    kubectl, log = _kubectl(tmp_path, groups="kueue.x-k8s.io/v1beta2\\nkubeflow.org/v1\\n")
    result = KubernetesDeployment(SYSTEM, kubectl=kubectl).deploy(tmp_path / "out", dry_run="server")
    assert result.applied and result.dry_run == "server"
    calls = log.read_text().splitlines()
    assert f"apply -f {tmp_path / 'out' / 'kubernetes'} --dry-run=server" in calls
    training = (tmp_path / "out" / "kubernetes" / "30-training.yaml").read_text()
    assert "kind: PyTorchJob" in training, "auto picks the operator the cluster serves"
    assert "needs the Prometheus Adapter" in result.message, "the cluster serves no custom metrics API"


def test_a_cluster_with_custom_metrics_gets_no_adapter_note(tmp_path):
    kubectl, _ = _kubectl(tmp_path, groups="kueue.x-k8s.io/v1beta2\\ncustom.metrics.k8s.io/v1beta2\\n")
    result = KubernetesDeployment(SYSTEM, kubectl=kubectl).deploy(tmp_path / "out")
    assert result.applied and result.dry_run is None and "Prometheus Adapter" not in result.message
    assert "kind: Job" in (tmp_path / "out" / "kubernetes" / "30-training.yaml").read_text()


def test_missing_kueue_is_a_clear_error(tmp_path):
    kubectl, _ = _kubectl(tmp_path, groups="")
    with pytest.raises(DeploymentError, match="install Kueue or set kueue: false"):
        KubernetesDeployment(SYSTEM, kubectl=kubectl).deploy(tmp_path / "out", apply=True)


def test_apply_needs_a_reachable_cluster(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    _kubectl(tmp_path, context=False)
    blueprint = tmp_path / "system.yaml"
    SYSTEM.to_yaml(blueprint)
    assert main(["deploy", "apply", str(blueprint), "--out", str(tmp_path / "out")]) == 2
    assert "cannot apply: kubectl has no cluster context" in capsys.readouterr().err
    with pytest.raises(ValueError, match="dry_run must be one of"):
        KubernetesDeployment(SYSTEM).deploy(tmp_path / "out", dry_run="yes")
    with pytest.raises(ValueError, match="launcher must be one of"):
        KubernetesDeployment(SYSTEM, launcher="mpi")
