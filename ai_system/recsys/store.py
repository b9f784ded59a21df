"""The embedding-store interface every backend implements, and the pieces they share.

A store maps raw 64-bit ids to float32 rows plus one float of optimizer state per row (row-wise
Adagrad, FBGEMM/TorchRec's default for large tables: one accumulator per row instead of one per
element). Rows are placed by hash slot as Redis Cluster places keys: ``slot = hash(id) % 16384``,
and each shard owns a contiguous slot range. Unknown ids are initialised on first touch from a hash
of the id, so every backend (and every rank) creates the same row for the same id without talking.
"""

from __future__ import annotations

import math
import re
import uuid
from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np
import torch

HASH_SLOTS = 16384
ADAGRAD_EPS = 1e-8
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
CANONICAL_ID = re.compile(r"0|-?[1-9][0-9]*", re.ASCII)
UPDATE_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}", re.ASCII)

IdsLike = torch.Tensor | np.ndarray | Sequence[int]


class StoreUnavailableError(RuntimeError):
    """The store cannot take the call now (server unreachable or hung, update log unwritable); the call
    was not acknowledged, and each row it touched is whole, old or new.

    It may still land when the server resumes. ``update_id`` names the gradient update it carried, if
    any: calling ``apply_gradients`` again with that id applies the update at most once.
    """

    def __init__(self, message: str, update_id: str | None = None) -> None:
        super().__init__(message)
        self.update_id = update_id


def as_ids(ids: IdsLike) -> np.ndarray:
    """Validate a batch of ids and return it as a contiguous int64 array."""
    if isinstance(ids, torch.Tensor):
        if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
            raise ValueError(f"ids must be an integer tensor, got dtype {ids.dtype}")
        array = ids.detach().cpu().numpy()
    else:
        array = np.asarray(ids)
        if array.dtype == object or not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"ids must be 64-bit integers, got {array.dtype} values like {array.ravel()[:3]!r}")
    if array.ndim != 1:
        raise ValueError(f"ids must be a 1-D batch, got shape {tuple(array.shape)}")
    if array.dtype == np.uint64 and array.size and array.max() > np.iinfo(np.int64).max:
        raise ValueError(f"ids must fit in int64, got {array.max()}")
    return np.ascontiguousarray(array, dtype=np.int64)


def parse_id(text: str) -> int:
    """An id written as text (a URL path, a CLI argument), accepted only in its exact decimal form.

    ``int()`` and pydantic forgive ``" 5"``, ``"+5"``, ``"05"``, ``"5.0"`` and ``"5_0"``; two spellings of
    one id would be two cache keys upstream and one row here, so only ``0|-?[1-9][0-9]*`` within
    int64 is an id.
    """
    if not CANONICAL_ID.fullmatch(text):
        raise ValueError(f"id must be a 64-bit integer in plain decimal (digits, an optional leading '-', no "
                         f"spaces, '+', leading zeros or decimals), got {text!r}")
    value = int(text)
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValueError(f"id must fit in int64 [{INT64_MIN}, {INT64_MAX}], got {text}")
    return value


def as_rows(rows: torch.Tensor | np.ndarray, n: int, dim: int, what: str = "rows") -> np.ndarray:
    """Validate an (n, dim) block of finite values and return it as float32."""
    array = rows.detach().cpu().numpy() if isinstance(rows, torch.Tensor) else np.asarray(rows)
    if array.shape != (n, dim):
        raise ValueError(f"{what} must have shape ({n}, {dim}) to match the ids and the table, got {array.shape}")
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        raise ValueError(f"{what} must be finite, got NaN or inf")
    return array


