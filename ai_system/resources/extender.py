"""kube-scheduler extender: our placement policy inside a real cluster's scheduling path.

kube-scheduler runs its own filter plugins (CPU, memory, taints, affinity...) and then POSTs to the
extender (``KubeSchedulerConfiguration.extenders``, see ``manifests.py``) the k8s.io/kube-scheduler
extender/v1 messages, whose Go structs have no JSON tags, so keys are the field names:

* ``/filter``: ``ExtenderArgs`` {Pod, Nodes: v1.NodeList, NodeNames} → ``ExtenderFilterResult``
  {Nodes, NodeNames, FailedNodes, FailedAndUnresolvableNodes, Error};
* ``/prioritize``: ``ExtenderArgs`` → ``HostPriorityList`` [{Host, Score}], scores 0..10;
* ``/bind``: ``ExtenderBindingArgs`` {PodName, PodNamespace, PodUID, Node} → ``ExtenderBindingResult``
  {Error}. The extender picks the GPUs, records the allocation, and creates the pod's ``Binding``
  through the API server with the GPU slots in the annotation ``ai-system.io/gpu-index`` ("0-1").

Requests: whole GPUs as ``resources.limits["nvidia.com/gpu"]``; a share of one GPU as the pod
annotation ``ai-system.io/gpu-milli`` (1..999, without ``nvidia.com/gpu``); allowed GPU models as
``ai-system.io/gpu-model`` ("V100M16|V100M32"). A node's model is its label ``ai-system.io/gpu-model``
(else ``nvidia.com/gpu.product``). The extender accounts for the pods it binds (``/sync`` rebuilds
that ledger from a PodList after a restart; ``DELETE /pods/{ns}/{name}`` releases a finished pod);
CPU and memory of pods placed without it are kept exact by kube-scheduler's own filters.
A malformed request is answered 400 with an ``{"error": {...}}`` body, never a crash.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from ai_system.resources.cluster import MILLI, Cluster, NodeSpec, OvercommitError, Placement, Task, best_gpus
from ai_system.resources.policies import Policy, make_policy

GPU_RESOURCE = "nvidia.com/gpu"
GPU_MILLI_ANNOTATION = "ai-system.io/gpu-milli"
GPU_MODEL_ANNOTATION = "ai-system.io/gpu-model"
GPU_INDEX_ANNOTATION = "ai-system.io/gpu-index"
NODE_MODEL_LABELS = ("ai-system.io/gpu-model", "nvidia.com/gpu.product")
MAX_EXTENDER_PRIORITY = 10
PENDING_LIMIT = 10_000  # pods filtered but not (yet) bound, oldest forgotten first
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_SUFFIX = {None: 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
           "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}


class BadRequest(ValueError):
    """A request the extender cannot act on; answered 400 with the reason."""


def quantity(text: Any, what: str) -> float:
    """A Kubernetes resource quantity ("500m", "16Gi", "2") as a plain number."""
    match = _QUANTITY.match(str(text).strip())
    if not match:
        raise BadRequest(f"{what}={text!r} is not a Kubernetes quantity like '500m', '16Gi' or '2'")
    return float(match.group(1)) * _SUFFIX[match.group(2)]


def _mapping(value: Any, what: str) -> dict:
    if not isinstance(value, dict):
        raise BadRequest(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def task_from_pod(pod: Any) -> Task:
    """The request of a v1.Pod as the API server serializes it (containers' requests, our annotations)."""
    pod = _mapping(pod, "Pod")
    meta = _mapping(pod.get("metadata") or {}, "Pod.metadata")
    annotations = meta.get("annotations") or {}
    name = f"{meta.get('namespace', 'default')}/{meta.get('name', '')}"
    cpu = memory = gpus = 0.0
    for container in _mapping(pod.get("spec") or {}, "Pod.spec").get("containers") or []:
        resources = _mapping(container.get("resources") or {}, "container.resources")
        requests = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
        cpu += quantity(requests.get("cpu", 0), f"{name} cpu request")
        memory += quantity(requests.get("memory", 0), f"{name} memory request")
        gpus += quantity(requests.get(GPU_RESOURCE, 0), f"{name} {GPU_RESOURCE}")
    if gpus != int(gpus):
        raise BadRequest(f"{name}: {GPU_RESOURCE}={gpus} must be a whole number; ask for a share of one GPU with "
                         f"the annotation {GPU_MILLI_ANNOTATION}")
    num_gpu, gpu_milli = int(gpus), MILLI if gpus else 0
    if GPU_MILLI_ANNOTATION in annotations:
        text = str(annotations[GPU_MILLI_ANNOTATION]).strip()
        if not text.isdigit() or not 0 < int(text) < MILLI:
            raise BadRequest(f"{name}: annotation {GPU_MILLI_ANNOTATION}={text!r}, expected an integer in 1..999 "
                             "(thousandths of one GPU)")
        if num_gpu:
            raise BadRequest(f"{name}: annotation {GPU_MILLI_ANNOTATION} asks for a share of one GPU, but the pod "
                             f"also requests {GPU_RESOURCE}={num_gpu}; use one or the other")
        num_gpu, gpu_milli = 1, int(text)
    models = frozenset(m for m in str(annotations.get(GPU_MODEL_ANNOTATION, "")).split("|") if m.strip())
    return Task(name=name, cpu_milli=round(cpu * 1000), memory_mib=round(memory / 2**20), num_gpu=num_gpu,
                gpu_milli=gpu_milli, gpu_models=models)


def node_from_k8s(node: Any) -> NodeSpec:
    """A v1.Node's allocatable CPU, memory and ``nvidia.com/gpu``, and its GPU model label."""
    node = _mapping(node, "Node")
    meta = _mapping(node.get("metadata") or {}, "Node.metadata")
    name = meta.get("name")
    if not name:
        raise BadRequest("a Node in Nodes.items has no metadata.name")
    status = _mapping(node.get("status") or {}, "Node.status")
    allocatable = status.get("allocatable") or status.get("capacity") or {}
    gpus = quantity(allocatable.get(GPU_RESOURCE, 0), f"node {name} {GPU_RESOURCE}")
    labels = meta.get("labels") or {}
    model = next((labels[label] for label in NODE_MODEL_LABELS if labels.get(label)), "unlabelled" if gpus else "")
    return NodeSpec(name=name, cpu_milli=round(quantity(allocatable.get("cpu", 0), f"node {name} cpu") * 1000),
                    memory_mib=round(quantity(allocatable.get("memory", 0), f"node {name} memory") / 2**20),
                    gpus=int(gpus), gpu_model=model)


Binder = Callable[[str, str, str, str, dict[str, str]], None]


def api_server_binder(api_url: str | None = None, token: str | None = None, verify: str | bool = True) -> Binder:
    """POST a v1 Binding (with annotations, which the API server copies onto the pod) to the API server.

    Defaults are the in-cluster ones: ``KUBERNETES_SERVICE_HOST``/``PORT`` and the service account token.
    """
    account = Path("/var/run/secrets/kubernetes.io/serviceaccount")
    if api_url is None:
        host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise ValueError("no API server: pass --api-server or run in a pod (KUBERNETES_SERVICE_HOST unset)")
        api_url = f"https://{host}:{port}"
        verify = str(account / "ca.crt") if (account / "ca.crt").is_file() else verify
    if token is None and (account / "token").is_file():
        token = (account / "token").read_text().strip()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    client = httpx.Client(base_url=api_url, headers=headers, verify=verify, timeout=10.0)

    def bind(namespace: str, name: str, uid: str, node: str, annotations: dict[str, str]) -> None:
        body = {"apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": name, "namespace": namespace, "uid": uid, "annotations": annotations},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node}}
        response = client.post(f"/api/v1/namespaces/{namespace}/pods/{name}/binding", json=body)
        if response.status_code >= 300:
            raise RuntimeError(f"API server refused the binding: {response.status_code} {response.text[:300]}")

    return bind


