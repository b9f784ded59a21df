"""Monitoring for a blueprint: Prometheus scrape configuration, recording and alerting rules with unit
tests that fire every alert, a Grafana dashboard, and the manifests that run Prometheus in the namespace.

What is scraped, and from where:

* ``serving``: the ``ai-system serve`` pods (port ``http``, ``/metrics``): the request latency
  histogram, time to first token, generated tokens, queue depth, active requests, batch size,
  errors by kind (``ai_system/serving/server.py``);
* ``search``: the ``ai-system search serve`` pods (port ``http``, ``/metrics``): requests by status,
  the request latency histogram, batch size, the batcher's queue depth, errors by kind
  (``ai_system/search/server.py``);
* ``training``: the training pods' metrics sidecar (``exporter.py``): step, tokens/s, loss, MFU,
  when the step last advanced, whether the run is done;
* ``kv-store``: the Redis pods' ``redis_exporter`` sidecar: ``redis_up``, commands, memory;
* ``gpu``: NVIDIA's DCGM exporter (GPU Operator, namespace ``gpu-operator``): ``DCGM_FI_DEV_GPU_UTIL``.

The same rules and dashboard serve a cluster (Kubernetes service discovery) and a laptop (static
loopback targets, as the integration test and the docs screenshot run them).
"""

from __future__ import annotations

import json
from typing import Any

from ai_system.architecture.blueprint import DistributedAISystem
from ai_system.deployment import kvstore, search, serving, training
from ai_system.deployment.network import DCGM_NAMESPACE, DCGM_PORT, PROMETHEUS, PROMETHEUS_PORT
from ai_system.deployment.pods import labels, metadata, pod_spec, selector
from ai_system.deployment.text import yaml_text

PROMETHEUS_IMAGE = "prom/prometheus:v2.53.0"
PROMETHEUS_UID = 65534
ERROR_RATIO_LIMIT = 0.01
TRAINING_STALL_S = 900
ERRORS = 'aisys_request_errors_total{job="serving",kind!="client_disconnected"}'
LATENCY = 'aisys_request_latency_seconds_bucket{job="serving"}'
COUNT = 'aisys_request_latency_seconds_count{job="serving"}'
SEARCH_LATENCY = 'aisys_search_request_latency_seconds_bucket{job="search"}'

RECORDING_RULES: dict[str, list[tuple[str, str]]] = {
    "serving": [
        ("aisys:request_latency_seconds:p99_5m", f"histogram_quantile(0.99, sum by (le) (rate({LATENCY}[5m])))"),
        ("aisys:request_latency_seconds:p50_5m", f"histogram_quantile(0.5, sum by (le) (rate({LATENCY}[5m])))"),
        ("aisys:requests:rate1m", f"sum(rate({COUNT}[1m]))"),
        ("aisys:generated_tokens:rate1m", 'sum(rate(aisys_generated_tokens_total{job="serving"}[1m]))'),
        ("aisys:request_errors:ratio_rate5m",
         f"(sum(rate({ERRORS}[5m])) or vector(0)) / clamp_min(sum(rate({COUNT}[5m])) + "
         f"(sum(rate({ERRORS}[5m])) or vector(0)), 1e-9)"),
        ("aisys:queue_depth:sum", 'sum(aisys_queue_depth{job="serving"})'),
    ],
    "search": [
        ("aisys:search_latency_seconds:p99_5m",
         f"histogram_quantile(0.99, sum by (le) (rate({SEARCH_LATENCY}[5m])))"),
        ("aisys:search_queue_depth:sum", f'sum({search.QUEUE_METRIC}{{job="search"}})'),
    ],
    "gpu": [("aisys:gpu_utilization:avg", 'avg(DCGM_FI_DEV_GPU_UTIL{job="gpu"})')],
}


def _alert(name: str, expr: str, duration: str, severity: str, summary: str) -> dict[str, Any]:
    return {"alert": name, "expr": expr, "for": duration, "labels": {"severity": severity},
            "annotations": {"summary": summary}}


