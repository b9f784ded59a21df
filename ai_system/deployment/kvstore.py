"""The KV store: Redis in a StatefulSet, one shard per pod, each with its own persistent volume.

Redis runs as the project's tests and benchmarks run it (``ai_system/recsys/redis_store.py``):
append-only file on, fsync every second, no eviction (a full store refuses writes instead of
dropping rows). With more than one shard the pods form a Redis Cluster (16384 hash slots split
evenly) through a one-shot Job that runs ``redis-cli --cluster create`` once all shards answer and
does nothing if the cluster exists. Each pod announces its stable DNS name, so a restarted shard
keeps its slots. A ``redis_exporter`` sidecar exports ``redis_up`` and the server's counters.
Clients are pods labelled ``ai-system.io/kv-client: "true"``; the NetworkPolicy admits no others.
"""

from __future__ import annotations

from typing import Any

from ai_system.architecture.blueprint import DistributedAISystem
from ai_system.deployment.pods import labels, metadata, pod_disruption_budget, pod_spec, selector

COMPONENT = "kv-store"
REDIS_IMAGE = "redis:7.2.5"
EXPORTER_IMAGE = "oliver006/redis_exporter:v1.62.0"
REDIS_UID = 999
EXPORTER_PORT = 9121
PORT = 6379
BUS_PORT = 16379


def store_name(system: DistributedAISystem) -> str:
    return f"{system.name}-kv"


def shard_hosts(system: DistributedAISystem) -> list[str]:
    """Stable DNS names of the shards (``<statefulset>-<i>.<headless service>.<namespace>.svc``)."""
    assert system.kv_store is not None
    name = store_name(system)
    return [f"{name}-{index}.{name}.{system.namespace}.svc" for index in range(system.kv_store.shards)]


def redis_config(system: DistributedAISystem) -> str:
    store = system.kv_store
    assert store is not None
    lines = ["port 6379", "bind * -::*", "protected-mode no", "dir /data", "appendonly yes", "appendfsync everysec",
             f"maxmemory {store.memory_gib}gb", "maxmemory-policy noeviction"]
    if store.shards > 1:
        lines += ["cluster-enabled yes", "cluster-config-file /data/nodes.conf", "cluster-node-timeout 5000",
                  "cluster-preferred-endpoint-type hostname"]
    return "\n".join(lines) + "\n"


def _bootstrap_script(system: DistributedAISystem) -> str:
    hosts = " ".join(shard_hosts(system))
    first = shard_hosts(system)[0]
    return "\n".join([
        "set -eu",
        f"for host in {hosts}; do until redis-cli -h $host ping | grep -q PONG; do sleep 2; done; done",
        f"if redis-cli -h {first} cluster info | grep -q cluster_state:ok; then echo 'cluster exists'; exit 0; fi",
        "addresses=''",
        f"for host in {hosts}; do addresses=\"$addresses $(getent hosts $host | cut -d' ' -f1):{PORT}\"; done",
        "redis-cli --cluster create $addresses --cluster-replicas 0 --cluster-yes",
    ])


def _bootstrap_job(system: DistributedAISystem) -> dict[str, Any]:
    name = f"{store_name(system)}-cluster-init"
    container = {"name": "cluster-init", "image": REDIS_IMAGE, "command": ["sh", "-c", _bootstrap_script(system)],
                 "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}}}
    init_labels = {**labels(system, f"{COMPONENT}-init")}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata(system, name, f"{COMPONENT}-init"),
            "spec": {"backoffLimit": 20, "ttlSecondsAfterFinished": 3600,
                     "template": {"metadata": {"labels": init_labels},
                                  "spec": pod_spec([container], [], uid=REDIS_UID, restartPolicy="OnFailure")}}}


def kv_store_manifests(system: DistributedAISystem) -> list[dict[str, Any]]:
    store = system.kv_store
    assert store is not None
    name = store_name(system)
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata(system, name, COMPONENT),
              "data": {"redis.conf": redis_config(system)}}
    service = {"apiVersion": "v1", "kind": "Service", "metadata": metadata(system, name, COMPONENT),
               "spec": {"clusterIP": "None", "publishNotReadyAddresses": True, "selector": selector(system, COMPONENT),
                        "ports": [{"name": "redis", "port": PORT, "targetPort": PORT},
                                  {"name": "cluster-bus", "port": BUS_PORT, "targetPort": BUS_PORT}]}}
    announce = ["--cluster-announce-hostname", f"$(POD_NAME).{name}.{system.namespace}.svc"] if store.shards > 1 else []
    memory = f"{store.memory_gib + max(1, store.memory_gib // 4)}Gi"
    redis = {
        "name": "redis", "image": REDIS_IMAGE, "command": ["redis-server", "/etc/redis/redis.conf", *announce],
        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "ports": [{"name": "redis", "containerPort": PORT}, {"name": "cluster-bus", "containerPort": BUS_PORT}],
        "readinessProbe": {"exec": {"command": ["redis-cli", "ping"]}, "periodSeconds": 5, "timeoutSeconds": 3},
        "livenessProbe": {"tcpSocket": {"port": PORT}, "periodSeconds": 10, "failureThreshold": 6},
        "resources": {"requests": {"cpu": "1", "memory": memory}, "limits": {"memory": memory}},
        "volumeMounts": [{"name": "data", "mountPath": "/data"},
                         {"name": "config", "mountPath": "/etc/redis", "readOnly": True}],
    }
    exporter = {
        "name": "metrics", "image": EXPORTER_IMAGE, "env": [{"name": "REDIS_ADDR", "value": f"redis://localhost:{PORT}"}],
        "ports": [{"name": "metrics", "containerPort": EXPORTER_PORT}],
        "readinessProbe": {"httpGet": {"path": "/health", "port": EXPORTER_PORT}, "periodSeconds": 10},
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}},
    }
    claim: dict[str, Any] = {"accessModes": ["ReadWriteOnce"],
                             "resources": {"requests": {"storage": f"{store.volume_gib}Gi"}}}
    if system.storage_class:
        claim["storageClassName"] = system.storage_class
    statefulset = {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": metadata(system, name, COMPONENT),
        "spec": {"serviceName": name, "replicas": store.shards, "podManagementPolicy": "Parallel",
                 "selector": {"matchLabels": selector(system, COMPONENT)},
                 "template": {"metadata": {"labels": labels(system, COMPONENT)},
                              "spec": pod_spec([redis, exporter], [{"name": "config", "configMap": {"name": name}}],
                                               uid=REDIS_UID, terminationGracePeriodSeconds=30)},
                 "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": claim}]}}
    documents = [config, service, statefulset, pod_disruption_budget(system, name, COMPONENT, max_unavailable=1)]
    return documents + ([_bootstrap_job(system)] if store.shards > 1 else [])
