"""Generated manifests validate offline: core kinds with kubernetes-validate, Kueue CRDs against their
published OpenAPI schemas, KubeSchedulerConfiguration against the v1 Go structs' JSON field names."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from ai_system.resources.cluster import NodeSpec
from ai_system.resources.manifests import all_manifests, kueue_quotas

SCHEMAS = Path(__file__).parents[1] / "data" / "k8s-schemas"
NODES = [NodeSpec("a", 96000, 393216, 8, "G2"), NodeSpec("b", 104000, 524288, 2, "T4"),
         NodeSpec("c", 104000, 524288, 2, "T4"), NodeSpec("d", 32000, 262144)]
KUBERNETES_VERSION = "1.33.0"


def _documents(kind: str) -> list[dict[str, Any]]:
    return [doc for docs in all_manifests(NODES).values() for doc in docs if doc["kind"] == kind]


@pytest.mark.parametrize("kind", ["ConfigMap", "Deployment", "Service", "ServiceAccount", "ClusterRole",
                                  "ClusterRoleBinding"])
def test_core_kinds_pass_kubernetes_validate(kind):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    for document in _documents(kind):
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def _crd_schema(file_name: str, version: str) -> dict[str, Any]:
    crd = yaml.safe_load((SCHEMAS / "kueue" / file_name).read_text())
    return next(v["schema"]["openAPIV3Schema"] for v in crd["spec"]["versions"] if v["name"] == version)


@pytest.mark.parametrize("kind, file_name", [("ResourceFlavor", "kueue.x-k8s.io_resourceflavors.yaml"),
                                             ("ClusterQueue", "kueue.x-k8s.io_clusterqueues.yaml")])
def test_kueue_objects_match_the_published_crd_schema(kind, file_name):
    jsonschema = pytest.importorskip("jsonschema")
    schema = _crd_schema(file_name, "v1beta2")
    documents = _documents(kind)
    assert documents
    for document in documents:
        assert document["apiVersion"] == "kueue.x-k8s.io/v1beta2"
        jsonschema.validate(document, schema)
    if kind == "ClusterQueue":
        broken = {**documents[0], "spec": {**documents[0]["spec"], "queueingStrategy": "Whenever"}}
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, schema)


def test_cluster_queue_quotas_are_the_pools_capacity():
    queue = kueue_quotas(NODES)[-1]
    flavors = {flavor["name"]: {r["name"]: r["nominalQuota"] for r in flavor["resources"]}
               for flavor in queue["spec"]["resourceGroups"][0]["flavors"]}
    assert flavors["gpu-t4"] == {"cpu": "208", "memory": f"{2 * 524288}Mi", "nvidia.com/gpu": "4"}
    assert flavors["gpu-g2"]["nvidia.com/gpu"] == "8" and flavors["cpu-only"]["nvidia.com/gpu"] == "0"


def _go_structs(*files: str) -> dict[str, dict[str, str]]:
    """struct name → {json field name: Go type} from Go source."""
    structs: dict[str, dict[str, str]] = {}
    for file_name in files:
        source = (SCHEMAS / "kube-scheduler" / file_name).read_text()
        for name, body in re.findall(r"type (\w+) struct \{(.*?)\n\}", source, flags=re.S):
            fields = {}
            for go_type, tag in re.findall(r"^\s*(?:\w+\s+)?([\w.\[\]*]+)\s+`json:\"([^\"]*)\"", body, flags=re.M):
                key = tag.split(",")[0]
                fields[key or f"<inline {go_type}>"] = go_type
            structs[name] = fields
    return structs


STRUCTS = _go_structs("config_v1_types.go", "config_v1_types_pluginargs.go")


def _check(value: Any, struct: str, path: str) -> None:
    fields = STRUCTS[struct]
    inline_meta = any("TypeMeta" in key for key in fields)
    for key, item in value.items():
        if key in ("apiVersion", "kind") and inline_meta:
            continue
        assert key in fields, f"{path}.{key} is not a field of {struct} (fields: {sorted(fields)})"
        go_type = fields[key].lstrip("*").removeprefix("[]").lstrip("*").split(".")[-1]
        if key == "args":
            _check(item, item["kind"], f"{path}.args")
        elif go_type in STRUCTS:
            for index, element in enumerate(item if isinstance(item, list) else [item]):
                _check(element, go_type, f"{path}.{key}[{index}]")


@pytest.mark.parametrize("file_name", ["scheduler-extender.yaml", "scheduler-packing.yaml"])
def test_scheduler_configuration_uses_only_v1_fields(file_name):
    for document in all_manifests(NODES)[file_name]:
        assert document["apiVersion"] == "kubescheduler.config.k8s.io/v1"
        _check(document, "KubeSchedulerConfiguration", "KubeSchedulerConfiguration")


def test_the_field_check_catches_a_misspelling():
    with pytest.raises(AssertionError, match="urlprefix"):
        _check({"extenders": [{"urlprefix": "http://x"}]}, "KubeSchedulerConfiguration", "cfg")


def test_configmap_embeds_the_extender_configuration():
    config_map = _documents("ConfigMap")[0]
    embedded = yaml.safe_load(config_map["data"]["scheduler-config.yaml"])
    assert embedded["extenders"][0]["bindVerb"] == "bind"