def alerting_rules(system: DistributedAISystem) -> list[dict[str, Any]]:
    alerts = []
    if system.serving is not None:
        slo_s = system.serving.slo_p99_ms / 1e3
        alerts += [
            _alert("AisysServingLatencySLO", f"aisys:request_latency_seconds:p99_5m > {slo_s:g}", "5m", "page",
                   f"p99 request latency above the {system.serving.slo_p99_ms:g} ms SLO for 5 minutes"),
            _alert("AisysServingErrorRate", f"aisys:request_errors:ratio_rate5m > {ERROR_RATIO_LIMIT:g}", "5m", "page",
                   f"more than {ERROR_RATIO_LIMIT:.0%} of requests failed over 5 minutes"),
        ]
    if system.search is not None:
        alerts.append(_alert(
            "AisysSearchLatencySLO", f"aisys:search_latency_seconds:p99_5m > {system.search.slo_p99_ms / 1e3:g}", "5m",
            "page", f"p99 search latency above the {system.search.slo_p99_ms:g} ms SLO for 5 minutes"))
    alerts.append(_alert(
        "AisysGPUUtilizationLow", f"aisys:gpu_utilization:avg < {system.gpu_utilization_target_pct:g}", "30m", "ticket",
        f"mean GPU utilization below the {system.gpu_utilization_target_pct:g}% target for 30 minutes"))
    if system.training is not None:
        alerts.append(_alert(
            "AisysTrainingStalled",
            f'time() - max(aisys_train_last_progress_timestamp_seconds{{job="training"}}) > {TRAINING_STALL_S} '
            f'unless max(aisys_train_done{{job="training"}}) == 1', "5m", "page",
            f"no training step logged for {TRAINING_STALL_S // 60} minutes and the run is not done"))
    if system.kv_store is not None:
        alerts.append(_alert("AisysKVStoreDown",
                             'redis_up{job="kv-store"} == 0 or up{job="kv-store"} == 0 or absent(up{job="kv-store"})',
                             "1m", "page", "a Redis shard is down or unreachable"))
    return alerts


def rules(system: DistributedAISystem) -> dict[str, Any]:
    recorded = RECORDING_RULES["gpu"] + (RECORDING_RULES["serving"] if system.serving is not None else []) + \
        (RECORDING_RULES["search"] if system.search is not None else [])
    return {"groups": [
        {"name": "aisys-recording", "rules": [{"record": name, "expr": expr} for name, expr in recorded]},
        {"name": "aisys-alerts", "rules": alerting_rules(system)},
    ]}


def _alert_test(system: DistributedAISystem, name: str, series: dict[str, str], at: str,
                series_labels: dict[str, str] | None = None) -> dict[str, Any]:
    alert = next(rule for rule in alerting_rules(system) if rule["alert"] == name)
    return {"interval": "1m", "input_series": [{"series": key, "values": value} for key, value in series.items()],
            "alert_rule_test": [{"eval_time": at, "alertname": name,
                                 "exp_alerts": [{"exp_labels": {**(series_labels or {}), **alert["labels"]},
                                                 "exp_annotations": alert["annotations"]}]}]}


