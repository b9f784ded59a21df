"""The HTTP endpoint: top-K, cold start, bad input (422), store outage (503), and freshness."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import torch

from ai_system.recsys.data import make_world
from ai_system.recsys.embedded import EmbeddedStore
from ai_system.recsys.models import TwoTower
from ai_system.recsys.redis_server import MISSING_REDIS, RedisServer, redis_available
from ai_system.recsys.redis_store import RedisStore
from ai_system.recsys.serving import Recommender, create_app, measure_freshness
from ai_system.recsys.store import EmbeddingStore
from ai_system.serving.threaded import ThreadedServer

DIM = 8


def serve(users: EmbeddingStore, items: EmbeddingStore, world):
    torch.manual_seed(0)
    items.get(world.item_ids)
    recommender = Recommender(TwoTower(DIM, hidden=8), users, items, world.item_ids, item_refresh_s=0.1)
    recommender.start()
    return recommender


@pytest.fixture
def embedded_service():
    world = make_world(50, 30, seed=0)
    recommender = serve(EmbeddedStore(DIM), EmbeddedStore(DIM), world)
    try:
        with ThreadedServer(create_app(recommender)) as http, httpx.Client(base_url=http.url) as client:
            yield client, recommender, world
    finally:
        recommender.stop()


def test_top_k_for_a_known_user_matches_the_model(embedded_service):
    client, recommender, world = embedded_service
    user = int(world.user_ids[3])
    row = recommender.users.get([user])
    answer = client.get(f"/recommend/{user}", params={"k": 5}).raise_for_status().json()
    with torch.no_grad():
        scores = recommender.model(row, recommender.items.get(world.item_ids, create=False))[0]
    assert answer["items"] == world.item_ids[torch.topk(scores, 5).indices.numpy()].tolist()
    assert answer["cold_start"] is False and len(answer["scores"]) == 5


def test_unknown_user_gets_the_cold_start_default_without_a_write(embedded_service):
    client, recommender, _ = embedded_service
    answer = client.get("/recommend/-17", params={"k": 3}).raise_for_status().json()
    assert answer["cold_start"] is True and len(answer["items"]) == 3
    assert len(recommender.users) == 0
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["store_reachable"] is True


@pytest.mark.parametrize("path, params, needle", [
    ("/recommend/abc", {}, "plain decimal"),
    ("/recommend/%205", {}, "got ' 5'"),
    ("/recommend/5%20", {}, "got '5 '"),
    ("/recommend/+5", {}, "got '+5'"),
    ("/recommend/05", {}, "got '05'"),
    ("/recommend/5.0", {}, "got '5.0'"),
    ("/recommend/5_0", {}, "got '5_0'"),
    ("/recommend/-0", {}, "got '-0'"),
    ("/recommend/9223372036854775808", {}, "fit in int64"),
    ("/recommend/1", {"k": 0}, "greater than or equal"),
    ("/recommend/1", {"k": 31}, "k must be in [1, 30]"),
])
def test_malformed_requests_answer_422_with_a_reason(embedded_service, path, params, needle):
    client, _, _ = embedded_service
    response = client.get(path, params=params)
    assert response.status_code == 422
    assert needle in response.text


def test_freshness_probe_sees_each_acknowledged_update(embedded_service):
    client, recommender, _ = embedded_service
    latencies = measure_freshness(client, recommender, probes=10)
    assert len(latencies) == 10 and (latencies > 0).all() and (latencies < 5).all()


def test_store_outage_answers_503_and_recovers(tmp_path):
    if not redis_available():
        pytest.skip(MISSING_REDIS)
    world = make_world(50, 30, seed=0)
    server = RedisServer(tmp_path / "redis", appendonly=True)
    server.start()
    try:
        users = RedisStore(server.client(), DIM, table="users")
        recommender = serve(users, RedisStore(server.client(), DIM, table="items"), world)
        user = int(world.user_ids[0])
        users.update([user], np.ones((1, DIM)))
        with ThreadedServer(create_app(recommender)) as http, httpx.Client(base_url=http.url) as client:
            assert client.get(f"/recommend/{user}").json()["cold_start"] is False
            server.kill()
            response = client.get(f"/recommend/{user}")
            assert response.status_code == 503 and "unreachable" in response.json()["detail"]
            server.start()
            assert client.get(f"/recommend/{user}").raise_for_status().json()["cold_start"] is False
        recommender.stop()
    finally:
        server.stop()
