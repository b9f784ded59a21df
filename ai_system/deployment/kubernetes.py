"""``KubernetesDeployment``: a blueprint rendered into Kubernetes manifests and monitoring, and applied.

``render()`` only computes (no files, no cluster): the manifests by file, plus the files that are
not API objects (kube-scheduler's configuration, Prometheus' configuration and rules, their unit
tests, the Grafana dashboard, the Prometheus Adapter rules). ``deploy()`` writes them to a folder
and, when ``kubectl`` reaches a cluster, applies them (``dry_run="server"`` has the API server
validate and admit everything without persisting it); with no cluster it says where the files are
and how to apply them. Manifests are validated against Kubernetes ``KUBERNETES_VERSION``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ai_system.architecture.blueprint import DistributedAISystem
from ai_system.architecture.capacity import plan_training
from ai_system.deployment.kvstore import kv_store_manifests
from ai_system.deployment.monitoring import dashboard, prometheus_config, prometheus_manifests, rule_tests, rules
from ai_system.deployment.network import network_policies
from ai_system.deployment.pods import POOL_LABEL
from ai_system.deployment.scheduling import extender_manifests, kueue_manifests
from ai_system.deployment.search import QUEUE_METRIC as SEARCH_QUEUE_METRIC
from ai_system.deployment.search import search_manifests
from ai_system.deployment.serving import QUEUE_METRIC as SERVING_QUEUE_METRIC
from ai_system.deployment.serving import adapter_rules, serving_manifests
from ai_system.deployment.text import yaml_documents, yaml_text
from ai_system.deployment.training import training_manifests
from ai_system.resources.extender import NODE_MODEL_LABELS
from ai_system.resources.manifests import scheduler_extender_config

KUBERNETES_VERSION = "1.33.0"
LAUNCHERS = ("auto", "pytorchjob", "job")
DRY_RUNS = ("server", "client")
DEFAULT_OUTPUT = Path("ai-system-deploy")
KUBECTL_TIMEOUT_S = 20


class DeploymentError(RuntimeError):
    """The cluster cannot take this system as rendered (a missing API, a failed ``kubectl apply``)."""


@dataclass(frozen=True)
class Rendered:
    """What ``render()`` returns: manifests by file (applied in file-name order) and other files by path."""

    manifests: dict[str, list[dict[str, Any]]]
    files: dict[str, str] = field(default_factory=dict)

    def documents(self) -> list[dict[str, Any]]:
        return [document for documents in self.manifests.values() for document in documents]

    def texts(self) -> dict[str, str]:
        """Every file as it is written: ``kubernetes/<file>`` for manifests, the rest at their paths."""
        return {**{f"kubernetes/{name}": yaml_documents(documents) for name, documents in self.manifests.items()},
                **self.files}

    def write(self, directory: Path) -> list[Path]:
        written = []
        for relative, text in self.texts().items():
            path = directory / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            written.append(path)
        return written


@dataclass(frozen=True)
class DeployResult:
    directory: Path
    applied: bool
    dry_run: str | None
    message: str


class KubernetesDeployment:
    """A ``DistributedAISystem`` on Kubernetes.

    ``monitoring`` adds Prometheus (configuration, rules, alerts) and the Grafana dashboard;
    ``autoscaling`` adds the HorizontalPodAutoscaler (else the fleet runs at its maximum size);
    ``launcher`` picks how training starts: ``pytorchjob`` (Kubeflow training operator), ``job``
    (an indexed Job, no operator needed) or ``auto`` (``pytorchjob`` where ``deploy`` finds the
    operator in the cluster, else ``job``).
    """

    def __init__(self, system: DistributedAISystem, monitoring: bool = True, autoscaling: bool = True,
                 launcher: str = "auto", kubectl: str = "kubectl") -> None:
        if not isinstance(system, DistributedAISystem):
            raise TypeError(f"system must be an ai_system.architecture.DistributedAISystem, got {system!r}")
        if launcher not in LAUNCHERS:
            raise ValueError(f"launcher must be one of {LAUNCHERS}, got {launcher!r}")
        self.system = system
        self.monitoring = bool(monitoring)
        self.autoscaling = bool(autoscaling)
        self.launcher = launcher
        self.kubectl = kubectl

    def render(self, launcher: str | None = None) -> Rendered:
        """The manifests and monitoring files; ``launcher`` overrides the constructor's (``auto`` renders
        the indexed Job, with the PyTorchJob under ``kubernetes/alternatives/``)."""
        system = self.system
        chosen = launcher or self.launcher
        if chosen not in LAUNCHERS:
            raise ValueError(f"launcher must be one of {LAUNCHERS}, got {chosen!r}")
        chosen = "job" if chosen == "auto" else chosen
        security = {"pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/enforce-version": "latest"}
        namespace = {"apiVersion": "v1", "kind": "Namespace",
                     "metadata": {"name": system.namespace, "labels": security}}
        manifests: dict[str, list[dict[str, Any]]] = {"00-namespace.yaml": [namespace]}
        files: dict[str, str] = {}
        if system.kueue and system.training is not None:
            manifests["10-kueue.yaml"] = kueue_manifests(system)
        if system.scheduler_policy is not None:
            manifests["11-scheduler-extender.yaml"] = extender_manifests(system)
            files["kubernetes/control-plane/kube-scheduler-config.yaml"] = yaml_documents([scheduler_extender_config()])
        if system.kv_store is not None:
            manifests["20-kv-store.yaml"] = kv_store_manifests(system)
        if system.training is not None:
            plan = plan_training(system.training, system.training_gpus, system.gpu_model, system.gpu_per_node)
            manifests["30-training.yaml"] = training_manifests(system, plan, chosen)
            other = "pytorchjob" if chosen == "job" else "job"
            files[f"kubernetes/alternatives/30-training-{other}.yaml"] = yaml_documents(
                training_manifests(system, plan, other))
        if system.serving is not None:
            manifests["40-serving.yaml"] = serving_manifests(system, self.autoscaling)
        if system.search is not None:
            manifests["45-search.yaml"] = search_manifests(system, self.autoscaling)
        if self.autoscaling and self._queue_metrics():
            files["monitoring/prometheus-adapter.yaml"] = yaml_text(adapter_rules(self._queue_metrics()))
        if self.monitoring:
            manifests["50-monitoring.yaml"] = prometheus_manifests(system)
            files["monitoring/prometheus.yml"] = yaml_text(prometheus_config(system))
            files["monitoring/alerts.yml"] = yaml_text(rules(system))
            files["monitoring/alerts.test.yml"] = yaml_text(rule_tests(system))
            files["monitoring/dashboard.json"] = json.dumps(dashboard(system), indent=1) + "\n"
        manifests["60-network-policies.yaml"] = network_policies(system, self.monitoring)
        return Rendered(manifests, files)

    def deploy(self, directory: str | Path | None = None, apply: bool | None = None,
               dry_run: str | None = None) -> DeployResult:
        """Write the manifests under ``directory`` (default ``ai-system-deploy/<name>``); apply them when
        ``apply`` is true, or when it is None and ``kubectl`` reaches a cluster. Prints what it did."""
        if dry_run is not None and dry_run not in DRY_RUNS:
            raise ValueError(f"dry_run must be one of {DRY_RUNS} or None, got {dry_run!r}")
        target = Path(directory) if directory is not None else DEFAULT_OUTPUT / self.system.name
        reachable, reason = self._cluster_reachable()
        if apply and not reachable:
            raise DeploymentError(f"cannot apply: {reason}")
        apply = reachable if apply is None else apply
        launcher = self._launcher_in_cluster() if apply and self.launcher == "auto" else self.launcher
        rendered = self.render(launcher)
        for folder in ("kubernetes", "monitoring"):
            shutil.rmtree(target / folder, ignore_errors=True)
        rendered.write(target)
        manifests = target / "kubernetes"
        summary = (f"ai-system: wrote {len(rendered.documents())} Kubernetes objects for {self.system.name!r} to "
                   f"{manifests}/" + (f" and monitoring files to {target / 'monitoring'}/" if self.monitoring else ""))
        if not apply:
            why = reason if not reachable else "apply=False"
            message = "\n".join([summary, f"  not applied: {why}", *self._how_to(manifests)])
            print(message)
            return DeployResult(target, False, dry_run, message)
        notes = self._check_cluster_apis(target)
        command = [self.kubectl, "apply", "-f", str(manifests)] + ([f"--dry-run={dry_run}"] if dry_run else [])
        done = self._kubectl(command[1:], timeout=300)
        if done.returncode:
            raise DeploymentError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
        verb = f"validated by the API server (--dry-run={dry_run}), nothing persisted" if dry_run else "applied"
        message = "\n".join([summary, f"  {verb}: {' '.join(command)}", done.stdout.strip(), *notes])
        print(message)
        return DeployResult(target, True, dry_run, message)

    def _how_to(self, manifests: Path) -> list[str]:
        system = self.system
        lines = ["  to deploy: label the GPU nodes, then apply the folder:"]
        for pool, count in (("training", system.training_nodes), ("inference", system.inference_nodes)):
            if count:
                lines.append(f"    kubectl label node <{count} {pool} nodes> {POOL_LABEL}={pool} "
                             f"{NODE_MODEL_LABELS[0]}={system.gpu_model}")
        lines.append(f"    kubectl apply -f {manifests}")
        if system.kueue and system.training is not None:
            lines.append("  the cluster needs Kueue installed first, or set kueue: false in the blueprint")
        if self.autoscaling and self._queue_metrics():
            lines.append(self._adapter_note(manifests.parent))
        if system.training is not None:
            lines.append(f"  with the Kubeflow training operator, apply "
                         f"{manifests}/alternatives/30-training-pytorchjob.yaml instead of 30-training.yaml")
        if system.scheduler_policy is not None:
            lines.append(f"  kube-scheduler needs --config {manifests}/control-plane/kube-scheduler-config.yaml "
                         "(control-plane configuration) to call the extender")
        return lines

    def _kubectl(self, args: list[str], timeout: float = KUBECTL_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.kubectl, *args], capture_output=True, text=True, timeout=timeout, check=False)

    def _cluster_reachable(self) -> tuple[bool, str]:
        if shutil.which(self.kubectl) is None:
            return False, f"no {self.kubectl!r} on PATH"
        try:
            context = self._kubectl(["config", "current-context"])
            if context.returncode:
                return False, f"kubectl has no cluster context ({context.stderr.strip() or 'current-context unset'})"
            version = self._kubectl(["version", f"--request-timeout={KUBECTL_TIMEOUT_S}s", "-o", "json"])
        except subprocess.TimeoutExpired:
            return False, "kubectl timed out reaching the cluster"
        if version.returncode:
            return False, (f"the cluster of context {context.stdout.strip()!r} is unreachable "
                           f"({version.stderr.strip()[-300:]})")
        return True, f"context {context.stdout.strip()!r}"

    def _served_groups(self) -> set[str]:
        done = self._kubectl(["api-versions"])
        if done.returncode:
            raise DeploymentError(f"kubectl api-versions failed: {done.stderr.strip()}")
        return {line.split("/")[0] for line in done.stdout.split() if "/" in line}

    def _launcher_in_cluster(self) -> str:
        return "pytorchjob" if "kubeflow.org" in self._served_groups() else "job"

    def _queue_metrics(self) -> list[str]:
        """The queue-depth series the autoscalers scale on, one per autoscaled service."""
        return [metric for spec, metric in ((self.system.serving, SERVING_QUEUE_METRIC),
                                            (self.system.search, SEARCH_QUEUE_METRIC)) if spec is not None]

    def _adapter_note(self, target: Path) -> str:
        return (f"  the autoscaler's queue-depth metric needs the Prometheus Adapter with the rules in "
                f"{target / 'monitoring' / 'prometheus-adapter.yaml'}; without it the HPA scales on CPU alone")

    def _check_cluster_apis(self, target: Path) -> list[str]:
        """Raise for an API the manifests cannot do without; return notes for ones they degrade without."""
        groups = self._served_groups()
        needed = {}
        if self.system.kueue and self.system.training is not None:
            needed["kueue.x-k8s.io"] = "the blueprint uses Kueue (kueue: true): install Kueue or set kueue: false"
        if self.launcher == "pytorchjob" and self.system.training is not None:
            needed["kubeflow.org"] = "launcher 'pytorchjob' needs the Kubeflow training operator; use launcher 'job'"
        missing = [why for group, why in needed.items() if group not in groups]
        if missing:
            raise DeploymentError("; ".join(missing))
        if self.autoscaling and self._queue_metrics() and "custom.metrics.k8s.io" not in groups:
            return [self._adapter_note(target)]
        return []
