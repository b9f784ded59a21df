"""The embedded default store: N in-process shards over a collisionless hash table of raw 64-bit ids.

Each shard maps its ids to dense row numbers, so distinct ids never share a row (unlike ``id % rows``):
open addressing with linear probing over numpy arrays at load factor ≤ 1/4, vectorised so that every
probe round resolves the whole batch at once (short chains matter more than the 16 bytes per slot).
On fresh random batches this beat a compiled one-key-at-a-time table (pandas' khash) in development:
the vectorised gathers keep many cache misses in flight.

A batched read is one hash of the ids, one vectorised probe of the id table and **one** gather of
the rows, straight into the answer, as a plain numpy gather does. Shards are stripes of shared
arrays: shard ``s`` owns stripe ``s`` of the id table's slots and rows ``[s·capacity,
(s+1)·capacity)`` of the row array, so a batch that spans every shard needs no partition by shard
and no scatter of per-shard answers. Absent ids point at a row that is always zero. Each shard has
its lock: a read holds the locks of the shards it touches, a write (which may grow the stripes) holds
all of them, taken in shard order, so every row a read returns is whole.

Following Monolith, an optional frequency filter admits an id only after it was seen ``min_count``
times (until then it reads as the zero cold-start row and its gradients are dropped), and optional
expiry drops rows not written for ``ttl_s`` seconds. With ``path`` the store is durable: every
acknowledged write goes through an ``UpdateLog`` (see ``update_log.py``) and reopening the same
directory recovers it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from ai_system.recsys.store import HASH_SLOTS, EmbeddingStore, initial_rows, mix64, owner_of, rowwise_adagrad
from ai_system.recsys.update_log import DELETE, PUT, UpdateLog, encode_record

EMPTY = -1
MAX_LOAD_INVERSE = 4


class IdTable:
    """Open-addressing map from int64 id to a dense index, in ``stripes`` equal regions (one per shard).

    Stripe ``s`` holds the ids routed to shard ``s`` and numbers them ``0..len(ids[s])-1``. The
    stripes are slices of one entries array, so a batch that spans every shard is still probed in
    one vectorised pass, with no partition by shard first. ``hashes`` (``mix64(ids)``) and
    ``stripe`` (the owner shard), where given, spare recomputing what the caller already has.
    """

    def __init__(self, stripes: int = 1, capacity: int = 1024) -> None:
        self.stripes = stripes
        self.ids = [np.empty(0, dtype=np.int64) for _ in range(stripes)]
        self._reset(max(16, 1 << (capacity - 1).bit_length()))

    def __len__(self) -> int:
        return sum(len(ids) for ids in self.ids)

    def _reset(self, slots: int) -> None:
        self._slots = slots
        self._entries = np.zeros((self.stripes * slots, 2), dtype=np.int64)
        self._entries[:, 1] = EMPTY
        self._mask = slots - 1
        self._shift = np.uint64(64 - (slots.bit_length() - 1))

    def _home(self, ids: np.ndarray, hashes: np.ndarray | None, stripe: np.ndarray | None
              ) -> tuple[np.ndarray, np.ndarray | None]:
        """Slot within the stripe from the hash's high bits (the low bits chose the stripe), and the
        stripe's first slot (None with one stripe)."""
        hashes = mix64(ids) if hashes is None else hashes
        offset = (hashes >> self._shift).astype(np.int64)
        if self.stripes == 1:
            return offset, None
        if stripe is None:
            stripe = owner_of(hashes, self.stripes)
        return offset, stripe.astype(np.int64) * self._slots

    def lookup(self, ids: np.ndarray, hashes: np.ndarray | None = None, stripe: np.ndarray | None = None
               ) -> np.ndarray:
        """Dense index of each id within its stripe, or -1 where absent."""
        offset, base = self._home(ids, hashes, stripe)
        entry = np.take(self._entries, offset if base is None else base + offset, axis=0)
        occupied = entry[:, 1] != EMPTY
        hit = occupied & (entry[:, 0] == ids)
        found = np.where(hit, entry[:, 1], EMPTY)
        active = np.flatnonzero(occupied & ~hit)
        while len(active):
            offset[active] = (offset[active] + 1) & self._mask
            entry = np.take(self._entries, offset[active] if base is None else base[active] + offset[active], axis=0)
            occupied = entry[:, 1] != EMPTY
            hit = occupied & (entry[:, 0] == ids[active])
            found[active[hit]] = entry[hit, 1]
            active = active[occupied & ~hit]
        return found

    def insert(self, ids: np.ndarray, hashes: np.ndarray | None = None, stripe: np.ndarray | None = None
               ) -> np.ndarray:
        """Add distinct ids that are not present yet; returns their new dense indices."""
        hashes = mix64(ids) if hashes is None else hashes
        stripe = np.zeros(len(ids), np.uint16) if self.stripes == 1 else (
            owner_of(hashes, self.stripes) if stripe is None else stripe)
        order = np.argsort(stripe, kind="stable")
        counts = np.bincount(stripe, minlength=self.stripes)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        dense = np.empty(len(ids), dtype=np.int64)
        dense[order] = np.arange(len(ids)) - np.repeat(starts, counts)
        dense += np.array([len(part) for part in self.ids], dtype=np.int64)[stripe]
        for s in np.flatnonzero(counts).tolist():
            self.ids[s] = np.concatenate([self.ids[s], ids[order[starts[s]:starts[s] + counts[s]]]])
        largest = max(len(part) for part in self.ids)
        if MAX_LOAD_INVERSE * largest > self._slots:
            self._rehash(MAX_LOAD_INVERSE * largest)
        else:
            self._place(ids, dense, hashes, stripe)
        return dense

    def stripe_size(self, s: int) -> int:
        return len(self.ids[s])

    def nbytes(self) -> int:
        return self._entries.nbytes + sum(ids.nbytes for ids in self.ids)

    def rebuild(self, s: int, keep: np.ndarray) -> None:
        """Keep only stripe ``s``'s ids at dense indices ``keep`` (renumbered in order)."""
        self.ids[s] = self.ids[s][keep]
        self._entries[s * self._slots:(s + 1) * self._slots] = (0, EMPTY)
        kept = self.ids[s]
        self._place(kept, np.arange(len(kept), dtype=np.int64), None, np.full(len(kept), s, np.uint16))

    def _rehash(self, minimum: int) -> None:
        self._reset(max(16, 1 << (max(minimum, 1) - 1).bit_length()))
        for s, ids in enumerate(self.ids):
            self._place(ids, np.arange(len(ids), dtype=np.int64), None, np.full(len(ids), s, np.uint16))

    def _place(self, ids: np.ndarray, dense: np.ndarray, hashes: np.ndarray | None, stripe: np.ndarray) -> None:
        offset, base = self._home(ids, hashes, stripe)
        active = np.arange(len(ids))
        while len(active):
            probe = offset[active] if base is None else base[active] + offset[active]
            free = self._entries[probe, 1] == EMPTY
            candidates, targets = active[free], probe[free]
            targets, first = np.unique(targets, return_index=True)
            winners = candidates[first]
            self._entries[targets, 0] = ids[winners]
            self._entries[targets, 1] = dense[winners]
            placed = np.zeros(len(ids), dtype=bool)
            placed[winners] = True
            active = active[~placed[active]]
            offset[active] = (offset[active] + 1) & self._mask


