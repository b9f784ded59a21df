"""``POST /search`` over a real loopback server: answers match the index, bad input is a 4xx with an error body."""

from __future__ import annotations

import re
import threading

import httpx
import pytest
import torch
from serving.harness import metric_samples

from ai_system.search import FlatIndex, IVFFlatIndex
from ai_system.search.load import search_load
from ai_system.search.server import create_app
from ai_system.serving.batcher import BatcherConfig
from ai_system.serving.threaded import ThreadedServer


@pytest.fixture(scope="module")
def corpus():
    return torch.randn(400, 8, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def served(corpus):
    index = IVFFlatIndex(8, 4, "l2", train_iterations=3)
    index.train(corpus)
    index.add(corpus)
    with ThreadedServer(create_app(index, BatcherConfig(max_queue_delay_ms=5))) as server, \
            httpx.Client(base_url=server.url, timeout=30) as client:
        yield client, index, server.url


def error_of(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == status
    return error


def test_search_answers_what_the_index_answers(served, corpus):
    client, index, _ = served
    response = client.post("/search", json={"queries": corpus[:3].tolist(), "k": 4, "nprobe": 4})
    assert response.status_code == 200, response.text
    expected = index.search(corpus[:3], 4, nprobe=4)
    assert response.json()["ids"] == expected.ids.tolist()
    assert response.json()["ids"][0][0] == 0
    health = client.get("/healthz").json()
    assert health["size"] == 400 and health["batches"] >= 1


def test_concurrent_requests_are_batched_and_each_gets_its_own_k(served, corpus):
    _, index, url = served
    report = search_load(url, corpus[:20], k=3, rate=float("inf"), count=20)
    assert report.completed == 20, report.errors
    with httpx.Client(base_url=url) as client:
        one = client.post("/search", json={"queries": [corpus[5].tolist()], "k": 1}).json()
    assert one["ids"] == [[5]]


@pytest.mark.parametrize(("body", "param", "message"), [
    ({"queries": [[1.0] * 7], "k": 3}, "queries", r"shape \(rows, 8\)"),
    ({"queries": [[1.0] * 8], "k": 0}, "k", r"k must be an integer in \[1, 400\]"),
    ({"queries": [[1.0] * 8], "k": 401}, "k", r"\[1, 400\]"),
    ({"queries": [[1.0] * 8], "k": 3, "nprobe": 9}, "nprobe", r"nprobe must be an integer in \[1, nlist = 4\]"),
    ({"queries": [], "k": 3}, "queries", "at least 1 item"),
    ({"queries": [[1.0] * 8], "k": 3, "metric": "l1"}, "metric", "Extra inputs"),
    ({"k": 3}, "queries", "Field required"),
])
def test_bad_requests_are_400_with_the_field_named(served, body, param, message):
    client, _, _ = served
    error = error_of(client.post("/search", json=body), 400)
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert re.search(message, str(error["message"])), error["message"]


def test_nan_and_malformed_json_are_400(served):
    client, _, _ = served
    response = client.post("/search", content=b'{"queries": [[NaN, 0, 0, 0, 0, 0, 0, 0]], "k": 2}',
                           headers={"Content-Type": "application/json"})
    assert "NaN or infinite" in error_of(response, 400)["message"]
    response = client.post("/search", content=b'{"queries": [[', headers={"Content-Type": "application/json"})
    assert "malformed JSON" in error_of(response, 400)["message"]


def test_empty_index_is_409_and_nprobe_on_flat_is_400():
    with ThreadedServer(create_app(FlatIndex(3))) as server, httpx.Client(base_url=server.url) as client:
        error = error_of(client.post("/search", json={"queries": [[1, 2, 3]], "k": 1}), 409)
        assert "the index is empty" in error["message"]
    flat = FlatIndex(3)
    flat.add(torch.eye(3))
    with ThreadedServer(create_app(flat)) as server, httpx.Client(base_url=server.url) as client:
        error = error_of(client.post("/search", json={"queries": [[1, 2, 3]], "k": 1, "nprobe": 2}), 400)
        assert error["param"] == "nprobe" and "applies to IVF indexes" in error["message"]


def test_full_queue_is_429():
    flat = FlatIndex(3)
    flat.add(torch.eye(3))
    app = create_app(flat, BatcherConfig(max_queue_size=1, max_batch_size=1, max_queue_delay_ms=0))
    gate = threading.Event()
    original = app.state.batcher.process
    app.state.batcher.process = lambda jobs: (gate.wait(10), original(jobs))[1]
    with ThreadedServer(app) as server:
        threading.Timer(1.0, gate.set).start()
        report = search_load(server.url, torch.eye(3), k=1, rate=float("inf"), count=6)
    assert report.errors.get("429", 0) >= 1 and report.completed >= 1
    assert report.completed + report.errors["429"] == 6


def test_metrics_move_with_requests_and_count_errors(served, corpus):
    _, _, url = served
    before = metric_samples(url)
    with httpx.Client(base_url=url, timeout=30) as client:
        assert client.post("/search", json={"queries": [corpus[0].tolist()], "k": 2}).status_code == 200
        error_of(client.post("/search", json={"queries": [[1.0, 2.0]], "k": 2}), 400)
    after = metric_samples(url)

    def moved(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    assert moved('aisys_search_requests_total{status="200"}') >= 1
    assert moved('aisys_search_requests_total{status="400"}') >= 1
    assert moved('aisys_search_request_errors_total{kind="invalid_request"}') >= 1
    assert moved("aisys_search_request_latency_seconds_count") >= 2
    assert moved("aisys_search_batch_size_count") >= 1 and moved("aisys_search_batch_size_sum") >= 1
    assert after["aisys_search_queue_depth"] == 0


def test_a_failing_search_is_counted_as_an_internal_error(corpus):
    index = FlatIndex(8, "l2")
    index.add(corpus[:10])

    def broken(*_: object) -> None:
        raise RuntimeError("the index broke")

    index.search = broken
    with ThreadedServer(create_app(index, BatcherConfig(max_queue_delay_ms=0))) as server, \
            httpx.Client(base_url=server.url, timeout=30) as client:
        error_of(client.post("/search", json={"queries": [corpus[0].tolist()], "k": 1}), 500)
        after = metric_samples(server.url)
    assert after['aisys_search_request_errors_total{kind="internal_error"}'] == 1
    assert after['aisys_search_requests_total{status="500"}'] == 1