def rule_tests(system: DistributedAISystem, rules_file: str = "alerts.yml") -> dict[str, Any]:
    """``promtool test rules`` input: for each alert, series that fire it; healthy series that fire none;
    recording rules evaluated on known rates."""
    tests = []
    every = [rule["alert"] for rule in alerting_rules(system)]
    gpu_busy = {'DCGM_FI_DEV_GPU_UTIL{job="gpu",gpu="0"}': f"{system.gpu_utilization_target_pct + 5:g}x60"}
    healthy: dict[str, str] = dict(gpu_busy)
    if system.serving is not None:
        slow = {f'aisys_request_latency_seconds_bucket{{job="serving",le="{le}"}}': values
                for le, values in (("0.005", "0x30"), ("0.1", "0+100x30"), ("+Inf", "0+100x30"))}
        tests.append(_alert_test(system, "AisysServingLatencySLO",
                                 {**slow, COUNT: "0+100x30", **gpu_busy}, "20m"))
        failing = {'aisys_request_errors_total{job="serving",kind="engine_error"}': "0+5x30", COUNT: "0+100x30"}
        tests.append(_alert_test(system, "AisysServingErrorRate", {**failing, **gpu_busy}, "20m"))
        fast = {f'aisys_request_latency_seconds_bucket{{job="serving",le="{le}"}}': "0+100x60"
                for le in ("0.005", "0.1", "+Inf")}
        healthy |= {**fast, COUNT: "0+100x60"}
        tests.append({"interval": "1m", "input_series": [
            {"series": COUNT, "values": "0+60x10"},
            {"series": 'aisys_generated_tokens_total{job="serving"}', "values": "0+960x10"},
            {"series": 'aisys_queue_depth{job="serving",pod="a"}', "values": "3x10"},
            {"series": 'aisys_queue_depth{job="serving",pod="b"}', "values": "5x10"}],
            "promql_expr_test": [
                {"expr": "aisys:requests:rate1m", "eval_time": "5m", "exp_samples": [{"labels": "aisys:requests:rate1m",
                                                                                      "value": 1}]},
                {"expr": "aisys:generated_tokens:rate1m", "eval_time": "5m",
                 "exp_samples": [{"labels": "aisys:generated_tokens:rate1m", "value": 16}]},
                {"expr": "aisys:request_errors:ratio_rate5m", "eval_time": "5m",
                 "exp_samples": [{"labels": "aisys:request_errors:ratio_rate5m", "value": 0}]},
                {"expr": "aisys:queue_depth:sum", "eval_time": "5m",
                 "exp_samples": [{"labels": "aisys:queue_depth:sum", "value": 8}]}]})
    if system.search is not None:
        slow_le = f"{4 * system.search.slo_p99_ms / 1e3:g}"
        slow_search = {f'aisys_search_request_latency_seconds_bucket{{job="search",le="{le}"}}': values
                       for le, values in (("0.005", "0x30"), (slow_le, "0+100x30"), ("+Inf", "0+100x30"))}
        tests.append(_alert_test(system, "AisysSearchLatencySLO", {**slow_search, **gpu_busy}, "20m"))
        healthy |= {f'aisys_search_request_latency_seconds_bucket{{job="search",le="{le}"}}': "0+100x60"
                    for le in ("0.005", slow_le, "+Inf")}
        tests.append({"interval": "1m", "input_series": [
            {"series": f'{search.QUEUE_METRIC}{{job="search",pod="a"}}', "values": "2x10"},
            {"series": f'{search.QUEUE_METRIC}{{job="search",pod="b"}}', "values": "7x10"}],
            "promql_expr_test": [{"expr": "aisys:search_queue_depth:sum", "eval_time": "5m",
                                  "exp_samples": [{"labels": "aisys:search_queue_depth:sum", "value": 9}]}]})
    tests.append(_alert_test(system, "AisysGPUUtilizationLow",
                             {'DCGM_FI_DEV_GPU_UTIL{job="gpu",gpu="0"}': "20x60"}, "45m"))
    if system.training is not None:
        stalled = {'aisys_train_last_progress_timestamp_seconds{job="training"}': "0x40",
                   'aisys_train_done{job="training"}': "0x40"}
        tests.append(_alert_test(system, "AisysTrainingStalled", {**stalled, **gpu_busy}, "30m"))
        tests.append({"interval": "1m", "input_series": [
            {"series": 'aisys_train_last_progress_timestamp_seconds{job="training"}', "values": "0x40"},
            {"series": 'aisys_train_done{job="training"}', "values": "1x40"}],
            "alert_rule_test": [{"eval_time": "30m", "alertname": "AisysTrainingStalled", "exp_alerts": []}]})
        healthy |= {'aisys_train_last_progress_timestamp_seconds{job="training"}': "0+60x60",
                    'aisys_train_done{job="training"}': "0x60"}
    if system.kv_store is not None:
        down = {'redis_up{job="kv-store",instance="kv-0"}': "1x10 0x20", 'up{job="kv-store",instance="kv-0"}': "1x30"}
        tests.append(_alert_test(system, "AisysKVStoreDown", {**down, **gpu_busy}, "20m",
                                 {"instance": "kv-0", "job": "kv-store"}))
        healthy |= {'redis_up{job="kv-store",instance="kv-0"}': "1x60", 'up{job="kv-store",instance="kv-0"}': "1x60"}
    tests.append({"interval": "1m", "input_series": [{"series": k, "values": v} for k, v in healthy.items()],
                  "alert_rule_test": [{"eval_time": "50m", "alertname": name, "exp_alerts": []} for name in every]})
    return {"rule_files": [rules_file], "evaluation_interval": "1m", "tests": tests}


