"""What every pod of the system shares: labels, the non-root read-only security context, scratch volumes,
GPU scheduling and resource requests.

Every container runs as a non-root user with a read-only root filesystem, no privilege escalation,
no Linux capabilities and the runtime's default seccomp profile (the namespace enforces the
``restricted`` Pod Security Standard, so a pod that drops any of this is rejected). What a program
must write goes to an ``emptyDir`` at ``/tmp`` or to a named volume.
"""

from __future__ import annotations

import copy
from typing import Any

from ai_system.architecture.blueprint import DistributedAISystem
from ai_system.resources.extender import GPU_RESOURCE, NODE_MODEL_LABELS

APP_UID = 10001
POOL_LABEL = "ai-system.io/pool"
KV_CLIENT_LABEL = "ai-system.io/kv-client"
METRICS_READER_LABEL = "ai-system.io/metrics-reader"
COMPONENT = "app.kubernetes.io/component"
SCRATCH_MOUNTS = [{"name": "tmp", "mountPath": "/tmp"}]
SCRATCH_VOLUMES = [{"name": "tmp", "emptyDir": {"sizeLimit": "8Gi"}}]
APP_ENV = [{"name": "HOME", "value": "/tmp"}, {"name": "PYTHONUNBUFFERED", "value": "1"},
           {"name": "AISYS_ARTIFACTS_DIR", "value": "/tmp/ai-system-artifacts"},
           {"name": "TRITON_CACHE_DIR", "value": "/tmp/triton"}]


def selector(system: DistributedAISystem, component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": system.name, COMPONENT: component}


def labels(system: DistributedAISystem, component: str) -> dict[str, str]:
    return {**selector(system, component), "app.kubernetes.io/part-of": "ai-system"}


def metadata(system: DistributedAISystem, name: str, component: str, **extra_labels: str) -> dict[str, Any]:
    return {"name": name, "namespace": system.namespace, "labels": {**labels(system, component), **extra_labels}}


def pod_security(uid: int = APP_UID) -> dict[str, Any]:
    return {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": uid, "fsGroup": uid,
            "seccompProfile": {"type": "RuntimeDefault"}}


def container_security() -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}


def harden(pod_spec: dict[str, Any], uid: int = APP_UID) -> dict[str, Any]:
    """A copy of ``pod_spec`` with the system's security contexts and a writable ``/tmp`` (for pods whose
    spec comes from elsewhere, such as the resource manager's extender)."""
    spec = copy.deepcopy(pod_spec)
    spec["securityContext"] = pod_security(uid)
    spec["automountServiceAccountToken"] = "serviceAccountName" in spec
    for container in spec["containers"] + spec.get("initContainers", []):
        container["securityContext"] = container_security()
        container.setdefault("volumeMounts", [])
        if not any(mount["mountPath"] == "/tmp" for mount in container["volumeMounts"]):
            container["volumeMounts"] += SCRATCH_MOUNTS
    if not any(volume["name"] == "tmp" for volume in spec.get("volumes", [])):
        spec["volumes"] = spec.get("volumes", []) + SCRATCH_VOLUMES
    return spec


def gpu_placement(system: DistributedAISystem, pool: str) -> dict[str, Any]:
    """Pod-spec fields that put a pod on its pool's GPU nodes (labelled ``ai-system.io/pool`` and
    ``ai-system.io/gpu-model``, the label the resource manager's extender and Kueue flavors read)."""
    return {"nodeSelector": {POOL_LABEL: pool, NODE_MODEL_LABELS[0]: system.gpu_model},
            "tolerations": [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]}


def share_of_node(system: DistributedAISystem, gpus: int) -> dict[str, Any]:
    """Requests and limits of a pod holding ``gpus`` of a node's GPUs: that share of 90% of the node's CPU
    and memory (the rest is for the kubelet and daemons); GPUs and memory are limits too."""
    share = 0.9 * gpus / system.gpu_per_node
    cpu = max(1, int(system.cpus_per_node * share))
    memory = f"{max(1, int(system.memory_gib_per_node * share))}Gi"
    return {"requests": {"cpu": str(cpu), "memory": memory, GPU_RESOURCE: str(gpus)},
            "limits": {"memory": memory, GPU_RESOURCE: str(gpus)}}


def pod_spec(containers: list[dict[str, Any]], volumes: list[dict[str, Any]], uid: int = APP_UID,
             **fields: Any) -> dict[str, Any]:
    """A pod spec whose containers run hardened, with ``/tmp`` scratch and no service-account token."""
    for container in containers + fields.get("initContainers", []):
        container["securityContext"] = container_security()
        container["volumeMounts"] = container.get("volumeMounts", []) + SCRATCH_MOUNTS
    return {"securityContext": pod_security(uid), "automountServiceAccountToken": False, **fields,
            "containers": containers, "volumes": volumes + SCRATCH_VOLUMES}


def pod_disruption_budget(system: DistributedAISystem, name: str, component: str,
                          max_unavailable: int | str) -> dict[str, Any]:
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": metadata(system, name, component),
            "spec": {"maxUnavailable": max_unavailable, "selector": {"matchLabels": selector(system, component)}}}


def shared_claim(system: DistributedAISystem, name: str, component: str, storage_gib: int) -> dict[str, Any]:
    """A ReadWriteMany volume: one pod (or a training job's every node) writes, many pods read."""
    spec: dict[str, Any] = {"accessModes": ["ReadWriteMany"],
                            "resources": {"requests": {"storage": f"{storage_gib}Gi"}}}
    if system.storage_class:
        spec["storageClassName"] = system.storage_class
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": metadata(system, name, component),
            "spec": spec}


def wait_for_file(system: DistributedAISystem, name: str, path: str, what: str, mounts: list[dict[str, Any]],
                  poll_s: int = 60) -> dict[str, Any]:
    """An init container that holds the pod until ``path`` exists (a file another pod writes)."""
    return {"name": name, "image": system.image, "command": [
        "sh", "-c", f"until [ -f {path} ]; do echo 'waiting for {what} {path}'; sleep {poll_s}; done"],
        "volumeMounts": list(mounts),
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}}}
