"""NetworkPolicies: everything in the namespace is denied, then each flow the system needs is allowed.

| From | To | Port | Why |
| --- | --- | --- | --- |
| any pod | cluster DNS | 53 | name resolution |
| training pods | training pods | any | torchrun rendezvous, NCCL (its ports are chosen at run time) |
| anyone | servers | 8000 | inference clients |
| anyone | search servers | 8100 | search clients |
| ``ai-system.io/kv-client`` pods, other shards, the cluster-init Job | Redis | 6379, 16379 | KV clients, cluster bus |
| Prometheus | trainer sidecars, (search) servers, Redis, DCGM exporters | 9401, 8000, 8100, 9121, 9400 | scraping |
| Prometheus | Kubernetes API | 443, 6443 | service discovery |
| ``ai-system.io/metrics-reader`` pods (Grafana, Prometheus Adapter) | Prometheus | 9090 | queries |
"""

from __future__ import annotations

from typing import Any

from ai_system.architecture.blueprint import DistributedAISystem
from ai_system.deployment import kvstore, search, serving, training
from ai_system.deployment.exporter import EXPORTER_PORT
from ai_system.deployment.pods import KV_CLIENT_LABEL, METRICS_READER_LABEL, metadata, selector

PROMETHEUS = "prometheus"
PROMETHEUS_PORT = 9090
DCGM_NAMESPACE = "gpu-operator"
DCGM_PORT = 9400
API_SERVER_PORTS = (443, 6443)


def _policy(system: DistributedAISystem, name: str, pods: dict[str, Any], ingress: list[dict[str, Any]] | None = None,
            egress: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"podSelector": pods, "policyTypes": []}
    if ingress is not None:
        spec["policyTypes"].append("Ingress")
        spec["ingress"] = ingress
    if egress is not None:
        spec["policyTypes"].append("Egress")
        spec["egress"] = egress
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": metadata(system, f"{system.name}-{name}", "network"), "spec": spec}


def _pods(system: DistributedAISystem, component: str) -> dict[str, Any]:
    return {"podSelector": {"matchLabels": selector(system, component)}}


def _ports(*numbers: int) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": number} for number in numbers]


def network_policies(system: DistributedAISystem, monitoring: bool) -> list[dict[str, Any]]:
    everything: dict[str, Any] = {}
    dns = {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                   "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
           "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}
    policies = [_policy(system, "default-deny", everything, ingress=[], egress=[]),
                _policy(system, "dns", everything, egress=[dns])]
    prometheus = [_pods(system, PROMETHEUS)] if monitoring else []
    scrape_targets = []
    if system.training is not None:
        peers = [_pods(system, training.COMPONENT)]
        policies.append(_policy(
            system, "training", {"matchLabels": selector(system, training.COMPONENT)},
            ingress=[{"from": peers}] + ([{"from": prometheus, "ports": _ports(EXPORTER_PORT)}] if monitoring else []),
            egress=[{"to": peers}]))
        scrape_targets.append({"to": peers, "ports": _ports(EXPORTER_PORT)})
    if system.serving is not None:
        policies.append(_policy(system, "serving", {"matchLabels": selector(system, serving.COMPONENT)},
                                ingress=[{"ports": _ports(serving.PORT)}]))
        scrape_targets.append({"to": [_pods(system, serving.COMPONENT)], "ports": _ports(serving.PORT)})
    if system.search is not None:
        policies.append(_policy(system, "search", {"matchLabels": selector(system, search.COMPONENT)},
                                ingress=[{"ports": _ports(search.PORT)}]))
        scrape_targets.append({"to": [_pods(system, search.COMPONENT)], "ports": _ports(search.PORT)})
    if system.kv_store is not None:
        shards = [_pods(system, kvstore.COMPONENT)]
        clients = [{"podSelector": {"matchLabels": {KV_CLIENT_LABEL: "true"}}},
                   _pods(system, f"{kvstore.COMPONENT}-init")]
        ingress = [{"from": shards, "ports": _ports(kvstore.PORT, kvstore.BUS_PORT)},
                   {"from": clients, "ports": _ports(kvstore.PORT)}]
        if monitoring:
            ingress.append({"from": prometheus, "ports": _ports(kvstore.EXPORTER_PORT)})
        policies.append(_policy(system, "kv-store", {"matchLabels": selector(system, kvstore.COMPONENT)},
                                ingress=ingress,
                                egress=[{"to": shards, "ports": _ports(kvstore.PORT, kvstore.BUS_PORT)}]))
        kv_clients = {"matchExpressions": [{"key": KV_CLIENT_LABEL, "operator": "In", "values": ["true"]}]}
        policies.append(_policy(system, "kv-clients", kv_clients,
                                egress=[{"to": shards, "ports": _ports(kvstore.PORT)}]))
        if system.kv_store.shards > 1:
            policies.append(_policy(system, "kv-store-init",
                                    {"matchLabels": selector(system, f"{kvstore.COMPONENT}-init")},
                                    egress=[{"to": shards, "ports": _ports(kvstore.PORT)}]))
        scrape_targets.append({"to": shards, "ports": _ports(kvstore.EXPORTER_PORT)})
    if monitoring:
        dcgm = {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": DCGM_NAMESPACE}}}],
                "ports": _ports(DCGM_PORT)}
        api_server = {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": _ports(*API_SERVER_PORTS)}
        readers = {"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {METRICS_READER_LABEL: "true"}}}],
                   "ports": _ports(PROMETHEUS_PORT)}
        policies.append(_policy(system, PROMETHEUS, {"matchLabels": selector(system, PROMETHEUS)},
                                ingress=[readers], egress=[*scrape_targets, dcgm, api_server]))
    return policies
