"""What every index shares: its dimension and metric, external ids, and the checks on what comes in.

An index maps int64 ids to vectors. ``add`` takes vectors (a tensor, an array or nested lists) and
optional ids (default: the next free ones), ``remove`` takes ids, ``search`` answers the ``k``
nearest ids per query with their scores (see ``metric``). Every argument is checked before any
work: a wrong dimension, a NaN or infinite value, ``k`` outside ``[1, len(index)]``, an empty
index or a duplicate id raise ``ValueError`` naming the value and what was expected.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch

from ai_system.search.metric import check_metric


class Hits(NamedTuple):
    """Search results, one row per query, best first: scores (float32) and ids (int64, -1 where none)."""

    scores: torch.Tensor
    ids: torch.Tensor


def as_vectors(name: str, data: Any, dim: int) -> torch.Tensor:
    """``data`` as a float32 CPU tensor (rows, dim); one vector may come as a 1-D row."""
    try:
        vectors = torch.as_tensor(np.asarray(data, dtype=np.float32) if not isinstance(data, torch.Tensor) else data)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be numbers shaped (rows, {dim}): {error}") from error
    if not (vectors.dtype.is_floating_point or vectors.dtype in (torch.int32, torch.int64)):
        raise ValueError(f"{name} must hold numbers, got dtype {vectors.dtype}")
    if vectors.dim() == 1:
        vectors = vectors.unsqueeze(0)
    if vectors.dim() != 2 or vectors.shape[1] != dim:
        raise ValueError(f"{name} must have shape (rows, {dim}) for this {dim}-dimensional index, "
                         f"got {tuple(vectors.shape)}")
    if vectors.shape[0] == 0:
        raise ValueError(f"{name} is empty: give at least one vector of dimension {dim}")
    finite = torch.isfinite(vectors).all(dim=1)
    if not bool(finite.all()):
        bad = int((~finite).nonzero()[0, 0])
        raise ValueError(f"{name} row {bad} holds NaN or infinite values; every value must be finite")
    return vectors.detach().to("cpu", torch.float32)


def as_ids(ids: Any, count: int) -> torch.Tensor:
    """``ids`` as a 1-D int64 tensor of ``count`` distinct values."""
    try:
        array = np.asarray(ids)
    except (TypeError, ValueError) as error:
        raise ValueError(f"ids must be integers: {error}") from error
    if array.dtype.kind not in "iu" and not (array.size == 0 and array.dtype.kind == "f"):
        raise ValueError(f"ids must be integers, got dtype {array.dtype}")
    tensor = torch.as_tensor(array.astype(np.int64)).reshape(-1)
    if tensor.numel() != count:
        raise ValueError(f"got {tensor.numel()} ids for {count} vectors; give one id per vector")
    if tensor.unique().numel() != count:
        raise ValueError("ids must be distinct; the same id appears more than once")
    if bool((tensor < 0).any()):
        raise ValueError(f"ids must be >= 0 (-1 marks a missing hit), got {int(tensor.min())}")
    return tensor


def check_k(k: Any, size: int) -> int:
    if size == 0:
        raise ValueError("the index is empty: add vectors before searching")
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= size:
        raise ValueError(f"k must be an integer in [1, {size}] (the number of indexed vectors), got {k!r}")
    return int(k)


class VectorIndex(ABC):
    """Base of the indexes: ids, metric, and the checked entry points around each index's own ``_add``/``_search``."""

    kind: ClassVar[str]

    def __init__(self, dim: int, metric: str = "ip") -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        self.dim = dim
        self.metric = check_metric(metric)
        self.next_id = 0

    @abstractmethod
    def __len__(self) -> int:
        ...

    @abstractmethod
    def all_ids(self) -> torch.Tensor:
        """The ids of every indexed vector (int64, in storage order)."""
        ...

    def add(self, vectors: Any, ids: Any = None) -> torch.Tensor:
        """Index ``vectors``; returns their ids (given, or the next free ones)."""
        vectors = as_vectors("vectors", vectors, self.dim)
        if ids is None:
            ids = torch.arange(self.next_id, self.next_id + vectors.shape[0])
        else:
            ids = as_ids(ids, vectors.shape[0])
        taken = torch.isin(ids, self.all_ids())
        if bool(taken.any()):
            raise ValueError(f"id {int(ids[taken][0])} is already in the index; remove it first to replace it")
        self._add(vectors, ids)
        self.next_id = max(self.next_id, int(ids.max()) + 1)
        return ids

    def remove(self, ids: Any) -> int:
        """Drop the vectors with these ids; returns how many were present."""
        array = np.asarray(ids).reshape(-1)
        return self._remove(as_ids(array, array.size)) if array.size else 0

    def search(self, queries: Any, k: int) -> Hits:
        """The ``k`` nearest ids to each query and their scores (see ``ai_system.search.metric``)."""
        queries = as_vectors("queries", queries, self.dim)
        return self._search(queries, check_k(k, len(self)))

    @property
    @abstractmethod
    def nbytes(self) -> int:
        """Bytes the index holds for its vectors and ids (training state such as centroids excluded)."""
        ...

    @abstractmethod
    def _add(self, vectors: torch.Tensor, ids: torch.Tensor) -> None:
        ...

    @abstractmethod
    def _remove(self, ids: torch.Tensor) -> int:
        ...

    @abstractmethod
    def _search(self, queries: torch.Tensor, k: int) -> Hits:
        ...

    @abstractmethod
    def state(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """Config (JSON-able) and tensors that ``from_state`` rebuilds the index from: what ``persist`` saves."""
        ...

    @classmethod
    @abstractmethod
    def from_state(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> VectorIndex:
        ...
