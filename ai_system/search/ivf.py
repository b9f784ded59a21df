"""Inverted-file indexes: k-means cells, each with a list of its vectors; a query scans ``nprobe`` lists.

Training clusters the vectors into ``nlist`` centroids (``kmeans``, with the index's metric). Each
vector is stored in the list of its nearest centroid; a query scores the centroids, takes the
``nprobe`` best and scans only their lists, so it reads about ``nprobe / nlist`` of the data. Recall
rises with ``nprobe`` and speed falls: the benchmarks sweep it.

The scan is batched list by list, not query by query: the (query, list) pairs of a batch are sorted
by list, and each probed list is scored against all the queries that probe it with one matrix
product (``scan.topk_scan``) or one table lookup (product quantization). Each pair keeps its best
``k``; one ``topk`` over the ``nprobe * k`` candidates per query gives the answer.

Two storages: ``IVFFlatIndex`` keeps full float32 vectors (FAISS ``IndexIVFFlat``); ``IVFPQIndex``
keeps each vector's residual from its centroid as ``pq_m`` bytes (FAISS ``IndexIVFPQ``). Scores
reach each list through the metric's dot form: ``q·x = q·c + q·r`` for a vector ``x = c + r`` in
the list of centroid ``c``, and squared L2 adds the stored ``-|x̂|²/2`` of the decoded vector.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any

import torch

from ai_system.search.index import Hits, VectorIndex
from ai_system.search.kmeans import assign, kmeans
from ai_system.search.metric import dot_dim, keys_in_dot_form, queries_in_dot_form, reported_scores
from ai_system.search.pq import ProductQuantizer
from ai_system.search.scan import topk_scan

DEFAULT_NPROBE = 8


@dataclass
class ProbedQueries:
    """What a batch of queries brings to every list it probes."""

    raw: torch.Tensor
    """(queries, dim), normalized for cosine."""
    dot: torch.Tensor
    """(queries, dot_dim): the metric's dot form."""
    coarse: torch.Tensor
    """(queries * nprobe,): ``q · c`` of each probed centroid, one per (query, probe) slot."""
    extra: torch.Tensor | None = None
    """Storage-specific per-query state (product quantization: lookup tables)."""