def mix64(ids: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a cheap, well-spread 64-bit hash of each id."""
    x = ids.astype(np.uint64, copy=True)
    x += np.uint64(0x9E3779B97F4A7C15)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def hash_slot(ids: np.ndarray) -> np.ndarray:
    return (mix64(ids) % np.uint64(HASH_SLOTS)).astype(np.int64)


def shard_of(ids: np.ndarray, n_shards: int) -> np.ndarray:
    """Owner of each id: shard ``s`` holds slots ``[s·16384/n, (s+1)·16384/n)``, as Redis Cluster splits them.

    Returned as uint16 (a shard owns at least one slot), which numpy's stable sort radix-sorts fast.
    """
    if not 1 <= n_shards <= HASH_SLOTS:
        raise ValueError(f"n_shards must be in [1, {HASH_SLOTS}] (each shard owns at least one slot), got {n_shards}")
    return owner_of(mix64(ids), n_shards)


def owner_of(hashes: np.ndarray, n_shards: int) -> np.ndarray:
    """``shard_of`` from ids already hashed with ``mix64``."""
    return ((hashes % np.uint64(HASH_SLOTS)).astype(np.int64) * n_shards // HASH_SLOTS).astype(np.uint16)


def initial_rows(ids: np.ndarray, dim: int, scale: float) -> np.ndarray:
    """First-touch rows: uniform in [-scale, scale], a pure function of (id, column)."""
    columns = np.arange(dim, dtype=np.uint64) * np.uint64(0xD1B54A32D192ED03)
    bits = mix64((mix64(ids)[:, None] ^ columns[None, :]).ravel()).reshape(len(ids), dim)
    unit = (bits >> np.uint64(40)).astype(np.float32) * np.float32(1.0 / (1 << 24))
    return (unit * 2.0 - 1.0) * np.float32(scale)


def rowwise_adagrad(rows: np.ndarray, accum: np.ndarray, grads: np.ndarray, lr: float
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One row-wise Adagrad step: ``G += mean(g²)``, ``w -= lr·g/(√G + ε)``.

    Returns new rows, new state and which rows stayed finite. A finite gradient can still overflow
    float32 (``g = 3e38`` makes ``g²`` inf, and an inf accumulator freezes the row for good), so a row
    whose new value or state is not finite keeps its old value and state; the caller counts it.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        new_accum = accum + (grads * grads).mean(axis=1)
        step = (lr / (np.sqrt(new_accum) + ADAGRAD_EPS)).astype(np.float32)
        new_rows = rows - step[:, None] * grads
    finite = np.isfinite(new_accum) & np.isfinite(new_rows).all(axis=1)
    if not finite.all():
        new_rows[~finite], new_accum[~finite] = rows[~finite], accum[~finite]
    return new_rows, new_accum.astype(np.float32), finite


def sum_duplicates(ids: np.ndarray, grads: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Collapse repeated ids into one gradient each, as one optimizer step per row requires."""
    unique, inverse = np.unique(ids, return_inverse=True)
    if len(unique) == len(ids):
        return ids, grads
    summed = np.zeros((len(unique), grads.shape[1]), dtype=np.float32)
    np.add.at(summed, inverse, grads)
    return unique, summed


class EmbeddingStore(ABC):
    """Batched rows by raw 64-bit id: ``get``, ``update`` and optimizer-aware ``apply_gradients``."""

    def __init__(self, dim: int, init_scale: float) -> None:
        if dim <= 0 or dim > 65535:
            raise ValueError(f"dim must be in [1, 65535], got {dim}")
        if init_scale < 0:
            raise ValueError(f"init_scale must be non-negative, got {init_scale}")
        self.dim = dim
        self.init_scale = init_scale
        self.rows_written = 0
        self.rows_rejected = 0

    def get(self, ids: IdsLike, create: bool = True) -> torch.Tensor:
        """Rows for ``ids`` as an (n, dim) float32 tensor.

        ``create=True`` (training) initialises unknown ids and stores them; ``create=False``
        (serving) returns the cold-start default, a zero row, and stores nothing.
        """
        array = as_ids(ids)
        if not len(array):
            return torch.zeros(0, self.dim)
        return torch.from_numpy(self._get(array, create))

    def update(self, ids: IdsLike, rows: torch.Tensor | np.ndarray) -> None:
        """Replace whole rows (resetting their optimizer state); each row changes atomically."""
        array = as_ids(ids)
        values = as_rows(rows, len(array), self.dim)
        if len(np.unique(array)) != len(array):
            raise ValueError("update ids must be unique: two values for one row in one batch are ambiguous")
        if len(array):
            self._write(array, values, np.zeros(len(array), dtype=np.float32))

    def apply_gradients(self, ids: IdsLike, grads: torch.Tensor | np.ndarray, lr: float,
                        update_id: str | None = None) -> int:
        """Row-wise Adagrad on the rows of ``ids``; duplicates are summed first. Returns rows updated.

        A row whose step would leave it or its optimizer state non-finite is left as it was and
        counted in ``rows_rejected``. ``update_id`` makes a retry safe where a call can fail after
        reaching the server (Redis): an update with an id the store has already applied is skipped.
        Without one, each call gets a fresh id, which a ``StoreUnavailableError`` carries.
        """
        if not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr must be a positive finite number, got {lr}")
        if update_id is not None and not UPDATE_ID.fullmatch(update_id):
            raise ValueError(f"update_id must be 1-64 characters of [A-Za-z0-9_.-], got {update_id!r}")
        array = as_ids(ids)
        values = as_rows(grads, len(array), self.dim, what="grads")
        if not len(array):
            return 0
        unique, summed = sum_duplicates(array, values)
        return self._apply(unique, summed, lr, update_id=update_id or uuid.uuid4().hex)

    @abstractmethod
    def nbytes(self) -> int:
        """Memory the backend holds now (for Redis: the servers' ``used_memory``), for sizing."""

    @abstractmethod
    def close(self) -> None:
        """Release connections."""

    @abstractmethod
    def _get(self, ids: np.ndarray, create: bool) -> np.ndarray: ...

    @abstractmethod
    def _write(self, ids: np.ndarray, rows: np.ndarray, accum: np.ndarray) -> None: ...

    @abstractmethod
    def _apply(self, ids: np.ndarray, grads: np.ndarray, lr: float, update_id: str) -> int: ...
