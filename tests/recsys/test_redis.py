"""The Redis backend on real servers: parity with the embedded store, schema checks, outages, AOF."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ai_system.recsys.embedded import EmbeddedStore
from ai_system.recsys.redis_store import RedisStore, decode_rows, encode_rows

INT64 = np.iinfo(np.int64)


def exercise(store, reference) -> None:
    """The same batch of reads, overwrites and gradient steps on both stores gives the same rows."""
    rng = np.random.default_rng(0)
    ids = rng.integers(INT64.min, INT64.max, 3000, dtype=np.int64)
    torch.testing.assert_close(store.get(ids), reference.get(ids))
    overwrite = ids[:100]
    rows = rng.normal(size=(100, store.dim)).astype(np.float32)
    store.update(overwrite, rows)
    reference.update(overwrite, rows)
    touched = np.concatenate([ids[50:400], ids[50:60], rng.integers(0, 1000, 50)])
    grads = rng.normal(size=(len(touched), store.dim)).astype(np.float32)
    for _ in range(2):
        assert store.apply_gradients(touched, grads, lr=0.1) == reference.apply_gradients(touched, grads, lr=0.1)
    everything = np.concatenate([ids, touched])
    torch.testing.assert_close(store.get(everything), reference.get(everything), atol=1e-6, rtol=1e-6)
    assert store.rows_written == reference.rows_written


def test_single_node_matches_embedded_store(redis_server):
    store = RedisStore(redis_server.client(), 8, table="parity", n_buckets=64)
    exercise(store, EmbeddedStore(8, n_shards=3))
    assert torch.equal(store.get([123456789], create=False), torch.zeros(1, 8))


def test_cluster_matches_embedded_store_and_spreads_rows(cluster_client):
    store = RedisStore(cluster_client, 8, table="parity")
    exercise(store, EmbeddedStore(8))
    per_master = [cluster_client.dbsize(target_nodes=node) for node in cluster_client.get_primaries()]
    assert len(per_master) == 3 and min(per_master) > 0.2 * sum(per_master)
    assert store.nbytes() > 0


def test_row_encoding_roundtrips_and_rejects_other_schemas():
    rows = np.arange(12, dtype=np.float32).reshape(3, 4)
    values = encode_rows(rows, np.array([1, 2, 3], np.float32))
    assert all(value[:4] == b"EMBR" and len(value) == 8 + 4 + 16 for value in values)
    decoded, accum = decode_rows(values, np.array([7, 8, 9]), 4)
    np.testing.assert_array_equal(decoded, rows)
    np.testing.assert_array_equal(accum, [1, 2, 3])
    with pytest.raises(ValueError, match="id 8 is 3 bytes"):
        decode_rows([values[0], b"abc", values[2]], np.array([7, 8, 9]), 4)
    with pytest.raises(ValueError, match="id 7 is 28 bytes, expected 32 .schema 1, dim 5"):
        decode_rows(values, np.array([7, 8, 9]), 5)
    newer = values[2][:4] + b"\x02" + values[2][5:]
    with pytest.raises(ValueError, match="id 9 has header b'EMBR' v2 dim 4, expected b'EMBR' v1 dim 4"):
        decode_rows([values[0], values[1], newer], np.array([7, 8, 9]), 4)


def test_foreign_value_under_a_row_key_is_a_clear_error(redis_server):
    store = RedisStore(redis_server.client(), 4, table="foreign")
    redis_server.client().set(store.keys(np.array([77]))[0], b"not a row")
    with pytest.raises(ValueError, match="id 77"):
        store.get([77])


def test_ttl_is_set_and_refreshed_on_write(redis_server):
    store = RedisStore(redis_server.client(), 4, table="ttl", ttl_s=30)
    store.get([5])
    key = store.keys(np.array([5]))[0]
    assert 0 < redis_server.client().pttl(key) <= 30000


def test_malformed_ids_and_rows_are_rejected_before_reaching_the_server(redis_server):
    store = RedisStore(redis_server.client(), 4, table="malformed")
    keys_before = redis_server.client().dbsize()
    with pytest.raises(ValueError, match="64-bit integers"):
        store.get(np.array([1.5]))
    with pytest.raises(ValueError, match=r"shape \(1, 4\)"):
        store.update([3], np.ones((1, 5)))
    with pytest.raises(ValueError, match="n_buckets"):
        RedisStore(redis_server.client(), 4, n_buckets=0)
    assert redis_server.client().dbsize() == keys_before
