"""The model server fleet: a Deployment of ``ai-system serve`` replicas (one GPU each), its Service, and
a HorizontalPodAutoscaler that scales on the servers' own queue depth.

How the autoscaler decides: every replica exports ``aisys_queue_depth`` (requests waiting for a
KV-cache slot); Prometheus scrapes it and the Prometheus Adapter serves it on the custom metrics
API as a per-pod metric. The HPA (autoscaling/v2) computes, per metric, ``desired = ceil(current
replicas x current average / target)`` and takes the largest: queue depth against
``target_queue_depth`` per replica, and CPU utilization against 70% as the fallback that still works
when the custom metrics pipeline is down (the HPA then scales up on CPU alone and does not scale
down). Scaling up is immediate; scaling down waits five minutes of lower demand and sheds at most
10% of replicas a minute, so a burst does not make the fleet oscillate. A waiting queue is the
leading signal: latency rises only after requests have started to wait.
"""

from __future__ import annotations

from typing import Any

from ai_system.architecture.blueprint import DistributedAISystem
from ai_system.deployment.pods import (
    APP_ENV,
    gpu_placement,
    labels,
    metadata,
    pod_disruption_budget,
    pod_spec,
    selector,
    share_of_node,
    wait_for_file,
)
from ai_system.deployment.training import SHARED_MOUNT, export_dir

COMPONENT = "serving"
PORT = 8000
DRAIN_TIMEOUT_S = 20
CPU_FALLBACK_UTILIZATION = 70
QUEUE_METRIC = "aisys_queue_depth"


def server_name(system: DistributedAISystem) -> str:
    return f"{system.name}-serve"


def server_command(system: DistributedAISystem) -> list[str]:
    serving = system.serving
    assert serving is not None
    weights = ["--checkpoint", export_dir(system)] if serving.weights == "training-export" else \
        ["--config", serving.model]
    return ["ai-system", "serve", *weights, "--device", "cuda", "--host", "0.0.0.0", "--port", str(PORT),
            "--max-batch-size", str(serving.max_batch_size), "--max-queue-size", str(serving.max_queue_size),
            "--drain-timeout", str(DRAIN_TIMEOUT_S)]


def _server_pod(system: DistributedAISystem) -> dict[str, Any]:
    serving = system.serving
    assert serving is not None
    probe = {"periodSeconds": 10, "timeoutSeconds": 5}
    container = {
        "name": "server", "image": system.image, "command": server_command(system), "env": list(APP_ENV),
        "ports": [{"name": "http", "containerPort": PORT}],
        "startupProbe": {"httpGet": {"path": "/healthz", "port": "http"}, **probe, "failureThreshold": 60},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, **probe, "failureThreshold": 3},
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 5,
                           "timeoutSeconds": 5, "failureThreshold": 2},
        "resources": share_of_node(system, 1),
    }
    volumes: list[dict[str, Any]] = []
    init: list[dict[str, Any]] = []
    if serving.weights == "training-export":
        container["volumeMounts"] = [{"name": "shared", "mountPath": SHARED_MOUNT, "readOnly": True}]
        volumes.append({"name": "shared", "persistentVolumeClaim": {"claimName": f"{system.name}-shared",
                                                                     "readOnly": True}})
        init.append(wait_for_file(system, "wait-for-export", f"{export_dir(system)}/config.json",
                                  "the training export", container["volumeMounts"]))
    return pod_spec([container], volumes, initContainers=init, terminationGracePeriodSeconds=DRAIN_TIMEOUT_S + 10,
                    **gpu_placement(system, "inference"))


def horizontal_autoscaler(system: DistributedAISystem, name: str, component: str, replicas: tuple[int, int],
                          metrics: list[dict[str, Any]]) -> dict[str, Any]:
    """An autoscaling/v2 HPA of Deployment ``name`` on ``metrics``: immediate scale-up, slow scale-down."""
    return {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(system, name, component),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": replicas[0], "maxReplicas": replicas[1],
            "metrics": metrics,
            "behavior": {
                "scaleUp": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max",
                            "policies": [{"type": "Percent", "value": 100, "periodSeconds": 30},
                                         {"type": "Pods", "value": 4, "periodSeconds": 30}]},
                "scaleDown": {"stabilizationWindowSeconds": 300, "selectPolicy": "Min",
                              "policies": [{"type": "Percent", "value": 10, "periodSeconds": 60}]},
            },
        },
    }


CPU_UTILIZATION_METRIC = {"type": "Resource", "resource": {"name": "cpu", "target": {
    "type": "Utilization", "averageUtilization": CPU_FALLBACK_UTILIZATION}}}


def queue_depth_metric(name: str, target: float) -> dict[str, Any]:
    """An HPA ``Pods`` metric: the per-pod average of ``name`` (served by the Prometheus Adapter) against ``target``."""
    return {"type": "Pods", "pods": {"metric": {"name": name},
                                     "target": {"type": "AverageValue", "averageValue": f"{target:g}"}}}


def autoscaler(system: DistributedAISystem) -> dict[str, Any]:
    serving = system.serving
    assert serving is not None
    return horizontal_autoscaler(system, server_name(system), COMPONENT, (system.min_replicas, system.max_replicas),
                                 [queue_depth_metric(QUEUE_METRIC, serving.target_queue_depth), CPU_UTILIZATION_METRIC])


def replicated_http_service(system: DistributedAISystem, name: str, component: str, pod: dict[str, Any], port: int,
                            replicas: int | None) -> list[dict[str, Any]]:
    """Deployment (rolling updates that never drop below the current size), Service on ``port`` and a
    PodDisruptionBudget; ``replicas`` None leaves the size to an autoscaler."""
    spec: dict[str, Any] = {
        "selector": {"matchLabels": selector(system, component)},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
        "template": {"metadata": {"labels": labels(system, component)}, "spec": pod},
    }
    if replicas is not None:
        spec = {"replicas": replicas, **spec}
    return [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata(system, name, component), "spec": spec},
        {"apiVersion": "v1", "kind": "Service", "metadata": metadata(system, name, component),
         "spec": {"selector": selector(system, component),
                  "ports": [{"name": "http", "port": port, "targetPort": "http"}]}},
        pod_disruption_budget(system, name, component, max_unavailable="25%"),
    ]


def serving_manifests(system: DistributedAISystem, autoscaling: bool) -> list[dict[str, Any]]:
    """Deployment, Service, PodDisruptionBudget and (with ``autoscaling``) the HPA; without it the fleet
    runs ``max_replicas`` replicas."""
    documents = replicated_http_service(system, server_name(system), COMPONENT, _server_pod(system), PORT,
                                        None if autoscaling else system.max_replicas)
    return documents + ([autoscaler(system)] if autoscaling else [])


def adapter_rules(metrics: list[str]) -> dict[str, Any]:
    """Prometheus Adapter configuration that serves each of ``metrics`` (queue depths) per pod on the custom
    metrics API (the adapter's ``--config`` file, or its Helm chart's ``rules.custom``)."""
    return {"rules": [{
        "seriesQuery": f'{metric}{{namespace!="",pod!=""}}',
        "resources": {"overrides": {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}},
        "name": {"matches": f"^{metric}$", "as": metric},
        "metricsQuery": "sum(avg_over_time(<<.Series>>{<<.LabelMatchers>>}[1m])) by (<<.GroupBy>>)",
    } for metric in metrics]}
