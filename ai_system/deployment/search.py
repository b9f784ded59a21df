"""The vector-search service: a Job that builds the index onto a volume, a Deployment of
``ai-system search serve`` replicas that load it, their Service, PodDisruptionBudget and autoscaler.

The index is built once (``ai-system search build``, CPU, written atomically) onto a ReadWriteMany
volume; each replica waits for the file, loads it read-only and holds it on its GPU
(``device: cuda``, one ``nvidia.com/gpu`` each) or in memory (``device: cpu``). Probes use the
search server's ``/healthz`` (200 while the batcher runs, 503 while it drains). Prometheus scrapes
each replica's ``/metrics`` (job ``search``), and the HorizontalPodAutoscaler scales as the model
server's does: on ``aisys_search_queue_depth`` (requests waiting in the batcher, served per pod by
the Prometheus Adapter) against half a batch per replica, a queue that already delays the next
request by a batch, with CPU utilization as the fallback while the custom metrics pipeline is down.
"""

from __future__ import annotations

import math
from typing import Any

from ai_system.architecture.blueprint import DistributedAISystem
from ai_system.deployment.pods import (
    APP_ENV,
    gpu_placement,
    labels,
    metadata,
    pod_spec,
    share_of_node,
    shared_claim,
    wait_for_file,
)
from ai_system.deployment.serving import (
    CPU_UTILIZATION_METRIC,
    horizontal_autoscaler,
    queue_depth_metric,
    replicated_http_service,
)
from ai_system.resources.extender import GPU_RESOURCE

COMPONENT = "search"
PORT = 8100
INDEX_MOUNT = "/index"
QUEUE_METRIC = "aisys_search_queue_depth"


def search_name(system: DistributedAISystem) -> str:
    return f"{system.name}-search"


def index_path(system: DistributedAISystem) -> str:
    assert system.search is not None
    return f"{INDEX_MOUNT}/{system.search.index}.aisys"


def build_command(system: DistributedAISystem) -> list[str]:
    search = system.search
    assert search is not None
    return ["ai-system", "search", "build", "--data", search.data, "--kind", search.index, "--n", str(search.vectors),
            "--dim", str(search.dim), "--nlist", str(search.nlist), "--nprobe", str(search.nprobe),
            "--out", index_path(system)]


def serve_command(system: DistributedAISystem) -> list[str]:
    search = system.search
    assert search is not None
    return ["ai-system", "search", "serve", "--index", index_path(system), "--device", search.device,
            "--host", "0.0.0.0", "--port", str(PORT), "--max-batch-size", str(search.max_batch_size),
            "--max-queue-delay-ms", f"{search.max_queue_delay_ms:g}", "--max-queue-size", str(search.max_queue_size),
            "--timeout-s", f"{search.timeout_s:g}"]


def target_queue_depth(system: DistributedAISystem) -> float:
    """Requests waiting per replica that the autoscaler aims at: half of ``max_batch_size``."""
    assert system.search is not None
    return max(1, system.search.max_batch_size // 2)


def _replica_resources(system: DistributedAISystem) -> dict[str, Any]:
    """One GPU's share of a node; a CPU replica takes the same CPU and memory share, without the GPU."""
    assert system.search is not None
    resources = share_of_node(system, 1)
    if system.search.device == "cpu":
        for part in resources.values():
            del part[GPU_RESOURCE]
    return resources


def _index_volume(system: DistributedAISystem, read_only: bool) -> dict[str, Any]:
    return {"name": "index", "persistentVolumeClaim": {"claimName": f"{search_name(system)}-index",
                                                        "readOnly": read_only}}


def build_job(system: DistributedAISystem) -> dict[str, Any]:
    """The index build, on CPU: memory for four copies of the corpus (generated, in the index, k-means
    working set, the saved file's bytes), at least 4 GiB."""
    assert system.search is not None
    memory = f"{max(4, math.ceil(4 * system.search.vector_bytes / 2**30))}Gi"
    resources = {"requests": {"cpu": "4", "memory": memory}, "limits": {"memory": memory}}
    container = {"name": "build", "image": system.image, "command": build_command(system), "env": list(APP_ENV),
                 "resources": resources, "volumeMounts": [{"name": "index", "mountPath": INDEX_MOUNT}]}
    spec = pod_spec([container], [_index_volume(system, False)], restartPolicy="OnFailure")
    name = f"{search_name(system)}-build"
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata(system, name, f"{COMPONENT}-build"),
            "spec": {"backoffLimit": 3, "template": {"metadata": {"labels": labels(system, f"{COMPONENT}-build")},
                                                     "spec": spec}}}


def _server_pod(system: DistributedAISystem) -> dict[str, Any]:
    assert system.search is not None
    path = index_path(system)
    probe = {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10, "timeoutSeconds": 5}
    mount = [{"name": "index", "mountPath": INDEX_MOUNT, "readOnly": True}]
    container = {
        "name": "server", "image": system.image, "command": serve_command(system), "env": list(APP_ENV),
        "ports": [{"name": "http", "containerPort": PORT}],
        "startupProbe": {**probe, "failureThreshold": 60},
        "livenessProbe": {**probe, "failureThreshold": 3},
        "readinessProbe": {**probe, "periodSeconds": 5, "failureThreshold": 2},
        "resources": _replica_resources(system), "volumeMounts": mount,
    }
    wait = wait_for_file(system, "wait-for-index", path, "the index", mount, poll_s=30)
    placement = gpu_placement(system, "inference") if system.search.device == "cuda" else {}
    return pod_spec([container], [_index_volume(system, True)], initContainers=[wait],
                    terminationGracePeriodSeconds=30, **placement)


def search_manifests(system: DistributedAISystem, autoscaling: bool) -> list[dict[str, Any]]:
    """The index volume and build Job, the server Deployment, Service, PodDisruptionBudget and (with
    ``autoscaling``) the HPA; without it the service runs its maximum replicas."""
    assert system.search is not None
    name = search_name(system)
    documents = [shared_claim(system, f"{name}-index", COMPONENT, system.search.storage_gib), build_job(system),
                 *replicated_http_service(system, name, COMPONENT, _server_pod(system), PORT,
                                          None if autoscaling else system.search_max_replicas)]
    if autoscaling:
        replicas = (system.search_min_replicas, system.search_max_replicas)
        queue = queue_depth_metric(QUEUE_METRIC, target_queue_depth(system))
        documents.append(horizontal_autoscaler(system, name, COMPONENT, replicas, [queue, CPU_UTILIZATION_METRIC]))
    return documents
