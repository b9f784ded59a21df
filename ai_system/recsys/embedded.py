"""The embedded default store: N in-process shards, each a collisionless hash table of raw 64-bit ids.

Each shard maps ids to dense row numbers, so distinct ids never share a row (unlike ``id % rows``):
open addressing with linear probing over numpy arrays at load factor ≤ 1/4, vectorised so that every
probe round resolves the whole batch at once (short chains matter more than the 16 bytes per slot).
On fresh random batches this beat a compiled one-key-at-a-time table (pandas' khash) in development:
the vectorised gathers keep many cache misses in flight. Following Monolith, an optional
frequency filter admits an id only after it was seen ``min_count`` times (until then it reads as
the zero cold-start row and its gradients are dropped), and optional expiry drops rows not written
for ``ttl_s`` seconds."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np

from ai_system.recsys.store import EmbeddingStore, initial_rows, mix64, rowwise_adagrad, shard_of

EMPTY = -1
MAX_LOAD_INVERSE = 4


class IdTable:
    """Open-addressing map from int64 id to a dense index ``0..len-1``; ``ids[i]`` is the i-th key."""

    def __init__(self, capacity: int = 1024) -> None:
        self._reset(max(16, 1 << (capacity - 1).bit_length()))
        self.ids = np.empty(0, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.ids)

    def _reset(self, capacity: int) -> None:
        self._entries = np.zeros((capacity, 2), dtype=np.int64)
        self._entries[:, 1] = EMPTY
        self._mask = np.uint64(capacity - 1)
        self._shift = np.uint64(64 - (capacity.bit_length() - 1))

    def _start(self, ids: np.ndarray) -> np.ndarray:
        """Home slot from the hash's high bits: the low bits pick the shard, so they cluster here."""
        return (mix64(ids) >> self._shift).astype(np.int64)

    def lookup(self, ids: np.ndarray) -> np.ndarray:
        """Dense index of each id, or -1 where absent."""
        position = self._start(ids)
        entry = np.take(self._entries, position, axis=0)
        occupied = entry[:, 1] != EMPTY
        hit = occupied & (entry[:, 0] == ids)
        found = np.where(hit, entry[:, 1], EMPTY)
        active = np.flatnonzero(occupied & ~hit)
        mask = int(self._mask)
        while len(active):
            position[active] = (position[active] + 1) & mask
            entry = np.take(self._entries, position[active], axis=0)
            occupied = entry[:, 1] != EMPTY
            hit = occupied & (entry[:, 0] == ids[active])
            found[active[hit]] = entry[hit, 1]
            active = active[occupied & ~hit]
        return found

    def insert(self, ids: np.ndarray) -> np.ndarray:
        """Add distinct ids that are not present yet; returns their new dense indices."""
        if MAX_LOAD_INVERSE * (len(self.ids) + len(ids)) > len(self._entries):
            self._rehash(MAX_LOAD_INVERSE * (len(self.ids) + len(ids)))
        first = len(self.ids)
        self.ids = np.concatenate([self.ids, ids])
        self._place(ids, np.arange(first, first + len(ids), dtype=np.int64))
        return np.arange(first, first + len(ids), dtype=np.int64)

    def nbytes(self) -> int:
        return self._entries.nbytes + self.ids.nbytes

    def rebuild(self, keep: np.ndarray) -> None:
        """Keep only the ids at dense indices ``keep`` (renumbered in order)."""
        self.ids = self.ids[keep]
        self._rehash(MAX_LOAD_INVERSE * len(self.ids))

    def _rehash(self, minimum: int) -> None:
        self._reset(max(16, 1 << (max(minimum, 1) - 1).bit_length()))
        self._place(self.ids, np.arange(len(self.ids), dtype=np.int64))

    def _place(self, ids: np.ndarray, dense: np.ndarray) -> None:
        position = self._start(ids)
        active = np.arange(len(ids))
        mask = int(self._mask)
        while len(active):
            probe = position[active]
            free = self._entries[probe, 1] == EMPTY
            candidates, targets = active[free], probe[free]
            targets, first = np.unique(targets, return_index=True)
            winners = candidates[first]
            self._entries[targets, 0] = ids[winners]
            self._entries[targets, 1] = dense[winners]
            placed = np.zeros(len(ids), dtype=bool)
            placed[winners] = True
            active = active[~placed[active]]
            position[active] = (position[active] + 1) & mask


class Shard:
    """One shard's rows, optimizer state and write times, guarded by one lock."""

    def __init__(self, dim: int) -> None:
        self.lock = threading.Lock()
        self.table = IdTable()
        self.rows = np.zeros((16, dim), dtype=np.float32)
        self.accum = np.zeros(16, dtype=np.float32)
        self.written_at = np.zeros(16, dtype=np.float64)
        self.counts = IdTable()
        self.seen = np.zeros(16, dtype=np.int64)

    def grow(self, size: int) -> None:
        if size <= len(self.rows):
            return
        capacity = 1 << (size - 1).bit_length()
        for name in ("rows", "accum", "written_at"):
            old = getattr(self, name)
            new = np.zeros((capacity, *old.shape[1:]), dtype=old.dtype)
            new[: len(old)] = old
            setattr(self, name, new)

    def count(self, ids: np.ndarray) -> np.ndarray:
        """Bump and return how often each id was touched (frequency filter)."""
        unique, inverse, times = np.unique(ids, return_inverse=True, return_counts=True)
        index = self.counts.lookup(unique)
        missing = index == EMPTY
        if missing.any():
            index[missing] = self.counts.insert(unique[missing])
            if len(self.counts) > len(self.seen):
                self.seen = np.concatenate([self.seen, np.zeros(len(self.counts), dtype=np.int64)])
        self.seen[index] += times
        return self.seen[index][inverse]