@dataclass
class Allocation:
    node: str
    task: Task
    gpus: tuple[int, ...]


class ExtenderState:
    """Nodes seen in requests, the pods this extender bound, and the policy that scores them."""

    def __init__(self, policy: Policy, binder: Binder | None = None) -> None:
        self.policy = policy
        self.binder = binder
        self.nodes: dict[str, NodeSpec] = {}
        self.allocations: dict[str, Allocation] = {}
        self.pending: dict[str, Task] = {}
        self.cluster: Cluster | None = None
        self.lock = threading.Lock()

    def _see(self, nodes: Sequence[NodeSpec]) -> None:
        changed = [node for node in nodes if self.nodes.get(node.name) != node]
        if not changed and self.cluster is not None:
            return
        self.nodes.update({node.name: node for node in changed})
        self._rebuild()

    def _rebuild(self) -> None:
        self.cluster = Cluster(list(self.nodes.values()))
        for key, allocation in list(self.allocations.items()):
            try:
                self.cluster.allocate(Placement(allocation.task, self.cluster.index[allocation.node], allocation.gpus))
            except OvercommitError as error:
                raise BadRequest(f"pod {key} no longer fits its node {allocation.node}: {error}") from None

    def _candidates(self, args: Any) -> tuple[Task, list[dict] | None, list[str]]:
        args = _mapping(args, "ExtenderArgs")
        if args.get("Pod") is None:
            raise BadRequest("ExtenderArgs.Pod is missing")
        task = task_from_pod(args["Pod"])
        uid = str(((args["Pod"].get("metadata") or {}).get("uid")) or task.name)
        self.pending[uid] = task
        if len(self.pending) > PENDING_LIMIT:
            self.pending.pop(next(iter(self.pending)))
        if args.get("Nodes") is not None:
            items = _mapping(args["Nodes"], "ExtenderArgs.Nodes").get("items") or []
            self._see([node_from_k8s(item) for item in items])
            return task, items, [item["metadata"]["name"] for item in items]
        names = args.get("NodeNames")
        if not isinstance(names, list):
            raise BadRequest("ExtenderArgs needs Nodes (a v1.NodeList) or NodeNames (a list of strings)")
        unknown = [name for name in names if name not in self.nodes]
        if unknown:
            raise BadRequest(f"NodeNames {unknown[:5]} were never sent as Node objects; configure the extender "
                             "with nodeCacheCapable: false")
        return task, None, names

    def filter(self, args: Any) -> dict[str, Any]:
        with self.lock:
            task, items, names = self._candidates(args)
            cluster = self.cluster
            feasible = set(cluster.feasible(task).tolist())
            failed = {name: self._why_not(task, name) for name in names if cluster.index[name] not in feasible}
            kept = [name for name in names if name not in failed]
            result: dict[str, Any] = {"FailedNodes": failed, "FailedAndUnresolvableNodes": {}, "Error": ""}
            if items is None:
                result["NodeNames"] = kept
            else:
                result["Nodes"] = {"apiVersion": "v1", "kind": "NodeList",
                                   "items": [item for item in items if item["metadata"]["name"] in kept]}
            return result

    def _why_not(self, task: Task, name: str) -> str:
        cluster, node = self.cluster, self.cluster.index[name]
        spec = cluster.nodes[node]
        if task.gpu_models and spec.gpu_model not in task.gpu_models:
            return f"GPU model {spec.gpu_model or 'none'} is not one of {sorted(task.gpu_models)}"
        if task.num_gpu and (cluster.gpu_free[node] >= task.gpu_milli).sum() < task.num_gpu:
            return (f"{task.num_gpu} GPU(s) with {task.gpu_milli} milli free needed; free milli per GPU: "
                    f"{cluster.gpu_free[node][:spec.gpus].tolist()}")
        return "not enough CPU or memory left for the pods this extender placed"

    def prioritize(self, args: Any) -> list[dict[str, Any]]:
        with self.lock:
            task, _, names = self._candidates(args)
            cluster = self.cluster
            rows = np.array([cluster.index[name] for name in names], dtype=np.int64)
            fits = np.isin(rows, cluster.feasible(task))
            scores = np.zeros(len(names), dtype=np.int64)
            if fits.any() and type(self.policy).scores is not Policy.scores:
                keys, _ = self.policy.scores(cluster, task, rows[fits])
                keys = keys if isinstance(keys, tuple) else (keys,)
                order = np.lexsort(keys[::-1])
                ranks = np.empty(len(order), dtype=np.int64)
                ranks[order] = np.arange(len(order))
                spread = max(1, len(order) - 1)
                scores[fits] = np.rint(MAX_EXTENDER_PRIORITY * (1 - ranks / spread)).astype(np.int64)
            elif fits.any():
                scores[fits] = MAX_EXTENDER_PRIORITY
            return [{"Host": name, "Score": int(score)} for name, score in zip(names, scores, strict=True)]

    def bind(self, args: Any) -> dict[str, str]:
        args = _mapping(args, "ExtenderBindingArgs")
        missing = [key for key in ("PodName", "PodNamespace", "PodUID", "Node") if not args.get(key)]
        if missing:
            raise BadRequest(f"ExtenderBindingArgs lacks {missing}")
        uid, node_name = str(args["PodUID"]), str(args["Node"])
        with self.lock:
            task = self.pending.get(uid)
            if task is None:
                return {"Error": f"pod {args['PodNamespace']}/{args['PodName']} (uid {uid}) was not filtered by this "
                                 "extender; nothing to bind"}
            if node_name not in self.nodes:
                return {"Error": f"node {node_name!r} was never offered to this extender"}
            node = self.cluster.index[node_name]
            if node not in self.cluster.feasible(task):
                return {"Error": f"pod {task.name} no longer fits node {node_name}: {self._why_not(task, node_name)}"}
            gpus = self._gpus_on(task, node)
            placement = Placement(task, node, gpus)
            self.cluster.allocate(placement)
            annotations = {GPU_INDEX_ANNOTATION: "-".join(str(g) for g in gpus)} if gpus else {}
            try:
                if self.binder is None:
                    raise RuntimeError("this extender has no API server to bind with (start it with --api-server)")
                self.binder(str(args["PodNamespace"]), str(args["PodName"]), uid, node_name, annotations)
            except Exception as error:
                self.cluster.release(placement)
                return {"Error": str(error)}
            self.pending.pop(uid, None)
            self.allocations[f"{args['PodNamespace']}/{args['PodName']}"] = Allocation(node_name, task, gpus)
            return {"Error": ""}

    def _gpus_on(self, task: Task, node: int) -> tuple[int, ...]:
        """The GPUs the policy would take on this node (FGD's own choice for a share)."""
        if type(self.policy).scores is not Policy.scores:
            _, gpus = self.policy.scores(self.cluster, task, np.array([node]))
            if gpus is not None:
                return tuple(int(g) for g in gpus[0])
        return best_gpus(self.cluster.gpu_free[node], task)

    def release(self, namespace: str, name: str) -> bool:
        with self.lock:
            allocation = self.allocations.pop(f"{namespace}/{name}", None)
            if allocation is None:
                return False
            self.cluster.release(Placement(allocation.task, self.cluster.index[allocation.node], allocation.gpus))
            return True

    def sync(self, pod_list: Any) -> int:
        """Rebuild the ledger from a v1.PodList: bound pods with our GPU-index annotation that are not finished."""
        items = _mapping(pod_list, "PodList").get("items")
        if not isinstance(items, list):
            raise BadRequest("PodList.items must be a list of Pods")
        ledger = {}
        for pod in items:
            meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
            phase = (pod.get("status") or {}).get("phase")
            node = spec.get("nodeName")
            if not node or phase in ("Succeeded", "Failed"):
                continue
            task = task_from_pod(pod)
            text = (meta.get("annotations") or {}).get(GPU_INDEX_ANNOTATION, "")
            gpus = tuple(int(g) for g in text.split("-")) if text else ()
            if len(gpus) != task.num_gpu:
                continue
            if node not in self.nodes:
                raise BadRequest(f"pod {task.name} runs on node {node!r}, which no request has described yet")
            ledger[f"{meta.get('namespace', 'default')}/{meta.get('name')}"] = Allocation(node, task, gpus)
        with self.lock:
            self.allocations = ledger
            self._rebuild()
        return len(ledger)


