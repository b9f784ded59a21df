"""Where pods land: the resource manager's kube-scheduler extender and Kueue quotas, for this system.

The manifests are the resource manager's own (``ai_system.resources.manifests``); this module feeds
them the blueprint's nodes and image and adds what a deployment needs around them:

* the extender's target workload (the ``ai-system-typical-pods`` ConfigMap FGD reads) is this
  system's own pod shapes — a training pod per node, a one-GPU model server, a one-GPU search
  server — so the policy keeps room for exactly the pods it will be asked to place;
* the extender's pod runs with the same hardened security context as every other pod;
* Kueue gets a ResourceFlavor and ClusterQueue sized to the training pool, and a LocalQueue in the
  system's namespace that the training job names in its ``kueue.x-k8s.io/queue-name`` label.

The ``KubeSchedulerConfiguration`` is control-plane configuration (kube-scheduler's ``--config``),
not an API object: it is written beside the manifests for the cluster operator, and embedded in the
extender's ConfigMap as the resource manager does.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from ai_system.architecture.blueprint import DistributedAISystem
from ai_system.deployment.pods import harden
from ai_system.deployment.training import queue_name
from ai_system.resources.cluster import NodeSpec
from ai_system.resources.manifests import (
    KUEUE_API,
    NAMESPACE,
    extender_deployment,
    kueue_quotas,
)
from ai_system.resources.trace import POD_COLUMNS

TYPICAL_PODS = "ai-system-typical-pods"
GPU_MILLI = 1000


def pool_nodes(system: DistributedAISystem, pool: str) -> list[NodeSpec]:
    count = system.training_nodes if pool == "training" else system.inference_nodes
    return [NodeSpec(f"{system.name}-{pool}-{index}", system.cpus_per_node * 1000, system.memory_gib_per_node * 1024,
                     system.gpu_per_node, system.gpu_model) for index in range(count)]


def typical_pods_csv(system: DistributedAISystem) -> str:
    """The system's pod shapes in the trace's pod-list format: what FGD treats as the workload to expect."""
    share = 0.9 / system.gpu_per_node
    rows = []
    if system.training is not None:
        rows.append((f"{system.name}-train", int(system.cpus_per_node * 1000 * 0.9),
                     int(system.memory_gib_per_node * 1024 * 0.9), system.gpu_per_node, GPU_MILLI))
    one_gpu = {"serve": system.serving is not None,
               "search": system.search is not None and system.search.device == "cuda"}
    rows += [(f"{system.name}-{pod}", int(system.cpus_per_node * 1000 * share),
              int(system.memory_gib_per_node * 1024 * share), 1, GPU_MILLI) for pod, present in one_gpu.items()
             if present]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(POD_COLUMNS)
    writer.writerows(rows)
    return out.getvalue()


def extender_manifests(system: DistributedAISystem) -> list[dict[str, Any]]:
    assert system.scheduler_policy is not None
    documents = extender_deployment(image=system.image, policy=system.scheduler_policy)
    for document in documents:
        if document["kind"] == "Deployment":
            template = document["spec"]["template"]
            template["spec"] = harden(template["spec"])
    typical = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": TYPICAL_PODS, "namespace": NAMESPACE},
               "data": {"pod_list.csv": typical_pods_csv(system)}}
    return [typical, *documents]


def kueue_manifests(system: DistributedAISystem) -> list[dict[str, Any]]:
    cluster_queue = f"{system.name}-training"
    local = {"apiVersion": KUEUE_API, "kind": "LocalQueue",
             "metadata": {"name": queue_name(system), "namespace": system.namespace},
             "spec": {"clusterQueue": cluster_queue}}
    return [*kueue_quotas(pool_nodes(system, "training"), queue=cluster_queue), local]