class Routing:
    """A batch's hashes and owner shards, computed once for the table probe and the locks."""

    def __init__(self, ids: np.ndarray, n_shards: int) -> None:
        self.ids = ids
        self.hashes = mix64(ids)
        self.owner = np.zeros(len(ids), np.uint16) if n_shards == 1 else owner_of(self.hashes, n_shards)

    def shards(self, n_shards: int) -> list[int]:
        """The shards this batch touches (all of them for a batch large enough to: locking a spare
        shard is harmless, counting owners is not free)."""
        if n_shards == 1 or len(self.ids) >= 16 * n_shards:
            return list(range(n_shards))
        return np.flatnonzero(np.bincount(self.owner, minlength=n_shards)).tolist()


class EmbeddedStore(EmbeddingStore):
    """The no-server default: ``n_shards`` in-process shards placed by hash slot, durable with ``path``.

    ``path`` names a directory for the update log and snapshots (created if missing; an existing one
    is recovered: its rows are read back, first-touch rows come back on their next touch, since
    they are a pure function of the id). ``fsync`` is ``"always"`` or ``"everysec"`` (Redis'
    names and meanings). The frequency counts and expiry clocks are not persisted: a reopened store
    restarts them.
    """

    def __init__(self, dim: int, n_shards: int = 4, init_scale: float = 0.05, min_count: int = 1,
                 ttl_s: float | None = None, clock: Callable[[], float] = time.monotonic,
                 path: Path | str | None = None, fsync: str = "always", compact_bytes: int = 256 << 20) -> None:
        super().__init__(dim, init_scale)
        if not 1 <= n_shards <= HASH_SLOTS:
            raise ValueError(f"n_shards must be in [1, {HASH_SLOTS}] (each shard owns at least one slot), "
                             f"got {n_shards}")
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1 (1 admits every id), got {min_count}")
        if ttl_s is not None and ttl_s <= 0:
            raise ValueError(f"ttl_s must be positive or None (never expire), got {ttl_s}")
        self.n_shards = n_shards
        self.locks = [threading.Lock() for _ in range(n_shards)]
        self.table = IdTable(stripes=n_shards)
        self.min_count = min_count
        self.counts = IdTable()
        self.seen = np.zeros(16, dtype=np.int64)
        self.ttl_s = ttl_s
        self.clock = clock
        self._capacity = 0
        self.rows = np.zeros((1, dim), dtype=np.float32)
        self.accum = np.zeros(1, dtype=np.float32)
        self.written_at = np.zeros(1, dtype=np.float64)
        self._grow(16)
        self.log: UpdateLog | None = None
        if path is not None:
            log = UpdateLog(path, dim, fsync=fsync, compact_bytes=compact_bytes)
            for record in log.recover():
                if record.op == PUT:
                    self._assign(Routing(record.ids, n_shards), record.rows, record.accum)
                else:
                    self._delete(record.ids)
            self.log = log

    def __len__(self) -> int:
        return len(self.table)

    @property
    def zero_row(self) -> int:
        """Index of the row that stays zero: where absent ids read from."""
        return self.n_shards * self._capacity

    def _grow(self, capacity: int) -> None:
        """Give every shard a stripe of at least ``capacity`` rows (the caller holds every shard lock):
        rows, Adagrad state and write times move to arrays of the new stripe size."""
        capacity = 1 << (capacity - 1).bit_length()
        if capacity <= self._capacity:
            return
        total = self.n_shards * capacity + 1
        rows = np.zeros((total, self.dim), dtype=np.float32)
        accum = np.zeros(total, dtype=np.float32)
        written_at = np.zeros(total, dtype=np.float64)
        n = self._capacity
        for s in range(self.n_shards):
            old, new = s * n, s * capacity
            rows[new:new + n] = self.rows[old:old + n]
            accum[new:new + n] = self.accum[old:old + n]
            written_at[new:new + n] = self.written_at[old:old + n]
        self.rows, self.accum, self.written_at, self._capacity = rows, accum, written_at, capacity

    @contextlib.contextmanager
    def _locked(self, shards: Iterable[int]) -> Iterator[None]:
        """Hold the locks of ``shards``, taken in shard order (so two batches never deadlock)."""
        with contextlib.ExitStack() as stack:
            for s in sorted(shards):
                stack.enter_context(self.locks[s])
            yield

    def _count(self, ids: np.ndarray) -> np.ndarray:
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

    def _rows_of(self, route: Routing, create: bool) -> np.ndarray:
        """Row index (into ``self.rows``) of each id, inserting admitted new ids with ``create`` (then
        every shard must be locked: the stripes may grow); absent ids get ``zero_row``."""
        dense = self.table.lookup(route.ids, route.hashes, route.owner)
        missing = dense == EMPTY
        if create and missing.any():
            admitted = missing if self.min_count == 1 else missing & (self._count(route.ids) >= self.min_count)
            if admitted.any():
                new_ids, first, inverse = np.unique(route.ids[admitted], return_index=True, return_inverse=True)
                owner = route.owner[admitted][first]
                created = self.table.insert(new_ids, route.hashes[admitted][first], owner)
                self._grow(max(self.table.stripe_size(s) for s in range(self.n_shards)))
                rows = owner.astype(np.int64) * self._capacity + created
                self.rows[rows] = initial_rows(new_ids, self.dim, self.init_scale)
                self.accum[rows] = 0.0
                self.written_at[rows] = self.clock()
                dense[admitted] = created[inverse]
                missing = dense == EMPTY
        index = route.owner.astype(np.int64) * self._capacity + dense
        index[missing] = self.zero_row
        return index

    def _get(self, ids: np.ndarray, create: bool) -> np.ndarray:
        route = Routing(ids, self.n_shards)
        with self._locked(range(self.n_shards) if create else route.shards(self.n_shards)):
            index = self._rows_of(route, create)
            return np.take(self.rows, index, axis=0)

    def _write(self, ids: np.ndarray, rows: np.ndarray, accum: np.ndarray) -> None:
        route = Routing(ids, self.n_shards)
        with self._locked(range(self.n_shards)):
            self._log(PUT, ids, accum, rows)
            self._assign(route, rows, accum)
        self._commit()
        self.rows_written += len(ids)

    def _assign(self, route: Routing, rows: np.ndarray, accum: np.ndarray) -> None:
        """Store whole rows of distinct ids, inserting the new ones (with every shard locked)."""
        dense = self.table.lookup(route.ids, route.hashes, route.owner)
        missing = dense == EMPTY
        if missing.any():
            dense[missing] = self.table.insert(route.ids[missing], route.hashes[missing], route.owner[missing])
            self._grow(max(self.table.stripe_size(s) for s in range(self.n_shards)))
        target = route.owner.astype(np.int64) * self._capacity + dense
        self.rows[target], self.accum[target] = rows, accum
        self.written_at[target] = self.clock()

    def _apply(self, ids: np.ndarray, grads: np.ndarray, lr: float, update_id: str) -> int:
        """In-process, a call that raises changed nothing, so ``update_id`` has nothing to deduplicate."""
        route = Routing(ids, self.n_shards)
        with self._locked(range(self.n_shards)):
            index = self._rows_of(route, create=True)
            present = index != self.zero_row
            index = index[present]
            rows, accum, finite = rowwise_adagrad(self.rows[index], self.accum[index], grads[present], lr)
            index, rows, accum = index[finite], rows[finite], accum[finite]
            self._log(PUT, ids[present][finite], accum, rows)
            self.rows[index], self.accum[index] = rows, accum
            self.written_at[index] = self.clock()
        self._commit()
        self.rows_written += len(index)
        self.rows_rejected += int((~finite).sum())
        return len(index)

    def _delete(self, ids: np.ndarray) -> None:
        """Drop rows by id (replaying a logged eviction)."""
        route = Routing(ids, self.n_shards)
        dense = self.table.lookup(route.ids, route.hashes, route.owner)
        for s in route.shards(self.n_shards):
            keep = np.ones(self.table.stripe_size(s), dtype=bool)
            keep[dense[(route.owner == s) & (dense != EMPTY)]] = False
            self._compact_shard(s, np.flatnonzero(keep))

    def _compact_shard(self, s: int, keep: np.ndarray) -> None:
        base = s * self._capacity
        self.table.rebuild(s, keep)
        for values in (self.rows, self.accum, self.written_at):
            values[base:base + len(keep)] = values[base + keep]

    def _log(self, op: int, ids: np.ndarray, accum: np.ndarray | None = None, rows: np.ndarray | None = None) -> None:
        """Append the write to the update log, if durable (called with the written shards locked, before
        memory changes, so a failed append leaves the store as it was)."""
        if self.log is not None:
            self.log.append(encode_record(op, self.dim, ids, accum, rows))

    def _commit(self) -> None:
        """Make the call's record durable per the fsync policy, and fold the log into a snapshot when due."""
        if self.log is None:
            return
        self.log.commit()
        if self.log.due_for_compaction():
            self.snapshot()

    def snapshot(self) -> None:
        """Fold the update log into a snapshot (Redis' AOF rewrite): copy the rows with every shard locked,
        start a new log, then write the copy while writers go on."""
        if self.log is None:
            raise ValueError("snapshot() needs a durable store: open it with path=...")
        with self._locked(range(self.n_shards)):
            stripes = [slice(s * self._capacity, s * self._capacity + self.table.stripe_size(s))
                       for s in range(self.n_shards)]
            ids = np.concatenate(self.table.ids)
            rows = np.concatenate([self.rows[stripe] for stripe in stripes])
            accum = np.concatenate([self.accum[stripe] for stripe in stripes])
            generation = self.log.rotate()
        self.log.write_snapshot(generation, ids, accum, rows)

    def nbytes(self) -> int:
        return (self.rows.nbytes + self.accum.nbytes + self.written_at.nbytes + self.table.nbytes()
                + self.counts.nbytes() + self.seen.nbytes)

    def close(self) -> None:
        """Sync and close the update log, if any; the shards live in this process."""
        if self.log is not None:
            self.log.close()
            self.log = None

    def evict_expired(self) -> int:
        """Drop rows not written for ``ttl_s`` seconds (a later touch re-initialises them); returns how many."""
        if self.ttl_s is None:
            return 0
        evicted = 0
        with self._locked(range(self.n_shards)):
            now = self.clock()
            for s in range(self.n_shards):
                base, size = s * self._capacity, self.table.stripe_size(s)
                keep = np.flatnonzero(self.written_at[base:base + size] > now - self.ttl_s)
                if len(keep) == size:
                    continue
                gone = np.setdiff1d(np.arange(size), keep, assume_unique=True)
                self._log(DELETE, self.table.ids[s][gone])
                evicted += size - len(keep)
                self._compact_shard(s, keep)
        self._commit()
        return evicted
