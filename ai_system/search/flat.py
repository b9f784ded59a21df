"""Exact search: every key scored against every query by the blocked top-k scan (``scan.topk_scan``).

Keys are kept in the metric's dot form (``metric``) in one contiguous (n, d) tensor, on any device
and in any float dtype: float32 by default, float16/bfloat16 halves the memory on a GPU, float64
is the ground truth the benchmarks measure recall against.
"""

from __future__ import annotations

from typing import Any

import torch

from ai_system.search.index import Hits, VectorIndex
from ai_system.search.metric import dot_dim, keys_in_dot_form, queries_in_dot_form, reported_scores
from ai_system.search.scan import topk_scan

STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
                  "float64": torch.float64}


class FlatIndex(VectorIndex):
    """Brute-force exact search (FAISS's ``IndexFlat``), with ids, add and remove."""

    kind = "flat"

    def __init__(self, dim: int, metric: str = "ip", device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__(dim, metric)
        if dtype not in STORAGE_DTYPES.values():
            raise ValueError(f"dtype must be one of {', '.join(STORAGE_DTYPES)}, got {dtype}")
        self.device = torch.device(device)
        self.dtype = dtype
        self.keys = torch.empty(0, dot_dim(dim, metric), dtype=dtype, device=self.device)
        self.ids = torch.empty(0, dtype=torch.int64)

    def __len__(self) -> int:
        return self.ids.numel()

    def all_ids(self) -> torch.Tensor:
        return self.ids

    @property
    def nbytes(self) -> int:
        return self.keys.nbytes + self.ids.nbytes

    def _add(self, vectors: torch.Tensor, ids: torch.Tensor) -> None:
        keys = keys_in_dot_form(vectors.to(self.device, torch.float64 if self.dtype == torch.float64 else None),
                                self.metric)
        self.keys = torch.cat([self.keys, keys.to(self.dtype)])
        self.ids = torch.cat([self.ids, ids])

    def _remove(self, ids: torch.Tensor) -> int:
        keep = ~torch.isin(self.ids, ids)
        removed = int((~keep).sum())
        if removed:
            self.keys = self.keys[keep.to(self.device)].contiguous()
            self.ids = self.ids[keep]
        return removed

    def _search(self, queries: torch.Tensor, k: int) -> Hits:
        exact = queries.to(self.device, torch.float64 if self.dtype == torch.float64 else None)
        scores, rows = topk_scan(queries_in_dot_form(exact, self.metric).to(self.dtype), self.keys, k)
        scores = reported_scores(scores.to(exact.dtype), exact, self.metric)
        return Hits(scores.float().cpu(), self.ids[rows.cpu()])

    def state(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        config = {"dim": self.dim, "metric": self.metric, "dtype": str(self.dtype).removeprefix("torch."),
                  "next_id": self.next_id}
        return config, {"keys": self.keys.cpu(), "ids": self.ids}

    @classmethod
    def from_state(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor],
                   device: str | torch.device = "cpu") -> FlatIndex:
        index = cls(config["dim"], config["metric"], device, STORAGE_DTYPES[config["dtype"]])
        index.keys, index.ids = tensors["keys"].to(index.device, index.dtype), tensors["ids"]
        index.next_id = config["next_id"]
        return index