def _error(status: int, message: str) -> JSONResponse:
    """The project's OpenAI-style error body (kept here so the scheduler path does not import torch)."""
    return JSONResponse({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                   "code": status}}, status_code=status)


def create_app(state: ExtenderState) -> FastAPI:
    app = FastAPI(title="ai-system scheduler extender")

    async def body(request: Request) -> Any:
        try:
            return json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise BadRequest(f"request body is not JSON: {error}") from None

    @app.exception_handler(BadRequest)
    async def bad_request(_: Request, error: BadRequest) -> JSONResponse:
        return _error(400, str(error))

    @app.post("/filter")
    async def filter_(request: Request) -> dict[str, Any]:
        return state.filter(await body(request))

    @app.post("/prioritize")
    async def prioritize(request: Request) -> list[dict[str, Any]]:
        return state.prioritize(await body(request))

    @app.post("/bind")
    async def bind(request: Request) -> dict[str, str]:
        return state.bind(await body(request))

    @app.post("/sync")
    async def sync(request: Request) -> dict[str, int]:
        return {"allocations": state.sync(await body(request))}

    @app.delete("/pods/{namespace}/{name}")
    async def release(namespace: str, name: str) -> JSONResponse:
        if not state.release(namespace, name):
            return _error(404, f"no allocation for pod {namespace}/{name}")
        return JSONResponse({"released": f"{namespace}/{name}"})

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"policy": state.policy.name, "nodes": len(state.nodes), "allocations": len(state.allocations)}

    return app


def build_state(policy_name: str, typical_tasks: Sequence[Task], binder: Binder | None, seed: int = 0) -> ExtenderState:
    return ExtenderState(make_policy(policy_name, typical_tasks, seed), binder)