class EmbeddedStore(EmbeddingStore):
    """The no-server default: ``n_shards`` in-process shards placed by hash slot."""

    def __init__(self, dim: int, n_shards: int = 4, init_scale: float = 0.05, min_count: int = 1,
                 ttl_s: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(dim, init_scale)
        if n_shards <= 0:
            raise ValueError(f"n_shards must be positive, got {n_shards}")
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1 (1 admits every id), got {min_count}")
        if ttl_s is not None and ttl_s <= 0:
            raise ValueError(f"ttl_s must be positive or None (never expire), got {ttl_s}")
        self.shards = [Shard(dim) for _ in range(n_shards)]
        self.min_count = min_count
        self.ttl_s = ttl_s
        self.clock = clock

    def __len__(self) -> int:
        return sum(len(shard.table) for shard in self.shards)

    def _split(self, ids: np.ndarray) -> list[tuple[Shard, np.ndarray]]:
        if len(self.shards) == 1:
            return [(self.shards[0], np.arange(len(ids)))]
        owner = shard_of(ids, len(self.shards))
        order = np.argsort(owner, kind="stable")
        bounds = np.concatenate([[0], np.cumsum(np.bincount(owner, minlength=len(self.shards)))])
        return [(shard, order[bounds[s]:bounds[s + 1]]) for s, shard in enumerate(self.shards)
                if bounds[s + 1] > bounds[s]]

    def _locate(self, shard: Shard, ids: np.ndarray, create: bool) -> np.ndarray:
        """Dense index per id (-1: absent or not admitted); with ``create`` admits and initialises."""
        index = shard.table.lookup(ids)
        missing = index == EMPTY
        if not (create and missing.any()):
            return index
        admitted = missing
        if self.min_count > 1:
            admitted = missing & (shard.count(ids) >= self.min_count)
        if admitted.any():
            new_ids, inverse = np.unique(ids[admitted], return_inverse=True)
            dense = shard.table.insert(new_ids)
            shard.grow(len(shard.table))
            shard.rows[dense] = initial_rows(new_ids, self.dim, self.init_scale)
            shard.accum[dense] = 0.0
            shard.written_at[dense] = self.clock()
            index[admitted] = dense[inverse]
        return index

    def _get(self, ids: np.ndarray, create: bool) -> np.ndarray:
        out: np.ndarray | None = None
        for shard, positions in self._split(ids):
            with shard.lock:
                index = self._locate(shard, ids[positions], create)
                absent = index == EMPTY
                part = np.take(shard.rows, np.where(absent, 0, index), axis=0)
            part[absent] = 0.0
            if len(positions) == len(ids):
                return part
            if out is None:
                out = np.empty((len(ids), self.dim), dtype=np.float32)
            out[positions] = part
        return out

    def _write(self, ids: np.ndarray, rows: np.ndarray, accum: np.ndarray) -> None:
        for shard, positions in self._split(ids):
            with shard.lock:
                index = shard.table.lookup(ids[positions])
                missing = index == EMPTY
                if missing.any():
                    index[missing] = shard.table.insert(ids[positions][missing])
                    shard.grow(len(shard.table))
                shard.rows[index] = rows[positions]
                shard.accum[index] = accum[positions]
                shard.written_at[index] = self.clock()
        self.rows_written += len(ids)

    def _apply(self, ids: np.ndarray, grads: np.ndarray, lr: float) -> int:
        written = 0
        for shard, positions in self._split(ids):
            with shard.lock:
                index = self._locate(shard, ids[positions], create=True)
                present = index != EMPTY
                index, step = index[present], grads[positions[present]]
                shard.rows[index], shard.accum[index] = rowwise_adagrad(
                    shard.rows[index], shard.accum[index], step, lr)
                shard.written_at[index] = self.clock()
                written += len(index)
        self.rows_written += written
        return written

    def nbytes(self) -> int:
        return sum(shard.rows.nbytes + shard.accum.nbytes + shard.written_at.nbytes + shard.table.nbytes()
                   + shard.counts.nbytes() + shard.seen.nbytes for shard in self.shards)

    def close(self) -> None:
        """Nothing to release: the shards live in this process."""

    def evict_expired(self) -> int:
        """Drop rows not written for ``ttl_s`` seconds (a later touch re-initialises them); returns how many."""
        if self.ttl_s is None:
            return 0
        evicted = 0
        now = self.clock()
        for shard in self.shards:
            with shard.lock:
                size = len(shard.table)
                keep = np.flatnonzero(shard.written_at[:size] > now - self.ttl_s)
                if len(keep) == size:
                    continue
                evicted += size - len(keep)
                shard.table.rebuild(keep)
                for name in ("rows", "accum", "written_at"):
                    values = getattr(shard, name)
                    values[: len(keep)] = values[keep]
        return evicted
