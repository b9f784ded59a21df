"""Distributed training on the cluster: one pod per training node, each running ``torchrun`` with one
rank per GPU, every rank running ``ai-system train`` with the planned layout.

Two launchers run the same container:

* **Kubeflow ``PyTorchJob``** (training operator v1): a Master and ``nodes - 1`` Workers; the
  operator sets ``PET_NNODES``, ``PET_NODE_RANK``, ``PET_MASTER_ADDR``/``PORT`` and, from
  ``nprocPerNode``, ``PET_NPROC_PER_NODE`` — the environment torchrun reads its options from.
* **an indexed ``Job`` + headless ``Service``** for clusters without the operator: pod *i* is
  ``<job>-<i>.<service>``, and the same ``PET_*`` variables are set here (the node rank from the
  pod's completion index), so the command is identical.

The command is the capacity plan's ``ai-system train ...`` (``ai_system.architecture.capacity``) plus
what a cluster run needs: checkpoints every ``checkpoint_every`` steps on the shared volume,
``--resume auto`` (a restarted pod continues from the last checkpoint), the export that serving
loads, and a JSON-lines log that the metrics sidecar turns into Prometheus series. A failed rank
fails its pod; the other ranks fail at their next collective; the pods restart and resume.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ai_system.architecture.blueprint import DistributedAISystem
from ai_system.architecture.capacity import TrainingPlan
from ai_system.deployment.exporter import EXPORTER_PORT
from ai_system.deployment.pods import (
    APP_ENV,
    gpu_placement,
    labels,
    metadata,
    pod_disruption_budget,
    pod_spec,
    selector,
    share_of_node,
    shared_claim,
)
from ai_system.training.cli import train_arguments

COMPONENT = "training"
MASTER_PORT = 29500
PORT_NAME = "pytorchjob-port"
CONTAINER_NAME = "pytorch"
SHARED_MOUNT = "/data"
LOG_DIR = "/var/run/ai-system"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
COMPLETION_INDEX = "metadata.annotations['batch.kubernetes.io/job-completion-index']"


def job_name(system: DistributedAISystem) -> str:
    return f"{system.name}-train"


def queue_name(system: DistributedAISystem) -> str:
    return f"{system.name}-queue"


def run_dir(system: DistributedAISystem) -> str:
    return f"{SHARED_MOUNT}/{system.name}"


def export_dir(system: DistributedAISystem) -> str:
    return f"{run_dir(system)}/model"


def shared_volume_claim(system: DistributedAISystem) -> dict[str, Any]:
    """The volume training checkpoints to and serving loads the export from: ReadWriteMany, so every
    training node writes its shards of a DCP checkpoint and every server reads the export."""
    return shared_claim(system, f"{system.name}-shared", COMPONENT, system.shared_storage_gib)


def train_command(system: DistributedAISystem, plan: TrainingPlan) -> list[str]:
    """``torchrun -m ai_system.cli train <the plan's options + the cluster run's>``; torchrun's own
    options come from the ``PET_*`` environment."""
    training = system.training
    assert training is not None
    config = dataclasses.replace(
        plan.config, steps=training.steps, checkpoint_dir=f"{run_dir(system)}/checkpoints",
        checkpoint_every=training.checkpoint_every, resume="auto", export_dir=export_dir(system),
        log_file=f"{LOG_DIR}/train.jsonl", progress=False)
    return ["torchrun", "-m", "ai_system.cli", "train", *train_arguments(config)]


def _trainer_container(system: DistributedAISystem, plan: TrainingPlan, env: list[dict[str, Any]]) -> dict[str, Any]:
    command = train_command(system, plan)
    threads = max(1, int(system.cpus_per_node * 0.9) // system.gpu_per_node)
    return {
        "name": CONTAINER_NAME, "image": system.image, "command": command[:1], "args": command[1:],
        "env": [*APP_ENV, {"name": "OMP_NUM_THREADS", "value": str(threads)}, *env],
        "ports": [{"name": PORT_NAME, "containerPort": MASTER_PORT}],
        "resources": share_of_node(system, system.gpu_per_node),
        "volumeMounts": [{"name": "shared", "mountPath": SHARED_MOUNT}, {"name": "logs", "mountPath": LOG_DIR},
                         {"name": "dshm", "mountPath": "/dev/shm"}],
    }


def _exporter_sidecar(system: DistributedAISystem) -> dict[str, Any]:
    """A native sidecar (an init container that keeps running): it serves rank 0's log as metrics and
    stops with the pod, so a finished trainer still completes its Job."""
    probe = {"httpGet": {"path": "/healthz", "port": EXPORTER_PORT}, "periodSeconds": 10}
    return {
        "name": "metrics", "image": system.image, "restartPolicy": "Always",
        "command": ["ai-system", "deploy", "train-exporter", "--log-file", f"{LOG_DIR}/train.jsonl",
                    "--host", "0.0.0.0", "--port", str(EXPORTER_PORT)],
        "env": list(APP_ENV),
        "ports": [{"name": "metrics", "containerPort": EXPORTER_PORT}],
        "readinessProbe": probe, "livenessProbe": {**probe, "failureThreshold": 6},
        "resources": {"requests": {"cpu": "100m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}},
        "volumeMounts": [{"name": "logs", "mountPath": LOG_DIR, "readOnly": True}],
    }


def _trainer_pod(system: DistributedAISystem, plan: TrainingPlan, env: list[dict[str, Any]],
                 **fields: Any) -> dict[str, Any]:
    volumes = [{"name": "shared", "persistentVolumeClaim": {"claimName": f"{system.name}-shared"}},
               {"name": "logs", "emptyDir": {"sizeLimit": "1Gi"}},
               {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}}]
    return pod_spec([_trainer_container(system, plan, env)], volumes, initContainers=[_exporter_sidecar(system)],
                    **gpu_placement(system, "training"), **fields)


def _job_labels(system: DistributedAISystem) -> dict[str, str]:
    return {QUEUE_LABEL: queue_name(system)} if system.kueue else {}


def pytorch_job(system: DistributedAISystem, plan: TrainingPlan) -> dict[str, Any]:
    """The Kubeflow training operator's ``PyTorchJob`` (kubeflow.org/v1)."""
    template = {"metadata": {"labels": labels(system, COMPONENT)},
                "spec": _trainer_pod(system, plan, [])}
    replicas = {"Master": {"replicas": 1, "restartPolicy": "OnFailure", "template": template}}
    if system.training_nodes > 1:
        replicas["Worker"] = {"replicas": system.training_nodes - 1, "restartPolicy": "OnFailure",
                              "template": template}
    return {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
            "metadata": metadata(system, job_name(system), COMPONENT, **_job_labels(system)),
            "spec": {"nprocPerNode": str(system.gpu_per_node),
                     "runPolicy": {"cleanPodPolicy": "None", "backoffLimit": 3 * system.training_nodes},
                     "pytorchReplicaSpecs": replicas}}


