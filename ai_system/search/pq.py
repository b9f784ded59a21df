"""Product quantization: a vector as ``m`` one-byte codes, one per slice of its dimensions (Jégou et al., 2011).

Each of the ``m`` slices of ``dim / m`` dimensions gets its own codebook of 256 centroids (k-means
on that slice); a vector is stored as the index of the nearest centroid in each slice, ``m`` bytes
instead of ``4 dim``. A query's inner product with a coded vector is a sum of ``m`` table lookups
(asymmetric distance computation): the table holds the query slice's dot product with every
centroid of that slice, computed once per query.
"""

from __future__ import annotations

import torch

from ai_system.search.kmeans import assign, kmeans

CODEBOOK_SIZE = 256


class ProductQuantizer:
    def __init__(self, dim: int, m: int) -> None:
        if isinstance(m, bool) or not isinstance(m, int) or m < 1 or dim % m:
            raise ValueError(f"pq_m must be a positive divisor of the dimension {dim}, got {m!r}")
        self.dim, self.m, self.sub_dim = dim, m, dim // m
        self.codebooks = torch.empty(0)

    @property
    def trained(self) -> bool:
        return self.codebooks.numel() > 0

    def train(self, vectors: torch.Tensor, seed: int = 0, iterations: int = 20) -> None:
        if vectors.shape[0] < CODEBOOK_SIZE:
            raise ValueError(f"product quantization needs at least {CODEBOOK_SIZE} training vectors, "
                             f"got {vectors.shape[0]}")
        slices = vectors.float().view(-1, self.m, self.sub_dim)
        self.codebooks = torch.stack([kmeans(slices[:, j], CODEBOOK_SIZE, "l2", iterations, seed + j)
                                      for j in range(self.m)])

    def encode(self, vectors: torch.Tensor) -> torch.Tensor:
        """uint8 codes (n, m): the nearest codebook entry of each slice."""
        slices = vectors.float().view(-1, self.m, self.sub_dim)
        return torch.stack([assign(slices[:, j], self.codebooks[j], "l2") for j in range(self.m)], dim=1
                           ).to(torch.uint8)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """The vectors the codes stand for (n, dim)."""
        picked = self.codebooks[torch.arange(self.m, device=codes.device), codes.long()]
        return picked.reshape(codes.shape[0], self.dim)

    def lookup_tables(self, queries: torch.Tensor) -> torch.Tensor:
        """Each query slice's dot product with each codebook entry, flattened: (n, m * 256)."""
        tables = torch.einsum("nmd,mkd->nmk", queries.float().view(-1, self.m, self.sub_dim), self.codebooks)
        return tables.reshape(queries.shape[0], -1)

    def flat_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes as column indices into ``lookup_tables`` rows: code + 256 · slice, flattened (n * m,)."""
        offsets = torch.arange(0, self.m * CODEBOOK_SIZE, CODEBOOK_SIZE, device=codes.device)
        return (codes.long() + offsets).reshape(-1)

    def inner_products(self, tables: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Dot products (queries, n) of the queries behind ``tables`` with the coded vectors."""
        looked_up = tables.index_select(1, self.flat_codes(codes))
        return looked_up.view(tables.shape[0], codes.shape[0], self.m).sum(2)
