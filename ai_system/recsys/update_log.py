"""Durability for the embedded store: an append-only log of whole-row writes, plus snapshots.

Redis' persistence model, in files: every acknowledged write is appended to a log before the call
returns (AOF), and the log is folded into a snapshot now and then (RDB + AOF rewrite) so that a
restart reads one snapshot and a short tail. The fsync policies are Redis' ``appendfsync`` ones:

- ``always``: ``fsync`` before the call returns. An acknowledged write survives a process kill and
  an OS crash or power loss.
- ``everysec``: the record is written (to the page cache) before the call returns and a background
  thread ``fsync``\\ s once a second. A killed process loses nothing; an OS crash loses at most about
  the last second of acknowledged writes.

A record holds the *result* of a write (ids, Adagrad state, rows), not the gradient, so replay is
exact and replaying a record twice changes nothing. One record per store call, checksummed (CRC32),
so after a crash a call is on disk whole or not at all. A torn record at the end of the newest log
(the process died mid-``write``) is cut off on reopen, as Redis' ``aof-load-truncated`` does;
damage anywhere else raises. Files in the directory, by generation ``g``: ``snapshot-g.npz`` (the
state when log ``g`` began) and ``log-g.bin``; recovery loads the newest snapshot and replays the
logs from its generation on.
"""

from __future__ import annotations

import fcntl
import os
import struct
import threading
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ai_system.recsys.store import StoreUnavailableError

FSYNC_POLICIES = ("always", "everysec")
RECORD_MAGIC = b"EMBL"
RECORD_VERSION = 1
HEADER = struct.Struct("<4sBBHII")  # magic, version, op, dim, rows, crc32 of the payload
PUT, DELETE = 1, 2


class UpdateLogError(StoreUnavailableError):
    """The log cannot take a write (disk full, failed fsync): the call was not acknowledged."""


@dataclass(frozen=True)
class Record:
    """One replayed write: ``op`` is ``PUT`` (rows and state given) or ``DELETE`` (ids only)."""

    op: int
    ids: np.ndarray
    accum: np.ndarray | None = None
    rows: np.ndarray | None = None


def encode_record(op: int, dim: int, ids: np.ndarray, accum: np.ndarray | None = None,
                  rows: np.ndarray | None = None) -> bytes:
    parts = [ids.astype("<i8").tobytes()]
    if op == PUT:
        parts += [accum.astype("<f4").tobytes(), rows.astype("<f4").tobytes()]
    payload = b"".join(parts)
    return HEADER.pack(RECORD_MAGIC, RECORD_VERSION, op, dim, len(ids), zlib.crc32(payload)) + payload


def payload_bytes(op: int, dim: int, n: int) -> int:
    return n * 8 + (n * 4 * (1 + dim) if op == PUT else 0)


def decode_records(data: bytes, dim: int, name: str) -> tuple[list[Record], int]:
    """Records of one log file and the length of its intact prefix (shorter when the tail is torn).

    A bad record followed by nothing is a torn tail; a bad record with data after it is damage and
    raises, naming the file and offset.
    """
    records, offset, view = [], 0, memoryview(data)
    while offset < len(data):
        problem, end = None, len(data)
        if len(data) - offset < HEADER.size:
            problem = "a truncated record header"
        else:
            magic, version, op, record_dim, n, crc = HEADER.unpack_from(data, offset)
            if magic != RECORD_MAGIC or version != RECORD_VERSION or op not in (PUT, DELETE):
                problem = f"no record header (magic {magic!r}, version {version}, op {op})"
            elif record_dim != dim:
                raise ValueError(f"{name} holds rows of dim {record_dim} at byte {offset}, but the store has dim "
                                 f"{dim}: open it with dim={record_dim}")
            else:
                end = offset + HEADER.size + payload_bytes(op, dim, n)
                if end > len(data):
                    problem, end = "a record cut short", len(data)
                elif zlib.crc32(view[offset + HEADER.size:end]) != crc:
                    problem = "a record whose checksum does not match"
        if problem:
            if end < len(data):
                raise ValueError(f"{name} is damaged at byte {offset} of {len(data)}: {problem}, with more data "
                                 "after it; refusing to guess (restore the directory from a copy)")
            return records, offset
        payload = np.frombuffer(view[offset + HEADER.size:end], dtype=np.uint8)
        ids = payload[: n * 8].view("<i8").astype(np.int64)
        if op == PUT:
            accum = payload[n * 8: n * 12].view("<f4").astype(np.float32)
            rows = payload[n * 12:].view("<f4").reshape(n, dim).astype(np.float32)
            records.append(Record(PUT, ids, accum, rows))
        else:
            records.append(Record(DELETE, ids))
        offset = end
    return records, offset