def indexed_job(system: DistributedAISystem, plan: TrainingPlan) -> list[dict[str, Any]]:
    """An indexed ``Job`` (one pod per node, completion index = node rank) and the headless ``Service``
    that gives pod 0 the stable name the others rendezvous with."""
    name = job_name(system)
    env = [{"name": "PET_NNODES", "value": str(system.training_nodes)},
           {"name": "PET_NPROC_PER_NODE", "value": str(system.gpu_per_node)},
           {"name": "PET_NODE_RANK", "valueFrom": {"fieldRef": {"fieldPath": COMPLETION_INDEX}}},
           {"name": "PET_MASTER_ADDR", "value": f"{name}-0.{name}.{system.namespace}.svc"},
           {"name": "PET_MASTER_PORT", "value": str(MASTER_PORT)}]
    service = {"apiVersion": "v1", "kind": "Service", "metadata": metadata(system, name, COMPONENT),
               "spec": {"clusterIP": "None", "publishNotReadyAddresses": True,
                        "selector": selector(system, COMPONENT),
                        "ports": [{"name": PORT_NAME, "port": MASTER_PORT, "targetPort": MASTER_PORT}]}}
    job = {"apiVersion": "batch/v1", "kind": "Job",
           "metadata": metadata(system, name, COMPONENT, **_job_labels(system)),
           "spec": {"completionMode": "Indexed", "completions": system.training_nodes,
                    "parallelism": system.training_nodes, "backoffLimit": 3 * system.training_nodes,
                    "template": {"metadata": {"labels": labels(system, COMPONENT)},
                                 "spec": _trainer_pod(system, plan, env, subdomain=name,
                                                      restartPolicy="OnFailure")}}}
    return [service, job]


def training_manifests(system: DistributedAISystem, plan: TrainingPlan, launcher: str) -> list[dict[str, Any]]:
    """Shared volume, the job by ``launcher`` (``pytorchjob`` or ``job``) and a PodDisruptionBudget that
    lets no voluntary eviction take a rank (a drain waits for the run or for an operator's decision)."""
    job = [pytorch_job(system, plan)] if launcher == "pytorchjob" else indexed_job(system, plan)
    return [shared_volume_claim(system), *job,
            pod_disruption_budget(system, f"{system.name}-train", COMPONENT, max_unavailable=0)]
