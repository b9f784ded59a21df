"""Real redis-server processes for the Redis tests, on loopback ports in temp dirs, always stopped."""

from __future__ import annotations

import pytest
from redis.cluster import RedisCluster

from ai_system.recsys.redis_server import MISSING_REDIS, RedisServer, redis_available, redis_cluster, redis_node
from ai_system.recsys.redis_store import connect_cluster


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> RedisServer:
    if not redis_available():
        pytest.skip(MISSING_REDIS)
    with redis_node(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="module")
def cluster_client(tmp_path_factory: pytest.TempPathFactory) -> RedisCluster:
    if not redis_available():
        pytest.skip(MISSING_REDIS)
    with redis_cluster(tmp_path_factory.mktemp("redis-cluster")) as servers:
        client = connect_cluster([("127.0.0.1", s.port) for s in servers])
        yield client
        client.close()
