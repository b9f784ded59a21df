"""Every rendered manifest validates: core kinds with ``kubernetes-validate --strict`` for Kubernetes
``KUBERNETES_VERSION``, PyTorchJob and Kueue kinds against their published CRD schemas (strictly: an
unknown field fails, as the API server would silently drop it); and the manifests do what the
system needs (the planned train command, hardened pods, GPU limits, probes, autoscaling, policies)."""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from ai_system.architecture import DistributedAISystem, plan_training
from ai_system.cli import build_parser
from ai_system.deployment import KUBERNETES_VERSION, KubernetesDeployment
from ai_system.deployment.cli import DIAGRAM_PAGE, EXAMPLE_FOLDERS, EXAMPLES, example_texts, with_diagram
from ai_system.resources.manifests import scheduler_extender_config
from ai_system.resources.trace import load_tasks
from ai_system.training.cli import parse_config

SCHEMAS = Path(__file__).parents[1] / "data" / "k8s-schemas"
BLUEPRINTS = sorted((Path(__file__).parents[2] / "architectures").glob("*.yaml"))
CRDS = {("kubeflow.org/v1", "PyTorchJob"): ("kubeflow/kubeflow.org_pytorchjobs.yaml", "v1"),
        ("kueue.x-k8s.io/v1beta2", "ResourceFlavor"): ("kueue/kueue.x-k8s.io_resourceflavors.yaml", "v1beta2"),
        ("kueue.x-k8s.io/v1beta2", "ClusterQueue"): ("kueue/kueue.x-k8s.io_clusterqueues.yaml", "v1beta2"),
        ("kueue.x-k8s.io/v1beta2", "LocalQueue"): ("kueue/kueue.x-k8s.io_localqueues.yaml", "v1beta2")}
QUICK_START = DistributedAISystem(training_nodes=4, inference_nodes=8, gpu_per_node=4)


def _all_documents() -> list[tuple[str, dict[str, Any]]]:
    """Every distinct object any blueprint renders, under every option, as (where, document)."""
    found: dict[str, tuple[str, dict[str, Any]]] = {}
    for path in BLUEPRINTS:
        system = DistributedAISystem.from_yaml(path)
        for launcher in ("job", "pytorchjob"):
            for autoscaling in (True, False):
                rendered = KubernetesDeployment(system, autoscaling=autoscaling, launcher=launcher).render()
                for name, docs in rendered.manifests.items():
                    found.update({json.dumps(doc, sort_keys=True): (f"{path.stem}/{name}", doc) for doc in docs})
    return list(found.values())


DOCUMENTS = _all_documents()