def _pod_job(system: DistributedAISystem, job: str, component: str, port_name: str,
             interval: str | None = None) -> dict[str, Any]:
    config: dict[str, Any] = {
        "job_name": job,
        "kubernetes_sd_configs": [{"role": "pod", "namespaces": {"names": [system.namespace]}}],
        "relabel_configs": [
            {"source_labels": ["__meta_kubernetes_pod_label_app_kubernetes_io_name",
                               "__meta_kubernetes_pod_label_app_kubernetes_io_component"],
             "regex": f"{system.name};{component}", "action": "keep"},
            {"source_labels": ["__meta_kubernetes_pod_container_port_name"], "regex": port_name, "action": "keep"},
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
            {"source_labels": ["__meta_kubernetes_pod_node_name"], "target_label": "node"},
        ]}
    if interval:
        config["scrape_interval"] = interval
    return config


def prometheus_config(system: DistributedAISystem, static_targets: dict[str, list[str]] | None = None,
                      interval: str = "15s", rules_file: str = "alerts.yml") -> dict[str, Any]:
    """Prometheus' configuration: pods found through the Kubernetes API, or ``static_targets`` (job →
    ``host:port`` list) for a local Prometheus. ``rules_file`` is relative to the configuration file."""
    config: dict[str, Any] = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval,
                   "external_labels": {"system": system.name}},
        "rule_files": [rules_file],
    }
    if static_targets is not None:
        config["scrape_configs"] = [{"job_name": job, "static_configs": [{"targets": targets}]}
                                    for job, targets in static_targets.items()]
        return config
    jobs = []
    if system.serving is not None:
        jobs.append(_pod_job(system, "serving", serving.COMPONENT, "http"))
    if system.search is not None:
        jobs.append(_pod_job(system, "search", search.COMPONENT, "http"))
    if system.training is not None:
        jobs.append(_pod_job(system, "training", training.COMPONENT, "metrics", interval="30s"))
    if system.kv_store is not None:
        jobs.append(_pod_job(system, "kv-store", kvstore.COMPONENT, "metrics"))
    jobs.append({
        "job_name": "gpu",
        "kubernetes_sd_configs": [{"role": "pod", "namespaces": {"names": [DCGM_NAMESPACE]}}],
        "relabel_configs": [
            {"source_labels": ["__meta_kubernetes_pod_label_app"], "regex": "nvidia-dcgm-exporter", "action": "keep"},
            {"source_labels": ["__meta_kubernetes_pod_container_port_number"], "regex": str(DCGM_PORT),
             "action": "keep"},
            {"source_labels": ["__meta_kubernetes_pod_node_name"], "target_label": "node"},
        ]})
    config["scrape_configs"] = jobs
    return config


