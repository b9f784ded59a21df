"""The extender answers kube-scheduler's real request shapes (extender/v1 structs, core/v1 objects)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from ai_system.resources.extender import GPU_INDEX_ANNOTATION, ExtenderState, create_app, task_from_pod
from ai_system.resources.policies import make_policy


def k8s_node(name: str, gpus: int, model: str, cpu: str = "96", memory: str = "384Gi") -> dict:
    """A v1.Node as the API server serializes it (trimmed to what a node object always carries)."""
    allocatable = {"cpu": cpu, "memory": memory, "pods": "110", "ephemeral-storage": "1Ti"}
    if gpus:
        allocatable["nvidia.com/gpu"] = str(gpus)
    return {"kind": "Node", "apiVersion": "v1",
            "metadata": {"name": name, "uid": f"uid-{name}", "resourceVersion": "1",
                         "labels": {"kubernetes.io/hostname": name, "ai-system.io/gpu-model": model}},
            "spec": {"podCIDR": "10.0.0.0/24"},
            "status": {"capacity": allocatable, "allocatable": allocatable,
                       "conditions": [{"type": "Ready", "status": "True"}], "nodeInfo": {"kubeletVersion": "v1.31.0"}}}


def k8s_pod(name: str, cpu: str = "4", memory: str = "8Gi", gpus: int = 0, annotations: dict | None = None) -> dict:
    limits = {"nvidia.com/gpu": str(gpus)} if gpus else {}
    return {"kind": "Pod", "apiVersion": "v1",
            "metadata": {"name": name, "namespace": "team-a", "uid": f"uid-{name}", "annotations": annotations or {}},
            "spec": {"schedulerName": "default-scheduler",
                     "containers": [{"name": "main", "image": "trainer:1",
                                     "resources": {"requests": {"cpu": cpu, "memory": memory, **limits},
                                                   "limits": limits}}]},
            "status": {"phase": "Pending"}}


NODES = {"kind": "NodeList", "apiVersion": "v1", "metadata": {},
         "items": [k8s_node("gpu-a", 8, "G2"), k8s_node("gpu-b", 2, "T4", cpu="104", memory="512Gi"),
                   k8s_node("cpu-c", 0, "", cpu="32", memory="256Gi")]}


class RecordingBinder:
    def __init__(self, fail: bool = False) -> None:
        self.calls, self.fail = [], fail

    def __call__(self, namespace, name, uid, node, annotations) -> None:
        if self.fail:
            raise RuntimeError("API server said 409 Conflict")
        self.calls.append((namespace, name, uid, node, annotations))


@pytest.fixture
def extender(small_tasks):
    binder = RecordingBinder()
    state = ExtenderState(make_policy("fgd-pack", small_tasks), binder)
    return TestClient(create_app(state)), state, binder


def test_filter_keeps_nodes_with_room_and_says_why_the_others_fail(extender):
    client, _, _ = extender
    response = client.post("/filter", json={"Pod": k8s_pod("train", gpus=4), "Nodes": NODES, "NodeNames": None})
    assert response.status_code == 200
    body = response.json()
    assert [node["metadata"]["name"] for node in body["Nodes"]["items"]] == ["gpu-a"]
    assert set(body["FailedNodes"]) == {"gpu-b", "cpu-c"}
    assert "GPU" in body["FailedNodes"]["gpu-b"] and body["Error"] == ""


def test_model_constraint_and_fractional_share_from_annotations(extender):
    client, _, _ = extender
    pod = k8s_pod("infer", annotations={"ai-system.io/gpu-milli": "470", "ai-system.io/gpu-model": "T4"})
    assert task_from_pod(pod).gpu_milli == 470
    body = client.post("/filter", json={"Pod": pod, "Nodes": NODES}).json()
    assert [node["metadata"]["name"] for node in body["Nodes"]["items"]] == ["gpu-b"]
    assert "not one of ['T4']" in body["FailedNodes"]["gpu-a"]


def test_prioritize_scores_every_node_in_extender_range(extender):
    client, _, _ = extender
    body = client.post("/prioritize", json={"Pod": k8s_pod("share", annotations={"ai-system.io/gpu-milli": "500"}),
                                            "Nodes": NODES}).json()
    assert [entry["Host"] for entry in body] == ["gpu-a", "gpu-b", "cpu-c"]
    assert all(0 <= entry["Score"] <= 10 for entry in body)
    assert max(entry["Score"] for entry in body) == 10
    assert next(entry["Score"] for entry in body if entry["Host"] == "cpu-c") == 0


def test_bind_allocates_gpus_annotates_and_shares_a_gpu_until_full(extender):
    client, state, binder = extender
    for i in range(2):
        pod = k8s_pod(f"half-{i}", annotations={"ai-system.io/gpu-milli": "500"})
        client.post("/filter", json={"Pod": pod, "Nodes": NODES})
        result = client.post("/bind", json={"PodName": f"half-{i}", "PodNamespace": "team-a",
                                            "PodUID": f"uid-half-{i}", "Node": "gpu-b"}).json()
        assert result == {"Error": ""}
    slots = [call[4][GPU_INDEX_ANNOTATION] for call in binder.calls]
    assert slots[0] == slots[1]  # two halves packed on one GPU
    cluster = state.cluster
    assert sorted(cluster.gpu_free[cluster.index["gpu-b"]][:2].tolist()) == [0, 1000]
    assert client.get("/healthz").json()["allocations"] == 2
    assert client.delete("/pods/team-a/half-0").status_code == 200
    assert client.delete("/pods/team-a/half-0").status_code == 404


def test_failed_binding_is_rolled_back(small_tasks):
    state = ExtenderState(make_policy("best-fit"), RecordingBinder(fail=True))
    client = TestClient(create_app(state))
    client.post("/filter", json={"Pod": k8s_pod("p", gpus=2), "Nodes": NODES})
    result = client.post("/bind", json={"PodName": "p", "PodNamespace": "team-a", "PodUID": "uid-p",
                                        "Node": "gpu-a"}).json()
    assert "409" in result["Error"]
    assert state.cluster.allocated_gpu_milli == 0 and not state.allocations


def test_sync_rebuilds_the_ledger_from_a_pod_list(extender):
    client, state, _ = extender
    client.post("/filter", json={"Pod": k8s_pod("x"), "Nodes": NODES})
    running = k8s_pod("old", gpus=2, annotations={GPU_INDEX_ANNOTATION: "0-1"})
    running["spec"]["nodeName"], running["status"]["phase"] = "gpu-a", "Running"
    done = k8s_pod("done", gpus=8, annotations={GPU_INDEX_ANNOTATION: "0-1-2-3-4-5-6-7"})
    done["spec"]["nodeName"], done["status"]["phase"] = "gpu-a", "Succeeded"
    assert client.post("/sync", json={"kind": "PodList", "apiVersion": "v1", "items": [running, done]}).json() == {
        "allocations": 1}
    assert state.cluster.allocated_gpu_milli == 2000


@pytest.mark.parametrize("payload, fragment", [
    ("not json", "not JSON"),
    ({"Nodes": NODES}, "Pod is missing"),
    ({"Pod": k8s_pod("p", cpu="lots"), "Nodes": NODES}, "not a Kubernetes quantity"),
    ({"Pod": k8s_pod("p", annotations={"ai-system.io/gpu-milli": "1500"}), "Nodes": NODES}, "1..999"),
    ({"Pod": k8s_pod("p", gpus=1, annotations={"ai-system.io/gpu-milli": "300"}), "Nodes": NODES}, "one or the other"),
    ({"Pod": k8s_pod("p"), "NodeNames": ["never-seen"]}, "never sent"),
])
def test_malformed_requests_get_400_with_an_error_body(extender, payload, fragment):
    client, _, _ = extender
    response = (client.post("/filter", content=payload) if isinstance(payload, str)
                else client.post("/filter", json=payload))
    assert response.status_code == 400
    assert fragment in response.json()["error"]["message"]


def test_bind_of_an_unknown_pod_is_an_error_not_a_crash(extender):
    client, _, _ = extender
    result = client.post("/bind", json={"PodName": "ghost", "PodNamespace": "x", "PodUID": "u", "Node": "gpu-a"})
    assert result.status_code == 200 and "not filtered" in result.json()["Error"]
    assert client.post("/bind", json={"PodName": "ghost"}).status_code == 400