def _strict(schema: Any) -> Any:
    """The schema with every object closed to unknown fields, except where the CRD keeps them."""
    if isinstance(schema, dict):
        closed = {key: _strict(value) for key, value in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema \
                and not schema.get("x-kubernetes-preserve-unknown-fields"):
            closed["additionalProperties"] = False
        return closed
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    return schema


@functools.cache
def _crd_validator(api_version: str, kind: str) -> Any:
    jsonschema = pytest.importorskip("jsonschema")
    file_name, version = CRDS[api_version, kind]
    crd = yaml.safe_load((SCHEMAS / file_name).read_text())
    schema = next(v["schema"]["openAPIV3Schema"] for v in crd["spec"]["versions"] if v["name"] == version)
    return jsonschema.Draft7Validator(_strict(schema))


def test_every_core_manifest_passes_kubernetes_validate_strict():
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    core = [(where, doc) for where, doc in DOCUMENTS if (doc["apiVersion"], doc["kind"]) not in CRDS]
    assert {doc["kind"] for _, doc in core} >= {"Namespace", "Deployment", "Service", "HorizontalPodAutoscaler",
                                                "StatefulSet", "Job", "PersistentVolumeClaim", "PodDisruptionBudget",
                                                "NetworkPolicy", "ConfigMap", "ServiceAccount", "ClusterRole",
                                                "ClusterRoleBinding"}
    for where, document in core:
        try:
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            raise AssertionError(f"{where}: {document['kind']} {document['metadata']['name']}: {error}") from None


def test_custom_resources_match_their_published_schemas():
    jsonschema = pytest.importorskip("jsonschema")
    custom = [(where, doc) for where, doc in DOCUMENTS if (doc["apiVersion"], doc["kind"]) in CRDS]
    assert {doc["kind"] for _, doc in custom} == {kind for _, kind in CRDS}
    for where, document in custom:
        try:
            _crd_validator(document["apiVersion"], document["kind"]).validate(document)
        except jsonschema.ValidationError as error:
            raise AssertionError(f"{where}: {document['kind']}: {error.message} at {list(error.path)}") from None


def test_the_strict_crd_check_catches_a_field_the_api_server_would_drop():
    jsonschema = pytest.importorskip("jsonschema")
    job = next(doc for _, doc in DOCUMENTS if doc["kind"] == "PyTorchJob")
    broken = copy.deepcopy(job)
    broken["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["gpus"] = 4
    with pytest.raises(jsonschema.ValidationError, match="gpus"):
        _crd_validator("kubeflow.org/v1", "PyTorchJob").validate(broken)


def _pod_specs(document: dict[str, Any]) -> list[dict[str, Any]]:
    if document["kind"] == "PyTorchJob":
        return [spec["template"]["spec"] for spec in document["spec"]["pytorchReplicaSpecs"].values()]
    template = document.get("spec", {}).get("template")
    return [template["spec"]] if template else []


def test_every_pod_runs_non_root_read_only_without_capabilities():
    pods = [(where, spec) for where, doc in DOCUMENTS for spec in _pod_specs(doc)]
    assert len(pods) > 10
    for where, spec in pods:
        assert spec["securityContext"]["runAsNonRoot"] and spec["securityContext"]["runAsUser"] > 0, where
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        for container in spec["containers"] + spec.get("initContainers", []):
            context = container["securityContext"]
            assert context == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                               "capabilities": {"drop": ["ALL"]}}, f"{where}: {container['name']}"
            assert "requests" in container["resources"] and "memory" in container["resources"]["limits"], where


def _rendered(launcher: str = "job", system: DistributedAISystem = QUICK_START) -> dict[str, dict[str, Any]]:
    rendered = KubernetesDeployment(system, launcher=launcher).render()
    return {f"{doc['kind']}/{doc['metadata']['name']}": doc for doc in rendered.documents()}


def test_training_runs_the_planned_train_command_under_torchrun():
    plan = plan_training(QUICK_START.training, 16, "H100-SXM", 4)
    for launcher, key in (("job", "Job/ai-system-train"), ("pytorchjob", "PyTorchJob/ai-system-train")):
        spec = _pod_specs(_rendered(launcher)[key])[0]
        trainer = next(c for c in spec["containers"] if c["name"] == "pytorch")
        command = trainer["command"] + trainer["args"]
        assert command[:4] == ["torchrun", "-m", "ai_system.cli", "train"]
        config = parse_config(command[4:])
        assert config.layout == plan.layout and config.model == "1B" and config.batch_size == 256
        assert config.resume == "auto" and config.checkpoint_dir.startswith("/data/")
        assert set(plan.train_arguments) <= set(command[4:])
        assert trainer["resources"]["limits"]["nvidia.com/gpu"] == "4"
        sidecar = spec["initContainers"][0]
        assert sidecar["restartPolicy"] == "Always"
        assert sidecar["command"][:3] == ["ai-system", "deploy", "train-exporter"]


def test_every_project_command_in_a_pod_parses_with_the_projects_cli():
    """A renamed or removed flag of ``ai-system serve``/``train``/... breaks here, not in a cluster
    (``--device cuda`` parses on any machine; serving checks the device when it starts)."""
    commands = {}
    for where, doc in DOCUMENTS:
        for spec in _pod_specs(doc):
            for container in spec["containers"] + spec.get("initContainers", []):
                line = container.get("command", []) + container.get("args", [])
                if line[:1] == ["ai-system"]:
                    commands[tuple(line[1:])] = where
                elif line[:3] == ["torchrun", "-m", "ai_system.cli"]:
                    commands[tuple(line[3:])] = where
    assert {line[0] for line in commands} == {"serve", "train", "schedule", "deploy", "search"}
    assert {line[1] for line in commands if line[0] == "search"} == {"build", "serve"}
    for line, where in commands.items():
        try:
            build_parser(line[0]).parse_args(list(line))
        except SystemExit:
            raise AssertionError(f"{where}: ai-system {' '.join(line)} does not parse") from None


def test_indexed_job_sets_torchrun_environment_from_the_completion_index():
    manifests = _rendered("job")
    job = manifests["Job/ai-system-train"]
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == 4
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "ai-system-queue"
    env = {item["name"]: item for item in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["PET_NNODES"]["value"] == "4" and env["PET_NPROC_PER_NODE"]["value"] == "4"
    assert "job-completion-index" in env["PET_NODE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert env["PET_MASTER_ADDR"]["value"] == "ai-system-train-0.ai-system-train.ai-system.svc"
    service = manifests["Service/ai-system-train"]
    assert service["spec"]["clusterIP"] == "None" and job["spec"]["template"]["spec"]["subdomain"] == "ai-system-train"


def test_pytorchjob_has_a_master_and_workers_on_the_operators_port():
    job = _rendered("pytorchjob")["PyTorchJob/ai-system-train"]
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert replicas["Master"]["replicas"] == 1 and replicas["Worker"]["replicas"] == 3
    assert job["spec"]["nprocPerNode"] == "4"
    container = replicas["Master"]["template"]["spec"]["containers"][0]
    assert container["name"] == "pytorch" and container["ports"][0]["name"] == "pytorchjob-port"


def test_serving_autoscales_on_queue_depth_with_cpu_fallback_and_probes():
    manifests = _rendered()
    hpa = manifests["HorizontalPodAutoscaler/ai-system-serve"]
    assert hpa["apiVersion"] == "autoscaling/v2" and (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (8, 32)
    metrics = {metric["type"]: metric for metric in hpa["spec"]["metrics"]}
    assert metrics["Pods"]["pods"]["metric"]["name"] == "aisys_queue_depth"
    assert metrics["Resource"]["resource"]["name"] == "cpu"
    deployment = manifests["Deployment/ai-system-serve"]
    assert "replicas" not in deployment["spec"]
    server = deployment["spec"]["template"]["spec"]["containers"][0]
    assert server["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert server["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert server["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert server["command"][:4] == ["ai-system", "serve", "--checkpoint", "/data/ai-system/model"]
    fixed = KubernetesDeployment(QUICK_START, autoscaling=False).render().documents()
    assert not [doc for doc in fixed if doc["kind"] == "HorizontalPodAutoscaler"]
    assert next(doc for doc in fixed if doc["kind"] == "Deployment" and "serve" in doc["metadata"]["name"]
                )["spec"]["replicas"] == 32


def test_search_is_scraped_and_its_queue_depth_served_to_the_autoscaler():
    system = DistributedAISystem.from_yaml(BLUEPRINTS[0].parent / "search.yaml")
    rendered = KubernetesDeployment(system).render()
    adapter = yaml.safe_load(rendered.files["monitoring/prometheus-adapter.yaml"])
    assert [rule["name"]["as"] for rule in adapter["rules"]] == ["aisys_search_queue_depth"]
    jobs = yaml.safe_load(rendered.files["monitoring/prometheus.yml"])["scrape_configs"]
    search_job = next(job for job in jobs if job["job_name"] == "search")
    assert search_job["relabel_configs"][0]["regex"] == "search;search"
    both = dataclasses.replace(QUICK_START, search=dataclasses.replace(system.search, device="cpu", max_replicas=4))
    assert [rule["name"]["as"] for rule in yaml.safe_load(KubernetesDeployment(both).render().files[
        "monitoring/prometheus-adapter.yaml"])["rules"]] == ["aisys_queue_depth", "aisys_search_queue_depth"]


def test_search_builds_its_index_then_serves_it_on_one_gpu_each_with_health_probes():
    manifests = _rendered(system=DistributedAISystem.from_yaml(Path(BLUEPRINTS[0].parent / "search.yaml")))
    build = manifests["Job/search-search-build"]["spec"]["template"]["spec"]["containers"][0]
    assert build["command"][:3] == ["ai-system", "search", "build"] and "nvidia.com/gpu" not in build["resources"]
    assert build["command"][-2:] == ["--out", "/index/ivf_flat.aisys"]
    pod = manifests["Deployment/search-search"]["spec"]["template"]["spec"]
    server = pod["containers"][0]
    assert server["command"][:5] == ["ai-system", "search", "serve", "--index", "/index/ivf_flat.aisys"]
    assert server["command"][server["command"].index("--device") + 1] == "cuda"
    assert {server[probe]["httpGet"]["path"] for probe in ("startupProbe", "livenessProbe", "readinessProbe")} == {
        "/healthz"}
    assert server["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["nodeSelector"]["ai-system.io/pool"] == "inference"
    assert pod["initContainers"][0]["name"] == "wait-for-index" and server["volumeMounts"][0]["readOnly"]
    hpa = manifests["HorizontalPodAutoscaler/search-search"]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (16, 128)
    queue, cpu = hpa["spec"]["metrics"]
    assert queue["pods"]["metric"]["name"] == "aisys_search_queue_depth"
    assert queue["pods"]["target"]["averageValue"] == "32" and cpu["resource"]["name"] == "cpu"
    scrapers = manifests["NetworkPolicy/search-prometheus"]["spec"]["egress"]
    assert {"to": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "search",
                                                    "app.kubernetes.io/component": "search"}}}],
            "ports": [{"protocol": "TCP", "port": 8100}]} in scrapers
    assert manifests["PodDisruptionBudget/search-search"]["spec"]["maxUnavailable"] == "25%"
    assert manifests["Service/search-search"]["spec"]["ports"][0]["port"] == 8100
    assert manifests["NetworkPolicy/search-search"]["spec"]["ingress"] == [{"ports": [{"protocol": "TCP",
                                                                                        "port": 8100}]}]
    assert "search-search,10800,117964,1,1000" in manifests["ConfigMap/ai-system-typical-pods"]["data"][
        "pod_list.csv"]


def test_cpu_search_asks_for_no_gpu_and_validates():
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    system = DistributedAISystem(**{**QUICK_START.to_dict(), "search": {"device": "cpu"}})
    documents = KubernetesDeployment(system, autoscaling=False).render().manifests["45-search.yaml"]
    deployment = next(doc for doc in documents if doc["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 8 and "nodeSelector" not in pod
    assert "nvidia.com/gpu" not in pod["containers"][0]["resources"]["limits"]
    assert pod["containers"][0]["command"][pod["containers"][0]["command"].index("--device") + 1] == "cpu"
    for document in documents:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_kv_store_is_a_statefulset_with_volumes_and_a_cluster_bootstrap():
    manifests = _rendered()
    store = manifests["StatefulSet/ai-system-kv"]
    assert store["spec"]["replicas"] == 3
    assert store["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "32Gi"
    config = manifests["ConfigMap/ai-system-kv"]["data"]["redis.conf"]
    assert "appendonly yes" in config and "cluster-enabled yes" in config and "maxmemory 16gb" in config
    assert "redis-cli --cluster create" in manifests["Job/ai-system-kv-cluster-init"]["spec"]["template"]["spec"][
        "containers"][0]["command"][-1]


def test_network_policies_deny_by_default_and_open_only_what_is_needed():
    policies = {name.split("/")[1]: doc["spec"] for name, doc in _rendered().items()
                if name.startswith("NetworkPolicy/")}
    deny = policies["ai-system-default-deny"]
    assert deny["podSelector"] == {} and deny["ingress"] == [] and deny["egress"] == []
    assert policies["ai-system-serving"]["ingress"] == [{"ports": [{"protocol": "TCP", "port": 8000}]}]
    kv_from = [rule["from"] for rule in policies["ai-system-kv-store"]["ingress"]]
    assert {"podSelector": {"matchLabels": {"ai-system.io/kv-client": "true"}}} in kv_from[1]


def test_the_extender_is_the_resource_managers_with_this_systems_pods():
    manifests = _rendered()
    extender = manifests["Deployment/ai-system-scheduler-extender"]
    assert extender["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"]
    assert "fgd-pack" in extender["spec"]["template"]["spec"]["containers"][0]["command"]
    embedded = yaml.safe_load(manifests["ConfigMap/ai-system-scheduler-config"]["data"]["scheduler-config.yaml"])
    assert embedded == scheduler_extender_config()


def test_typical_pods_are_a_pod_list_the_resource_manager_reads(tmp_path):
    path = tmp_path / "pods.csv"
    path.write_text(_rendered()["ConfigMap/ai-system-typical-pods"]["data"]["pod_list.csv"])
    tasks, rejected = load_tasks(path)
    assert not rejected and sorted(task.num_gpu for task in tasks) == [1, 4]


def test_kueue_queues_the_training_pool():
    manifests = _rendered()
    queue = manifests["ClusterQueue/ai-system-training"]
    quota = queue["spec"]["resourceGroups"][0]["flavors"][0]["resources"]
    assert {r["name"]: r["nominalQuota"] for r in quota}["nvidia.com/gpu"] == "16"
    assert manifests["LocalQueue/ai-system-queue"]["spec"]["clusterQueue"] == "ai-system-training"


def test_render_has_no_side_effects(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"render ran a process: {args}")

    monkeypatch.setattr(subprocess, "run", refuse)
    monkeypatch.setattr(subprocess, "Popen", refuse)
    rendered = KubernetesDeployment(QUICK_START).render()
    assert rendered.documents() and not list(tmp_path.iterdir())


def test_checked_in_examples_are_what_render_produces():
    expected = example_texts()
    on_disk = {str(path.relative_to(EXAMPLES)): path.read_text() for folder in EXAMPLE_FOLDERS
               for path in (EXAMPLES / folder).rglob("*") if path.is_file()}
    stale = sorted(set(on_disk) ^ set(expected)) + sorted(k for k in expected if on_disk.get(k) != expected[k])
    assert not stale, f"regenerate with `ai-system deploy examples`: {stale[:10]}"


def test_the_docs_draw_the_quickstart_topology():
    page = DIAGRAM_PAGE.read_text()
    assert page == with_diagram(page, QUICK_START.diagram()), "regenerate with `ai-system deploy examples`"
