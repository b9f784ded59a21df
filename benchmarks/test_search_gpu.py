"""The search engine on a GPU: exact search through the Triton fused top-k against plain torch on the same device.

A ``FlatIndex`` on CUDA scans its keys with ``ops.similarity_topk`` (the fused kernel, no score
matrix); plain torch is ``matmul`` then ``topk`` (the op's reference) on the same fp32 keys. Each
point is one batch of queries, answers copied back to the host, timed ``repeats`` times after a
warm-up. Published: QPS per batch size for both, recall@10 of ours against plain torch's exact
answer, and the speedup (goal 1.5× for k ≤ 100, from issue 13).
"""

from __future__ import annotations

import pytest
import torch

from ai_system.bench.metrics import Baseline, Spread
from ai_system.ops import reference
from ai_system.search.compare import timed_qps
from ai_system.search.data import clustered_embeddings, recall_at_k
from ai_system.search.flat import FlatIndex

AREA = "search"
K = 10
REPEATS = 5


@pytest.mark.gpu
@pytest.mark.parametrize("batch", [1, 64, 1024])
def test_search_gpu_exact_vs_torch(benchmark, record, profile, batch):
    n, dim = profile.pick(quick=100_000, full=1_000_000, gpu=1_000_000), 128
    dataset = clustered_embeddings(n, dim, 1000, n_queries=batch, seed=0)
    index = FlatIndex(dim, "ip", device="cuda")
    index.add(dataset.corpus)
    queries, keys = dataset.queries.cuda(), dataset.corpus.cuda()

    def ours() -> torch.Tensor:
        return index.search(queries, K).ids

    def plain() -> torch.Tensor:
        return reference.similarity_topk(queries, keys, K)[1].cpu()

    recall = recall_at_k(ours(), plain())
    ours_qps = benchmark.pedantic(timed_qps, args=(ours, batch, REPEATS), rounds=1, iterations=1)
    torch_qps = timed_qps(plain, batch, REPEATS)
    median_ours, median_torch = sorted(ours_qps)[REPEATS // 2], sorted(torch_qps)[REPEATS // 2]
    scale = f"{n} × {dim} fp32 keys, {batch} queries per batch, {torch.cuda.get_device_name()}"
    params = {"n": n, "dim": dim, "batch": batch, "k": K}
    record(name="search_gpu_exact_qps", value=median_ours, unit="queries/s", better="higher", area=AREA,
           scale=scale, params=params, x="batch", spread=Spread.of(ours_qps),
           baseline=Baseline("torch matmul + topk", median_torch, "queries/s"),
           question="How many exact-search queries per second does one GPU answer against plain torch?",
           description=f"FlatIndex on CUDA (Triton fused similarity top-k); recall@{K} against torch's answer "
                       f"{recall:.4f}")
    record(name="search_gpu_exact_speedup_vs_torch", value=median_ours / median_torch, unit="×", better="higher",
           area=AREA, scale=scale, params=params, x="batch", goal=1.5,
           baseline=Baseline("torch matmul + topk", median_torch, "queries/s", ours=median_ours),
           question="How much faster is the fused top-k than torch matmul + topk on a GPU?",
           description="same fp32 keys and queries on the device; both copy the answer to the host")
