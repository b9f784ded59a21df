"""FAISS on the same vectors, queries and knobs as our indexes: the peer every search figure is judged against.

Imported only where a comparison runs (``faiss-cpu`` is a dev/benchmark dependency). The metric maps
as in ``ai_system.search.metric``: ``ip`` → ``METRIC_INNER_PRODUCT``, ``cosine`` → inner product on
L2-normalized copies, ``l2`` → ``METRIC_L2`` (FAISS also reports squared distances).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

FAISS_NAMES = {"flat": "IndexFlat", "ivf_flat": "IndexIVFFlat", "ivf_pq": "IndexIVFPQ"}


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as error:
        raise RuntimeError("the FAISS comparison needs faiss-cpu: pip install faiss-cpu") from error
    return faiss


def faiss_version() -> str:
    return str(_faiss().__version__)


def set_threads(threads: int) -> None:
    """The same thread count for torch (our indexes) and FAISS's OpenMP."""
    torch.set_num_threads(threads)
    _faiss().omp_set_num_threads(threads)


def as_faiss_input(vectors: torch.Tensor, metric: str) -> np.ndarray:
    array = np.ascontiguousarray(vectors.numpy(), dtype=np.float32).copy()
    if metric == "cosine":
        _faiss().normalize_L2(array)
    return array


def build_faiss(kind: str, corpus: torch.Tensor, metric: str, nlist: int = 0, pq_m: int = 0,
                iterations: int = 20, seed: int = 0) -> Any:
    """A trained, filled FAISS index of ``kind`` (flat, ivf_flat or ivf_pq) over ``corpus``."""
    faiss = _faiss()
    dim = corpus.shape[1]
    faiss_metric = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
    data = as_faiss_input(corpus, metric)
    if kind == "flat":
        index = faiss.IndexFlat(dim, faiss_metric)
    else:
        quantizer = faiss.IndexFlat(dim, faiss_metric)
        index = (faiss.IndexIVFFlat(quantizer, dim, nlist, faiss_metric) if kind == "ivf_flat"
                 else faiss.IndexIVFPQ(quantizer, dim, nlist, pq_m, 8, faiss_metric))
        index.cp.niter, index.cp.seed = iterations, seed
        index.train(data)
    index.add(data)
    return index


def faiss_search(index: Any, queries: torch.Tensor, k: int, metric: str, nprobe: int | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    if nprobe is not None:
        index.nprobe = nprobe
    scores, ids = index.search(as_faiss_input(queries, metric), k)
    return torch.from_numpy(scores), torch.from_numpy(ids)


def faiss_bytes_per_vector(index: Any, kind: str) -> float:
    """Stored bytes per vector: the code, plus the 8-byte id an inverted list keeps beside it."""
    return float(index.code_size + (8 if kind != "flat" else 0))
