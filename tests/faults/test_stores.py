"""Faults and bad input for the embedding stores: process kills, a hung Redis, torn and damaged logs,
a failing disk, overflowing gradients, inexact ids. Every store promise in docs/reliability/stores.md
has its test here."""

from __future__ import annotations

import errno
import time

import numpy as np
import pytest
import torch

from ai_system.recsys import update_log
from ai_system.recsys.embedded import EmbeddedStore
from ai_system.recsys.faults import crash_embedded_writer, crash_redis_server, hang_redis
from ai_system.recsys.redis_server import MISSING_REDIS, RedisServer, redis_available, redis_cluster
from ai_system.recsys.redis_store import RedisStore, connect_cluster
from ai_system.recsys.store import StoreUnavailableError, parse_id
from ai_system.recsys.update_log import UpdateLogError

needs_redis = pytest.mark.skipif(not redis_available(), reason=MISSING_REDIS)


@pytest.mark.slow
@pytest.mark.parametrize("fsync", ["always", "everysec"])
def test_killed_embedded_writer_loses_no_acknowledged_update(tmp_path, fsync):
    """SIGKILL mid-stream, with snapshots taken along the way (1 every ~70 batches): every acknowledged
    batch is back after reopening, and no row of the batch in flight is half written. ``everysec``
    loses nothing to a process kill either (the page cache survives it); its window is an OS crash."""
    outcome = crash_embedded_writer(tmp_path / "store", fsync, kill_after=300, compact_bytes=256 << 10)
    assert outcome.acknowledged >= 300 and outcome.lost == 0 and outcome.torn == 0
    assert len(list((tmp_path / "store").glob("snapshot-*.npz"))) == 1


@needs_redis
@pytest.mark.parametrize("appendfsync", ["always", "everysec"])
def test_killed_redis_server_raises_then_aof_keeps_every_acknowledged_row(tmp_path, appendfsync):
    outcome, error = crash_redis_server(tmp_path / "aof", appendfsync, kill_after=20)
    assert "unreachable" in error and "not acknowledged" in error
    assert outcome.acknowledged >= 20 and outcome.lost == 0 and outcome.torn == 0


@needs_redis
def test_cluster_with_a_dead_master_fails_fast_with_a_clear_error(tmp_path):
    with redis_cluster(tmp_path) as servers:
        client = connect_cluster([("127.0.0.1", s.port) for s in servers])
        store = RedisStore(client, 4, table="outage")
        ids = np.arange(2000)
        store.get(ids)
        servers[1].kill()
        with pytest.raises(StoreUnavailableError, match=f"unreachable .*{servers[1].port}"):
            store.get(ids)
        client.close()


@needs_redis
def test_hung_cluster_master_fails_a_call_within_the_timeout_and_recovers(tmp_path):
    """redis-py's cluster pipeline would resend each failed command one at a time, each with its own
    timeout (24 s here for one read at a 1 s timeout); the store sends a pipeline once. A connection
    that fails also makes redis-py refresh the slot map from a startup node, which may be the hung one:
    at most two timeouts."""
    with redis_cluster(tmp_path) as servers:
        client = connect_cluster([("127.0.0.1", s.port) for s in servers], timeout_s=1.0)
        store = RedisStore(client, 4, table="hung")
        ids = np.arange(2000)
        store.get(ids)
        servers[1].pause()
        try:
            for call in (lambda: store.get(ids), lambda: store.apply_gradients(ids, np.ones((2000, 4)), lr=0.1)):
                start = time.perf_counter()
                with pytest.raises(StoreUnavailableError, match="hung"):
                    call()
                assert time.perf_counter() - start < 2.5
        finally:
            servers[1].resume()
        deadline = time.monotonic() + 15
        while True:
            try:
                assert store.get(ids).shape == (2000, 4)
                break
            except StoreUnavailableError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        client.close()


@needs_redis
def test_hung_redis_honours_the_timeout_keeps_health_fast_and_applies_a_retried_update_once(tmp_path):
    """SIGSTOP: a store call raises after the 1 s socket timeout (not after redis-py's ten retries),
    ``/healthz`` answers at once and says ``degraded`` while 32 requests wait on the store (and get 503);
    a gradient update whose write reached the server after its call gave up is applied once, with
    its retry."""
    outcome = hang_redis(tmp_path / "redis", timeout_s=1.0)
    assert 0.9 <= outcome.call_s < 2.0
    assert max(outcome.healthz_s) < outcome.timeout_s and outcome.healthz_status == "degraded"
    assert set(outcome.recommend_status) == {503}
    assert outcome.landed_late, "the first attempt should land after the server resumed (the hazard tested)"
    assert outcome.steps_applied == 1


@needs_redis
def test_a_client_that_retries_by_itself_is_refused(tmp_path):
    import redis

    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        with pytest.raises(ValueError, match="retries 10 times .* connect"):
            RedisStore(redis.Redis(port=server.port, socket_timeout=5), 4)
        with pytest.raises(ValueError, match="socket_timeout=None"):
            RedisStore(redis.Redis(port=server.port, socket_timeout=None, retry=None), 4)
    finally:
        server.stop()


def durable(path, **options) -> EmbeddedStore:
    return EmbeddedStore(4, n_shards=3, path=path, **options)