class IVFIndex(VectorIndex):
    """The lists, the coarse quantizer and the list-batched search; subclasses say what a list stores."""

    columns: tuple[str, ...] = ()

    def __init__(self, dim: int, nlist: int, metric: str = "ip", nprobe: int | None = None,
                 device: str | torch.device = "cpu", seed: int = 0, train_iterations: int = 20) -> None:
        super().__init__(dim, metric)
        if isinstance(nlist, bool) or not isinstance(nlist, int) or nlist < 1:
            raise ValueError(f"nlist must be a positive integer, got {nlist!r}")
        self.nlist = nlist
        self.device = torch.device(device)
        self.seed, self.train_iterations = seed, train_iterations
        self.centroids = torch.empty(0, dim, device=self.device)
        self.lists: list[dict[str, torch.Tensor]] = [self._empty_list() for _ in range(nlist)]
        self.count = 0
        self.nprobe = self.check_nprobe(min(DEFAULT_NPROBE, nlist) if nprobe is None else nprobe)

    def check_nprobe(self, nprobe: Any) -> int:
        if isinstance(nprobe, bool) or not isinstance(nprobe, int) or not 1 <= nprobe <= self.nlist:
            raise ValueError(f"nprobe must be an integer in [1, nlist = {self.nlist}], got {nprobe!r}")
        return nprobe

    def _empty_list(self) -> dict[str, torch.Tensor]:
        return {"ids": torch.empty(0, dtype=torch.int64)}

    def __len__(self) -> int:
        return self.count

    @property
    def trained(self) -> bool:
        return self.centroids.shape[0] == self.nlist

    def all_ids(self) -> torch.Tensor:
        return torch.cat([cell["ids"] for cell in self.lists])

    @property
    def nbytes(self) -> int:
        return sum(tensor.nbytes for cell in self.lists for tensor in cell.values())

    def list_sizes(self) -> torch.Tensor:
        return torch.tensor([cell["ids"].numel() for cell in self.lists])

    def _normalized(self, vectors: torch.Tensor) -> torch.Tensor:
        vectors = vectors.to(self.device)
        return torch.nn.functional.normalize(vectors, dim=1) if self.metric == "cosine" else vectors

    def train(self, vectors: Any) -> None:
        """Learn the ``nlist`` centroids (and the storage's codec) from these vectors."""
        from ai_system.search.index import as_vectors

        vectors = self._normalized(as_vectors("training vectors", vectors, self.dim))
        if vectors.shape[0] < self.nlist:
            raise ValueError(f"training needs at least nlist = {self.nlist} vectors, got {vectors.shape[0]}")
        self.centroids = kmeans(vectors, self.nlist, self.metric, self.train_iterations, self.seed)
        self._train_codec(vectors, assign(vectors, self.centroids, self.metric))

    def _train_codec(self, vectors: torch.Tensor, labels: torch.Tensor) -> None:
        """Anything the storage learns beyond the centroids (nothing for full vectors)."""

    @abstractmethod
    def _encode(self, vectors: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        ...

    def _add(self, vectors: torch.Tensor, ids: torch.Tensor) -> None:
        if not self.trained:
            raise ValueError(f"the {self.kind} index is not trained: call train(vectors) before add")
        vectors = self._normalized(vectors)
        labels = assign(vectors, self.centroids, self.metric)
        rows = {"ids": ids.to(self.device), **self._encode(vectors, labels)}
        order = torch.argsort(labels, stable=True)
        cells, counts = torch.unique_consecutive(labels[order], return_counts=True)
        start = 0
        for cell, count in zip(cells.tolist(), counts.tolist(), strict=True):
            picked = order[start:start + count]
            start += count
            self.lists[cell] = {name: torch.cat([self.lists[cell][name], rows[name][picked].to(
                self.lists[cell][name].device)]) for name in self.lists[cell]}
        self.count += ids.numel()

    def _remove(self, ids: torch.Tensor) -> int:
        removed = 0
        for number, cell in enumerate(self.lists):
            keep = ~torch.isin(cell["ids"], ids)
            if not bool(keep.all()):
                removed += int((~keep).sum())
                self.lists[number] = {name: tensor[keep.to(tensor.device)] for name, tensor in cell.items()}
        self.count -= removed
        return removed

    def search(self, queries: Any, k: int, nprobe: int | None = None) -> Hits:
        """The ``k`` nearest ids per query among the ``nprobe`` (default ``self.nprobe``) nearest lists."""
        previous = self.nprobe
        self.nprobe = previous if nprobe is None else self.check_nprobe(nprobe)
        try:
            return super().search(queries, k)
        finally:
            self.nprobe = previous

    def _prepare(self, probed: ProbedQueries) -> None:
        """Per-query state the storage needs before scanning lists (e.g. PQ lookup tables)."""

    @abstractmethod
    def _list_topk(self, cell: int, slots: torch.Tensor, rows: torch.Tensor, probed: ProbedQueries, k: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        ...

    def _search(self, queries: torch.Tensor, k: int) -> Hits:
        raw = self._normalized(queries)
        dot = queries_in_dot_form(raw, self.metric)
        centroid_keys = keys_in_dot_form(self.centroids, self.metric)
        coarse, probes = topk_scan(dot, centroid_keys, self.nprobe)
        if self.metric == "l2":
            coarse = coarse + 0.5 * self.centroids.pow(2).sum(1)[probes]
        probed = ProbedQueries(raw, dot, coarse.reshape(-1))
        self._prepare(probed)
        n_queries = queries.shape[0]
        best = torch.full((n_queries * self.nprobe, k), -float("inf"), device=self.device)
        best_ids = torch.full((n_queries * self.nprobe, k), -1, dtype=torch.int64)
        flat_probes = probes.reshape(-1)
        order = torch.argsort(flat_probes, stable=True)
        order_rows = order // self.nprobe
        cells, counts = torch.unique_consecutive(flat_probes[order], return_counts=True)
        start = 0
        for cell, count in zip(cells.tolist(), counts.tolist(), strict=True):
            slots, rows = order[start:start + count], order_rows[start:start + count]
            start += count
            size = self.lists[cell]["ids"].numel()
            if size == 0:
                continue
            scores, local = self._list_topk(cell, slots, rows, probed, min(k, size))
            best[slots, :scores.shape[1]] = scores.float()
            best_ids[slots.cpu(), :scores.shape[1]] = self.lists[cell]["ids"][local.cpu()]
        top, position = best.view(n_queries, -1).topk(k, dim=1)
        ids = best_ids.view(n_queries, -1).gather(1, position.cpu())
        return Hits(reported_scores(top, raw, self.metric).cpu(), ids)

    def state(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        config = {"dim": self.dim, "metric": self.metric, "nlist": self.nlist, "nprobe": self.nprobe,
                  "seed": self.seed, "train_iterations": self.train_iterations, "next_id": self.next_id}
        tensors = {"centroids": self.centroids.cpu(), "list_sizes": self.list_sizes()}
        for name in self.lists[0]:
            tensors[f"lists.{name}"] = torch.cat([cell[name].cpu() for cell in self.lists])
        return config, tensors

    def _restore(self, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        self.next_id = config["next_id"]
        self.centroids = tensors["centroids"].to(self.device)
        sizes = tensors["list_sizes"].tolist()
        if len(sizes) != self.nlist:
            raise ValueError(f"the saved index has {len(sizes)} lists but nlist = {self.nlist}")
        columns = {name: tensors[f"lists.{name}"].split(sizes) for name in self.lists[0]}
        self.lists = [{name: parts[cell].to(self.device if name != "ids" else "cpu") for name, parts in
                       columns.items()} for cell in range(self.nlist)]
        self.count = sum(sizes)


class IVFFlatIndex(IVFIndex):
    """Full vectors in the lists (in the metric's dot form)."""

    kind = "ivf_flat"

    def _empty_list(self) -> dict[str, torch.Tensor]:
        return {**super()._empty_list(),
                "keys": torch.empty(0, dot_dim(self.dim, self.metric), device=self.device)}

    def _encode(self, vectors: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"keys": keys_in_dot_form(vectors, self.metric)}

    def _list_topk(self, cell: int, slots: torch.Tensor, rows: torch.Tensor, probed: ProbedQueries, k: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        return topk_scan(probed.dot[rows], self.lists[cell]["keys"], k)

    @classmethod
    def from_state(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor],
                   device: str | torch.device = "cpu") -> IVFFlatIndex:
        index = cls(config["dim"], config["nlist"], config["metric"], config["nprobe"], device, config["seed"],
                    config["train_iterations"])
        index._restore(config, tensors)
        return index


class IVFPQIndex(IVFIndex):
    """Residuals from the list's centroid, product-quantized to ``pq_m`` bytes per vector."""

    kind = "ivf_pq"

    def __init__(self, dim: int, nlist: int, pq_m: int, metric: str = "ip", nprobe: int | None = None,
                 device: str | torch.device = "cpu", seed: int = 0, train_iterations: int = 20) -> None:
        self.quantizer = ProductQuantizer(dim, pq_m)
        super().__init__(dim, nlist, metric, nprobe, device, seed, train_iterations)

    def _empty_list(self) -> dict[str, torch.Tensor]:
        cell = {**super()._empty_list(), "codes": torch.empty(0, self.quantizer.m, dtype=torch.uint8,
                                                               device=self.device)}
        if self.metric == "l2":
            cell["half_norms"] = torch.empty(0, device=self.device)
        return cell

    def _train_codec(self, vectors: torch.Tensor, labels: torch.Tensor) -> None:
        self.quantizer.train(vectors - self.centroids[labels], self.seed, self.train_iterations)

    def _encode(self, vectors: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        codes = self.quantizer.encode(vectors - self.centroids[labels])
        encoded = {"codes": codes}
        if self.metric == "l2":
            decoded = self.centroids[labels] + self.quantizer.decode(codes)
            encoded["half_norms"] = -0.5 * decoded.pow(2).sum(1)
        return encoded

    def _prepare(self, probed: ProbedQueries) -> None:
        probed.extra = self.quantizer.lookup_tables(probed.raw)

    def _list_topk(self, cell: int, slots: torch.Tensor, rows: torch.Tensor, probed: ProbedQueries, k: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        assert probed.extra is not None
        lists = self.lists[cell]
        scores = self.quantizer.inner_products(probed.extra[rows], lists["codes"])
        scores += probed.coarse[slots].unsqueeze(1)
        if self.metric == "l2":
            scores += lists["half_norms"]
        return scores.topk(k, dim=1)

    def state(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        config, tensors = super().state()
        return {**config, "pq_m": self.quantizer.m}, {**tensors, "codebooks": self.quantizer.codebooks.cpu()}

    @classmethod
    def from_state(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor],
                   device: str | torch.device = "cpu") -> IVFPQIndex:
        index = cls(config["dim"], config["nlist"], config["pq_m"], config["metric"], config["nprobe"], device,
                    config["seed"], config["train_iterations"])
        index.quantizer.codebooks = tensors["codebooks"].to(index.device)
        index._restore(config, tensors)
        return index
