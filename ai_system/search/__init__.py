"""Vector search: exact and IVF indexes on the project's fused similarity top-k, served over HTTP.

``scan`` is the one top-k every index runs (the Triton kernel through ``ops.similarity_topk`` on a
GPU, a blocked matmul with a group-maximum filter on the CPU); ``metric`` turns inner product,
cosine and L2 into one dot product. Indexes: ``flat.FlatIndex`` (exact), ``ivf.IVFFlatIndex`` and
``ivf.IVFPQIndex`` (k-means lists from ``kmeans``, product quantization from ``pq``); ``persist``
saves and loads them. ``data`` makes the corpora and the float64 ground truth, ``faiss_peer`` runs
FAISS on the same vectors, ``server`` answers ``/search`` through the dynamic batcher, ``fleet``
sizes the deployment for a target QPS, and ``cli`` is ``ai-system search``.
"""

from ai_system.search.flat import FlatIndex
from ai_system.search.index import Hits, VectorIndex
from ai_system.search.ivf import IVFFlatIndex, IVFPQIndex
from ai_system.search.persist import IndexFileError, load_index, save_index

__all__ = ["FlatIndex", "Hits", "IVFFlatIndex", "IVFPQIndex", "IndexFileError", "VectorIndex", "load_index",
           "save_index"]