class UpdateLog:
    """The append-only log and snapshots of one embedded store, in ``directory`` (one process at a time)."""

    def __init__(self, directory: Path | str, dim: int, fsync: str = "always",
                 compact_bytes: int = 256 << 20) -> None:
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {FSYNC_POLICIES} (Redis' appendfsync names), got {fsync!r}")
        if compact_bytes <= 0:
            raise ValueError(f"compact_bytes must be positive, got {compact_bytes}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.dim = dim
        self.fsync = fsync
        self.compact_bytes = compact_bytes
        self._guard = open(self.directory / "LOCK", "a")  # held, and flock-ed, for the log's lifetime
        try:
            fcntl.flock(self._guard, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._guard.close()
            raise RuntimeError(f"store directory {self.directory} is open in another process; one writer at a "
                               "time keeps the log in order") from None
        self._directory_fd = os.open(self.directory, os.O_RDONLY)  # fsync-ed so new and renamed names last
        self._lock = threading.Lock()
        self._fd = -1
        self.generation = 0
        self.written = 0
        self.synced = 0
        self.failed: str | None = None
        self._stop = threading.Event()
        self._syncer: threading.Thread | None = None

    def _path(self, kind: str, generation: int) -> Path:
        name = f"snapshot-{generation:08d}.npz" if kind == "snapshot" else f"log-{generation:08d}.bin"
        return self.directory / name

    def _generations(self, kind: str) -> list[int]:
        pattern = "snapshot-*.npz" if kind == "snapshot" else "log-*.bin"
        return sorted(int(path.stem.split("-")[1]) for path in self.directory.glob(pattern))

    def recover(self) -> Iterator[Record]:
        """Yield the newest snapshot (as one PUT) and every later log record, in order; then open the
        newest log for appending (its torn tail, if any, cut off)."""
        for leftover in self.directory.glob("*.tmp"):
            leftover.unlink()
        snapshots = self._generations("snapshot")
        start = snapshots[-1] if snapshots else 0
        if snapshots:
            with np.load(self._path("snapshot", start)) as snapshot:
                if int(snapshot["dim"]) != self.dim:
                    raise ValueError(f"{self._path('snapshot', start)} holds rows of dim {int(snapshot['dim'])}, but "
                                     f"the store has dim {self.dim}: open it with dim={int(snapshot['dim'])}")
                yield Record(PUT, snapshot["ids"], snapshot["accum"], snapshot["rows"])
        logs = [g for g in self._generations("log") if g >= start] or [start]
        for generation in logs:
            path = self._path("log", generation)
            data = path.read_bytes() if path.exists() else b""
            records, intact = decode_records(data, self.dim, str(path))
            if intact < len(data):
                if generation != logs[-1]:
                    raise ValueError(f"{path} ends in a torn record at byte {intact} but a newer log follows it; "
                                     "an older log is synced before rotation, so this is damage")
                warnings.warn(f"{path}: cut {len(data) - intact} bytes of a record torn by a crash at byte {intact} "
                              "(never acknowledged under fsync=always)", stacklevel=2)
                os.truncate(path, intact)
            yield from records
        self.generation = logs[-1]
        self._open(self.generation)
        self._remove_older_than(start)
        if self.fsync == "everysec" and self._syncer is None:
            self._syncer = threading.Thread(target=self._sync_every_second, name="update-log-fsync", daemon=True)
            self._syncer.start()

    def _open(self, generation: int) -> None:
        self._fd = os.open(self._path("log", generation), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.written = self.synced = os.fstat(self._fd).st_size
        os.fsync(self._directory_fd)

    def append(self, record: bytes) -> None:
        """Write one record (under the store's shard locks, so the log order is the memory order)."""
        with self._lock:
            self._check()
            try:
                view = memoryview(record)
                while view:
                    view = view[os.write(self._fd, view):]
            except OSError as error:
                reason = self._fail(f"writing the update log failed ({error})", cut_to=self.written)
                raise UpdateLogError(f"update log {self._path('log', self.generation)}: {reason}; the call was not "
                                     "acknowledged and changed nothing") from error
            self.written += len(record)

    def commit(self) -> None:
        """Under ``always``, return only once everything appended so far is on disk (group commit)."""
        if self.fsync == "always":
            self.sync()

    def sync(self) -> None:
        with self._lock:
            if self._fd < 0 or self.synced >= self.written:
                return
            target = self.written
            try:
                os.fsync(self._fd)
            except OSError as error:
                reason = self._fail(f"fsync failed ({error}); what reached the disk is unknown")
                raise UpdateLogError(f"update log {self._path('log', self.generation)}: {reason}; the call was not "
                                     "acknowledged, and the store refuses writes until it is reopened") from error
            self.synced = target

    def _sync_every_second(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self.sync()
            except UpdateLogError:
                return

    def _check(self) -> None:
        if self.failed:
            raise UpdateLogError(f"update log {self._path('log', self.generation)} failed earlier: {self.failed}; "
                                 "the store refuses writes until it is reopened")
        if self._fd < 0:
            raise UpdateLogError(f"update log in {self.directory} is not open (recover() first, or it was closed)")

    def _fail(self, reason: str, cut_to: int | None = None) -> str:
        """After a failed write, cut the partial record off so the log stays replayable; if even that fails,
        or an fsync failed, the log is unusable until reopened (PostgreSQL's answer to fsync errors)."""
        if cut_to is not None:
            try:
                os.ftruncate(self._fd, cut_to)
                return reason
            except OSError as error:
                reason += f"; cutting the partial record off failed too ({error})"
        self.failed = reason
        return reason

    def due_for_compaction(self) -> bool:
        return self.written >= self.compact_bytes

    def rotate(self) -> int:
        """Start the next log generation (called with every shard locked, right after the state is copied);
        the old log is synced first. Returns the new generation, whose snapshot ``write_snapshot`` writes."""
        with self._lock:
            self._check()
            try:
                os.fsync(self._fd)
            except OSError as error:
                reason = self._fail(f"fsync before rotating failed ({error})")
                raise UpdateLogError(f"update log {self._path('log', self.generation)}: {reason}") from error
            os.close(self._fd)
            self.generation += 1
            self._open(self.generation)
            return self.generation

    def write_snapshot(self, generation: int, ids: np.ndarray, accum: np.ndarray, rows: np.ndarray) -> None:
        """Write the snapshot that log ``generation`` starts from (atomically), then drop older files."""
        path = self._path("snapshot", generation)
        temporary = path.with_suffix(".tmp")
        with open(temporary, "wb") as file:
            np.savez(file, dim=np.int64(self.dim), ids=ids, accum=accum, rows=rows)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
        os.fsync(self._directory_fd)
        self._remove_older_than(generation)

    def _remove_older_than(self, generation: int) -> None:
        for kind in ("snapshot", "log"):
            for old in self._generations(kind):
                if old < generation:
                    self._path(kind, old).unlink(missing_ok=True)

    def close(self) -> None:
        self._stop.set()
        if self._syncer is not None:
            self._syncer.join()
            self._syncer = None
        with self._lock:
            if self._fd >= 0:
                if not self.failed:
                    os.fsync(self._fd)
                os.close(self._fd)
                self._fd = -1
        if not self._guard.closed:
            os.close(self._directory_fd)
            self._guard.close()