def test_durable_store_reopens_with_every_write_eviction_and_snapshot(tmp_path):
    now = [0.0]
    store = durable(tmp_path, ttl_s=10.0, clock=lambda: now[0], compact_bytes=1 << 30)
    ids = np.arange(1, 200)
    store.get(ids)
    store.update(ids[:50], np.arange(200, dtype=np.float32).reshape(50, 4))
    store.apply_gradients(ids[40:120], np.ones((80, 4), np.float32), lr=0.1)
    store.snapshot()
    store.apply_gradients(ids[100:150], np.ones((50, 4), np.float32), lr=0.1)
    now[0] = 5.0
    store.update(ids[:10], np.ones((10, 4)))
    now[0] = 12.0
    evicted = store.evict_expired()
    expected = store.get(ids, create=False)
    store.close()
    reopened = durable(tmp_path)
    torch.testing.assert_close(reopened.get(ids, create=False), expected, rtol=0, atol=0)
    assert evicted > 0 and len(reopened) == 10, "evicted rows must stay gone"
    reopened.close()


def test_torn_tail_is_cut_and_damage_in_the_middle_refuses_to_load(tmp_path):
    store = durable(tmp_path)
    store.update([1, 2], np.ones((2, 4)))
    store.update([3], 2 * np.ones((1, 4)))
    store.close()
    log = next(tmp_path.glob("log-*.bin"))
    intact = log.read_bytes()
    log.write_bytes(intact + intact[:30])
    with pytest.warns(UserWarning, match="cut 30 bytes of a record torn by a crash"):
        reopened = durable(tmp_path)
    torch.testing.assert_close(reopened.get([1, 2, 3], create=False), torch.tensor([[1.0] * 4, [1.0] * 4, [2.0] * 4]))
    reopened.close()
    assert log.read_bytes() == intact
    damaged = bytearray(intact)
    damaged[40] ^= 0xFF
    log.write_bytes(bytes(damaged))
    with pytest.raises(ValueError, match=r"damaged at byte 0 .* checksum does not match, with more data after it"):
        durable(tmp_path)


def test_reopening_with_another_dim_or_from_a_second_process_is_refused(tmp_path):
    store = durable(tmp_path)
    store.update([1], np.ones((1, 4)))
    with pytest.raises(RuntimeError, match="open in another process"):
        durable(tmp_path)
    store.snapshot()
    store.close()
    with pytest.raises(ValueError, match="dim 4, but the store has dim 8"):
        EmbeddedStore(8, path=tmp_path)


def test_a_failed_log_write_changes_nothing_and_is_not_acknowledged(tmp_path, monkeypatch):
    store = durable(tmp_path)
    store.update([1], np.ones((1, 4)))

    def disk_full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(update_log.os, "write", disk_full)
    with pytest.raises(UpdateLogError, match="No space left .* not acknowledged and changed nothing"):
        store.apply_gradients([1], np.ones((1, 4)), lr=0.5)
    monkeypatch.undo()
    torch.testing.assert_close(store.get([1]), torch.ones(1, 4))
    store.update([2], 3 * np.ones((1, 4)))
    store.close()
    torch.testing.assert_close(durable(tmp_path).get([1, 2], create=False), torch.tensor([[1.0] * 4, [3.0] * 4]))


def test_a_failed_fsync_makes_the_store_refuse_writes_until_reopened(tmp_path, monkeypatch):
    store = durable(tmp_path)

    def broken_fsync(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(update_log.os, "fsync", broken_fsync)
    with pytest.raises(UpdateLogError, match="fsync failed"):
        store.update([1], np.ones((1, 4)))
    with pytest.raises(UpdateLogError, match="refuses writes until it is reopened"):
        store.update([2], np.ones((1, 4)))


@pytest.mark.parametrize("fsync", ["sometimes", "no"])
def test_unknown_fsync_policy_is_refused(tmp_path, fsync):
    with pytest.raises(ValueError, match="fsync must be one of .'always', 'everysec'."):
        durable(tmp_path, fsync=fsync)


def overflow_check(store) -> None:
    """A finite 3e38 gradient would make g² (and the accumulator) inf and freeze the row for good."""
    store.get([1, 2])
    before = store.get([1, 2])
    grads = np.array([[3e38, 0, 0, 0], [0.5, 0.5, 0.5, 0.5]], np.float32)
    assert store.apply_gradients([1, 2], grads, lr=0.1) == 1
    assert store.rows_rejected == 1
    after = store.get([1, 2])
    torch.testing.assert_close(after[0], before[0], rtol=0, atol=0)
    assert torch.isfinite(after).all() and not torch.equal(after[1], before[1])
    store.apply_gradients([1], np.full((1, 4), 0.5, np.float32), lr=0.1)
    assert not torch.equal(store.get([1])[0], before[0]), "the row must still learn after a rejected step"


def test_overflowing_gradient_is_rejected_and_counted_embedded():
    overflow_check(EmbeddedStore(4))


@needs_redis
def test_overflowing_gradient_is_rejected_and_counted_redis(tmp_path):
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        overflow_check(RedisStore(server.client(), 4, table="overflow"))
    finally:
        server.stop()


@pytest.mark.parametrize("text", [" 5", "5 ", "+5", "05", "5.0", "5_0", "-0", "٥", "", "9223372036854775808"])
def test_ids_written_as_text_must_be_exact(text):
    with pytest.raises(ValueError, match="id must"):
        parse_id(text)


@pytest.mark.parametrize("text, value", [("0", 0), ("5", 5), ("-17", -17), ("9223372036854775807", 2**63 - 1)])
def test_exact_ids_parse(text, value):
    assert parse_id(text) == value


@pytest.mark.parametrize("update_id", ["", "has space", "x" * 65, "brace{"])
def test_malformed_update_ids_are_refused(update_id):
    with pytest.raises(ValueError, match="update_id must be"):
        EmbeddedStore(4).apply_gradients([1], np.ones((1, 4)), lr=0.1, update_id=update_id)