def _panel(title: str, targets: list[tuple[str, str]], unit: str, position: tuple[int, int],
           thresholds: float | None = None) -> dict[str, Any]:
    x, y = position
    defaults: dict[str, Any] = {"unit": unit}
    if thresholds is not None:
        defaults["thresholds"] = {"mode": "absolute", "steps": [{"color": "green", "value": None},
                                                                {"color": "red", "value": thresholds}]}
        defaults["custom"] = {"thresholdsStyle": {"mode": "line"}}
    return {"type": "timeseries", "title": title, "gridPos": {"x": x, "y": y, "w": 12, "h": 8},
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "targets": [{"refId": chr(ord("A") + index), "expr": expr, "legendFormat": legend}
                        for index, (expr, legend) in enumerate(targets)]}


def dashboard(system: DistributedAISystem) -> dict[str, Any]:
    """A Grafana dashboard (JSON model, schema 39) of the system; queries use raw series, so it works
    without the recording rules, and fixed rate windows, so every query is plain PromQL."""
    quantile = "histogram_quantile({q}, sum by (le) (rate({series}[1m])))"
    panels: list[tuple[str, list[tuple[str, str]], str, float | None]] = []
    if system.serving is not None:
        ttft = 'aisys_time_to_first_token_seconds_bucket{job="serving"}'
        panels += [
            ("Requests per second", [(f"sum(rate({COUNT}[1m]))", "completed")], "reqps", None),
            ("Request latency", [(quantile.format(q=0.5, series=LATENCY), "p50"),
                                 (quantile.format(q=0.99, series=LATENCY), "p99")], "s",
             system.serving.slo_p99_ms / 1e3),
            ("Generated tokens per second",
             [('sum(rate(aisys_generated_tokens_total{job="serving"}[1m]))', "tokens/s")], "short", None),
            ("Time to first token", [(quantile.format(q=0.99, series=ttft), "p99")], "s", None),
            ("Queue depth and active requests", [('sum(aisys_queue_depth{job="serving"})', "waiting"),
                                                 ('sum(aisys_active_requests{job="serving"})', "in a KV-cache slot")],
             "short", None),
            ("Errors per second by kind", [('sum by (kind) (rate(aisys_request_errors_total{job="serving"}[5m]))',
                                            "{{kind}}")], "reqps", None),
            ("Mean batch size", [('sum(rate(aisys_batch_size_sum{job="serving"}[1m])) / '
                                  'sum(rate(aisys_batch_size_count{job="serving"}[1m]))', "rows per iteration")],
             "short", None),
            ("Serving replicas up", [('count(up{job="serving"} == 1)', "replicas")], "short", None),
        ]
    if system.search is not None:
        panels += [
            ("Search latency", [(quantile.format(q=0.5, series=SEARCH_LATENCY), "p50"),
                                (quantile.format(q=0.99, series=SEARCH_LATENCY), "p99")], "s",
             system.search.slo_p99_ms / 1e3),
            ("Search requests and queue depth",
             [('sum by (status) (rate(aisys_search_requests_total{job="search"}[1m]))', "{{status}} per second"),
              (f'sum({search.QUEUE_METRIC}{{job="search"}})', "waiting")], "short", None),
        ]
    panels.append(("GPU utilization", [('avg(DCGM_FI_DEV_GPU_UTIL{job="gpu"})', "mean"),
                                       ('avg by (node) (DCGM_FI_DEV_GPU_UTIL{job="gpu"})', "{{node}}")], "percent",
                   system.gpu_utilization_target_pct))
    if system.training is not None:
        panels += [
            ("Training throughput", [('max(aisys_train_tokens_per_second{job="training"})', "tokens/s")], "short",
             None),
            ("Training loss and step", [('max(aisys_train_loss{job="training"})', "loss"),
                                        ('max(aisys_train_step{job="training"})', "step")], "short", None),
        ]
    if system.kv_store is not None:
        panels += [
            ("KV store shards up", [('sum(redis_up{job="kv-store"})', "up")], "short", None),
            ("KV store commands per second", [('sum(rate(redis_commands_processed_total{job="kv-store"}[1m]))',
                                               "commands/s")], "ops", None),
            ("KV store memory", [('sum by (pod) (redis_memory_used_bytes{job="kv-store"})', "{{pod}}")], "bytes", None),
        ]
    return {
        "title": f"ai-system: {system.name}", "uid": f"aisys-{system.name}"[:40], "schemaVersion": 39, "version": 1,
        "editable": True, "refresh": "30s", "time": {"from": "now-1h", "to": "now"}, "tags": ["ai-system"],
        "templating": {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus",
                                 "label": "Prometheus"}]},
        "panels": [_panel(title, targets, unit, (12 * (index % 2), 8 * (index // 2)), threshold)
                   for index, (title, targets, unit, threshold) in enumerate(panels)],
    }


def dashboard_queries(board: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in board["panels"] for target in panel["targets"]]


def prometheus_manifests(system: DistributedAISystem) -> list[dict[str, Any]]:
    """Prometheus in the namespace (read access to pods for discovery here and in the DCGM exporter's
    namespace, which may not exist yet, hence cluster-wide; configuration and rules; a volume for the TSDB),
    and the dashboard as a ConfigMap that Grafana's dashboard sidecar loads (label ``grafana_dashboard``)."""
    name = f"{system.name}-{PROMETHEUS}"
    meta = metadata(system, name, PROMETHEUS)
    read = [{"apiGroups": [""], "resources": ["pods", "services", "endpoints"], "verbs": ["get", "list", "watch"]}]
    account = {"kind": "ServiceAccount", "name": name, "namespace": system.namespace}
    cluster_meta = {"name": name, "labels": meta["labels"]}
    documents: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": cluster_meta, "rules": read},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": cluster_meta,
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
         "subjects": [account]},
    ]
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
              "data": {"prometheus.yml": yaml_text(prometheus_config(system)),
                       "alerts.yml": yaml_text(rules(system))}}
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta,
             "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "50Gi"}},
                      **({"storageClassName": system.storage_class} if system.storage_class else {})}}
    container = {
        "name": PROMETHEUS, "image": PROMETHEUS_IMAGE,
        "args": ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus",
                 "--storage.tsdb.retention.time=15d", f"--web.listen-address=:{PROMETHEUS_PORT}"],
        "ports": [{"name": "http", "containerPort": PROMETHEUS_PORT}],
        "readinessProbe": {"httpGet": {"path": "/-/ready", "port": "http"}, "periodSeconds": 10},
        "livenessProbe": {"httpGet": {"path": "/-/healthy", "port": "http"}, "periodSeconds": 15,
                          "failureThreshold": 4},
        "resources": {"requests": {"cpu": "500m", "memory": "2Gi"}, "limits": {"memory": "4Gi"}},
        "volumeMounts": [{"name": "config", "mountPath": "/etc/prometheus", "readOnly": True},
                         {"name": "data", "mountPath": "/prometheus"}],
    }
    volumes = [{"name": "config", "configMap": {"name": name}},
               {"name": "data", "persistentVolumeClaim": {"claimName": name}}]
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": {
        "replicas": 1, "strategy": {"type": "Recreate"}, "selector": {"matchLabels": selector(system, PROMETHEUS)},
        "template": {"metadata": {"labels": labels(system, PROMETHEUS)},
                     "spec": pod_spec([container], volumes, uid=PROMETHEUS_UID, serviceAccountName=name,
                                      automountServiceAccountToken=True)}}}
    service = {"apiVersion": "v1", "kind": "Service", "metadata": meta,
               "spec": {"selector": selector(system, PROMETHEUS),
                        "ports": [{"name": "http", "port": PROMETHEUS_PORT, "targetPort": "http"}]}}
    board = {"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": metadata(system, f"{system.name}-grafana-dashboard", PROMETHEUS, grafana_dashboard="1"),
             "data": {f"{system.name}.json": json.dumps(dashboard(system), indent=1)}}
    return documents + [config, claim, deployment, service, board]
