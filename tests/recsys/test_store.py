"""The embedded store: collisionless hashing, first-touch init, Adagrad, filters, expiry, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ai_system.recsys.embedded import EmbeddedStore, IdTable
from ai_system.recsys.store import HASH_SLOTS, hash_slot, initial_rows, rowwise_adagrad, shard_of

INT64 = np.iinfo(np.int64)


def random_ids(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(INT64.min, INT64.max, n, dtype=np.int64)


@pytest.mark.parametrize("stripes", [1, 3])
def test_id_table_matches_a_dict_on_adversarial_ids(stripes):
    ids = np.unique(np.concatenate([random_ids(5000), [0, -1, 1, INT64.min, INT64.max],
                                    np.arange(0, 1 << 20, 1 << 10)]))
    table, reference = IdTable(stripes=stripes), {}
    for chunk in np.array_split(ids, 7):
        for key, index in zip(chunk.tolist(), table.insert(chunk).tolist(), strict=True):
            reference[key] = index
    probe = np.concatenate([ids, random_ids(2000, seed=1)])
    expected = np.array([reference.get(key, -1) for key in probe.tolist()])
    np.testing.assert_array_equal(table.lookup(probe), expected)
    owner = shard_of(ids, stripes)
    assert len(set(zip(owner.tolist(), table.lookup(ids).tolist(), strict=True))) == len(ids)
    for s in range(stripes):
        np.testing.assert_array_equal(np.sort(table.ids[s]), ids[owner == s])
    in_stripe = table.stripe_size(0)
    table.rebuild(0, np.arange(0, in_stripe, 2))
    kept, dropped = table.ids[0], np.setdiff1d(ids[owner == 0], table.ids[0])
    assert len(kept) == (in_stripe + 1) // 2 and len(dropped) == in_stripe // 2
    np.testing.assert_array_equal(table.lookup(kept), np.arange(len(kept)))
    assert (table.lookup(dropped) == -1).all()
    others = ids[owner != 0]
    np.testing.assert_array_equal(table.lookup(others), [reference[key] for key in others.tolist()])


def test_ids_that_collide_modulo_a_table_size_get_distinct_rows():
    store = EmbeddedStore(8, n_shards=2)
    ids = np.arange(5) * 1024
    rows = torch.arange(40, dtype=torch.float32).reshape(5, 8)
    store.update(ids, rows)
    torch.testing.assert_close(store.get(ids), rows)
    assert len(store) == 5


def test_first_touch_init_is_deterministic_and_shard_independent():
    ids = random_ids(1000)
    one, four = EmbeddedStore(16, n_shards=1), EmbeddedStore(16, n_shards=4)
    torch.testing.assert_close(one.get(ids), four.get(ids[::-1]).flip(0))
    torch.testing.assert_close(four.get(ids), torch.from_numpy(initial_rows(ids, 16, 0.05)))
    assert float(four.get(ids).abs().max()) <= 0.05


def test_slots_and_shards_follow_redis_cluster_ranges():
    ids = random_ids(20000)
    slots, owners = hash_slot(ids), shard_of(ids, 3)
    assert slots.min() >= 0 and slots.max() < HASH_SLOTS
    np.testing.assert_array_equal(owners, slots * 3 // HASH_SLOTS)
    assert np.bincount(owners).min() > 6000


def test_serving_reads_do_not_create_rows():
    store = EmbeddedStore(4)
    assert torch.equal(store.get([7, 8], create=False), torch.zeros(2, 4))
    assert len(store) == 0


def test_apply_gradients_is_rowwise_adagrad_with_duplicates_summed():
    store = EmbeddedStore(4, n_shards=3)
    ids = np.array([5, 9, 5, 11])
    before = store.get(np.array([5, 9, 11])).numpy()
    grads = np.arange(16, dtype=np.float32).reshape(4, 4) / 10
    written = store.apply_gradients(ids, grads, lr=0.5)
    summed = np.stack([grads[0] + grads[2], grads[1], grads[3]])
    expected, accum, _ = rowwise_adagrad(before, np.zeros(3, np.float32), summed, 0.5)
    np.testing.assert_allclose(store.get(np.array([5, 9, 11])).numpy(), expected, rtol=1e-6)
    assert written == 3 and store.rows_written == 3
    expected2, _, _ = rowwise_adagrad(expected, accum, summed, 0.5)
    store.apply_gradients(np.array([5, 9, 11]), summed, lr=0.5)
    np.testing.assert_allclose(store.get(np.array([5, 9, 11])).numpy(), expected2, rtol=1e-6)


def test_update_replaces_rows_and_resets_optimizer_state():
    store = EmbeddedStore(2)
    store.apply_gradients([1], np.ones((1, 2), np.float32), lr=1.0)
    store.update([1], np.array([[3.0, 4.0]]))
    torch.testing.assert_close(store.get([1]), torch.tensor([[3.0, 4.0]]))
    store.apply_gradients([1], np.ones((1, 2), np.float32), lr=1.0)
    torch.testing.assert_close(store.get([1]), torch.tensor([[2.0, 3.0]]), atol=1e-6, rtol=0)


def test_frequency_filter_admits_an_id_after_min_count_touches():
    store = EmbeddedStore(4, min_count=3)
    grads = np.ones((1, 4), np.float32)
    assert store.apply_gradients([42], grads, lr=0.1) == 0
    assert torch.equal(store.get([42]), torch.zeros(1, 4))
    assert len(store) == 0
    assert not store.get([42]).eq(0).all()
    assert len(store) == 1


def test_expiry_drops_rows_not_written_within_ttl():
    now = [0.0]
    store = EmbeddedStore(4, n_shards=2, ttl_s=10.0, clock=lambda: now[0])
    store.update([1, 2, 3], np.ones((3, 4)))
    now[0] = 6.0
    store.update([2], 2 * np.ones((1, 4)))
    now[0] = 12.0
    assert store.evict_expired() == 2
    torch.testing.assert_close(store.get([2, 1, 3], create=False),
                               torch.tensor([[2.0] * 4, [0.0] * 4, [0.0] * 4]))
    assert len(store) == 1


@pytest.mark.parametrize("bad, message", [
    (np.array([1.5, 2.0]), "64-bit integers"),
    (torch.tensor([1.0]), "integer tensor"),
    (np.array([[1, 2]]), "1-D batch"),
    (["a", "b"], "64-bit integers"),
    (np.array([2**63], dtype=np.uint64), "fit in int64"),
])
def test_malformed_ids_raise_clear_errors(bad, message):
    with pytest.raises(ValueError, match=message):
        EmbeddedStore(4).get(bad)


def test_bad_rows_and_arguments_raise_clear_errors():
    store = EmbeddedStore(4)
    with pytest.raises(ValueError, match=r"shape \(2, 4\)"):
        store.update([1, 2], np.ones((2, 3)))
    with pytest.raises(ValueError, match="finite"):
        store.update([1], np.array([[np.nan, 0, 0, 0]]))
    with pytest.raises(ValueError, match="unique"):
        store.update([1, 1], np.ones((2, 4)))
    with pytest.raises(ValueError, match="lr must be a positive finite number"):
        store.apply_gradients([1], np.ones((1, 4)), lr=0)
    with pytest.raises(ValueError, match="n_shards"):
        EmbeddedStore(4, n_shards=0)
