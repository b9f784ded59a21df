"""Kubernetes manifests that plug the resource manager into a cluster, generated from a node list.

* ``scheduler_extender_config`` — a KubeSchedulerConfiguration (kubescheduler.config.k8s.io/v1)
  whose extender is our HTTP server: filter, prioritize and bind verbs, weight over the default
  score plugins. It sends every pod (no ``managedResources``), so the extender sees CPU pods too.
* ``scheduler_packing_config`` — the packing baselines with no extender: ``NodeResourcesFit`` with
  ``MostAllocated`` and with ``RequestedToCapacityRatio``, each weighting ``nvidia.com/gpu`` highest.
* ``kueue_quotas`` — one Kueue ResourceFlavor per GPU model (selecting nodes by the label
  ``ai-system.io/gpu-model``) and a ClusterQueue whose nominal quotas are the pools' CPU, memory and
  GPUs; Kueue admits a job whole or not at all, our gang semantics at the queue level.
* ``extender_deployment`` — ConfigMap, RBAC, Deployment and Service that run ``ai-system schedule extender``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

from ai_system.resources.cluster import NodeSpec
from ai_system.resources.extender import GPU_RESOURCE, NODE_MODEL_LABELS

SCHEDULER_API = "kubescheduler.config.k8s.io/v1"
KUEUE_API = "kueue.x-k8s.io/v1beta2"
EXTENDER_NAME = "ai-system-scheduler-extender"
EXTENDER_PORT = 8888
NAMESPACE = "kube-system"


def scheduler_extender_config(url: str = f"http://{EXTENDER_NAME}.{NAMESPACE}.svc:{EXTENDER_PORT}",
                              weight: int = 5) -> dict[str, Any]:
    return {
        "apiVersion": SCHEDULER_API, "kind": "KubeSchedulerConfiguration",
        "profiles": [{"schedulerName": "default-scheduler"}],
        "extenders": [{
            "urlPrefix": url, "filterVerb": "filter", "prioritizeVerb": "prioritize", "bindVerb": "bind",
            "weight": weight, "enableHTTPS": False, "nodeCacheCapable": False, "ignorable": False,
            "httpTimeout": "5s",
        }],
    }


def scheduler_packing_config(gpu_weight: int = 5) -> dict[str, Any]:
    resources = [{"name": "cpu", "weight": 1}, {"name": "memory", "weight": 1},
                 {"name": GPU_RESOURCE, "weight": gpu_weight}]

    def profile(name: str, strategy: dict[str, Any]) -> dict[str, Any]:
        return {"schedulerName": name,
                "pluginConfig": [{"name": "NodeResourcesFit",
                                  "args": {"apiVersion": SCHEDULER_API, "kind": "NodeResourcesFitArgs",
                                           "scoringStrategy": {"resources": resources, **strategy}}}]}

    return {
        "apiVersion": SCHEDULER_API, "kind": "KubeSchedulerConfiguration",
        "profiles": [
            profile("gpu-most-allocated", {"type": "MostAllocated"}),
            profile("gpu-requested-to-capacity", {
                "type": "RequestedToCapacityRatio",
                "requestedToCapacityRatio": {"shape": [{"utilization": 0, "score": 0},
                                                       {"utilization": 100, "score": 10}]}}),
        ],
    }


def flavor_name(model: str) -> str:
    return "cpu-only" if not model else f"gpu-{model.lower()}"


def kueue_quotas(nodes: Sequence[NodeSpec], queue: str = "gpu-cluster") -> list[dict[str, Any]]:
    """ResourceFlavors (one per GPU model, plus CPU-only nodes) and a ClusterQueue with their capacity."""
    pools: dict[str, list[NodeSpec]] = {}
    for node in nodes:
        pools.setdefault(node.gpu_model if node.gpus else "", []).append(node)
    flavors = []
    quotas = []
    for model in sorted(pools):
        members = pools[model]
        labels = {NODE_MODEL_LABELS[0]: model or "none"}
        flavors.append({"apiVersion": KUEUE_API, "kind": "ResourceFlavor",
                        "metadata": {"name": flavor_name(model)}, "spec": {"nodeLabels": labels}})
        quotas.append({"name": flavor_name(model), "resources": [
            {"name": "cpu", "nominalQuota": str(sum(node.cpu_milli for node in members) // 1000)},
            {"name": "memory", "nominalQuota": f"{sum(node.memory_mib for node in members)}Mi"},
            {"name": GPU_RESOURCE, "nominalQuota": str(sum(node.gpus for node in members))},
        ]})
    cluster_queue = {"apiVersion": KUEUE_API, "kind": "ClusterQueue", "metadata": {"name": queue},
                     "spec": {"namespaceSelector": {}, "queueingStrategy": "BestEffortFIFO",
                              "resourceGroups": [{"coveredResources": ["cpu", "memory", GPU_RESOURCE],
                                                  "flavors": quotas}]}}
    return [*flavors, cluster_queue]


def extender_deployment(image: str = "ai-system:latest", policy: str = "fgd-pack") -> list[dict[str, Any]]:
    """The extender as a Deployment + Service with the RBAC to bind pods, and the scheduler config as a
    ConfigMap for kube-scheduler. FGD's target workload is read from the ConfigMap ``ai-system-typical-pods``
    (key ``pod_list.csv``), created from a pod list: ``kubectl -n kube-system create configmap
    ai-system-typical-pods --from-file=pod_list.csv=openb_pod_list_default.csv``."""
    labels = {"app.kubernetes.io/name": EXTENDER_NAME}
    meta = {"name": EXTENDER_NAME, "namespace": NAMESPACE, "labels": labels}
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ai-system-scheduler-config",
                                                                   "namespace": NAMESPACE},
              "data": {"scheduler-config.yaml": to_yaml([scheduler_extender_config()])}}
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta}
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": EXTENDER_NAME},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
                      {"apiGroups": [""], "resources": ["pods/binding"], "verbs": ["create"]},
                      {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]}]}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": EXTENDER_NAME},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": EXTENDER_NAME},
               "subjects": [{"kind": "ServiceAccount", "name": EXTENDER_NAME, "namespace": NAMESPACE}]}
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
        "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels},
            "spec": {"serviceAccountName": EXTENDER_NAME, "containers": [{
                "name": "extender", "image": image,
                "command": ["ai-system", "schedule", "extender", "--host", "0.0.0.0", "--port", str(EXTENDER_PORT),
                            "--policy", policy, "--typical-pods", "/etc/ai-system/pod_list.csv"],
                "ports": [{"containerPort": EXTENDER_PORT, "name": "http"}],
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": EXTENDER_PORT}},
                "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}},
                "volumeMounts": [{"name": "typical-pods", "mountPath": "/etc/ai-system", "readOnly": True}],
            }], "volumes": [{"name": "typical-pods", "configMap": {"name": "ai-system-typical-pods"}}]}}},
    }
    service = {"apiVersion": "v1", "kind": "Service", "metadata": meta,
               "spec": {"selector": labels, "ports": [{"name": "http", "port": EXTENDER_PORT,
                                                        "targetPort": EXTENDER_PORT}]}}
    return [config, account, role, binding, deployment, service]


def to_yaml(documents: Sequence[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(list(documents), sort_keys=False)


def all_manifests(nodes: Sequence[NodeSpec]) -> dict[str, list[dict[str, Any]]]:
    """File name → documents, as ``ai-system schedule manifests`` writes them."""
    return {"scheduler-extender.yaml": [scheduler_extender_config()],
            "scheduler-packing.yaml": [scheduler_packing_config()],
            "kueue-quotas.yaml": kueue_quotas(nodes),
            "extender-deployment.yaml": extender_deployment()}
