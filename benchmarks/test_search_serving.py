"""The search server under Poisson load, and the fleet for 10M QPS projected from it.

An IVF-flat index at the fewest lists reaching recall@10 ≥ 0.95 is served over HTTP (FastAPI,
dynamic batching) in this process; an open-loop client sends single-query requests at Poisson
rates. Published: p50/p99 latency and served QPS per offered rate, the mean batch size, and the
replicas needed for 10M QPS from the highest measured rate whose p99 stayed within 50 ms (projected).
"""

from __future__ import annotations

import pytest
import torch

from ai_system.bench.metrics import Baseline
from ai_system.search.casestudy import (
    LATENCY_BUDGET_MS,
    SERVING_RECALL,
    STUDY_SIZES,
    clustered_dataset,
    fleet_from_load,
    serve_under_load,
)
from ai_system.search.compare import SweepConfig, build_ours
from ai_system.search.data import exact_neighbors, recall_at_k
from ai_system.search.fleet import TARGET_QPS

AREA = "search"


def test_search_serving_under_poisson_load(benchmark, record, profile):
    size = STUDY_SIZES[profile.pick(quick="quick", full="full")]
    dataset = clustered_dataset(size)
    truth = exact_neighbors(dataset.corpus, dataset.queries, 10, dataset.metric)
    config = SweepConfig(nlist=size.nlist, repeats=1)
    index = build_ours("ivf_flat", dataset, config)
    nprobe = next((p for p in config.nprobes if p <= size.nlist
                   and recall_at_k(index.search(dataset.queries, 10, p).ids, truth) >= SERVING_RECALL), None)
    if nprobe is None:
        pytest.fail(f"IVF never reached recall {SERVING_RECALL} with nprobe in {config.nprobes}")
    index.nprobe = nprobe
    recall = recall_at_k(index.search(dataset.queries, 10).ids, truth)
    reports = benchmark.pedantic(serve_under_load, args=(index, dataset.queries, size.load_rates,
                                                         size.load_requests), rounds=1, iterations=1)
    threads = torch.get_num_threads()
    scale = f"{dataset.corpus.shape[0]} × {dataset.dim} vectors, IVF nlist {size.nlist}, {threads} threads, HTTP"
    params = {"index": "ivf_flat", "nlist": size.nlist, "threads": threads, "k": 10}
    for report in reports:
        point = {**params, "offered_qps": report.offered_qps}
        record(name="search_http_p99_ms", value=1000 * report.latency_p99_s, unit="ms", better="lower", area=AREA,
               scale=scale, params=point, x="offered_qps", goal=LATENCY_BUDGET_MS,
               baseline=Baseline("latency budget", LATENCY_BUDGET_MS, "ms", "limit"),
               question="What p99 latency does one search request see under Poisson load?",
               description=f"one query per request, nprobe {nprobe} (recall@10 {recall:.3f}); {report.failed} failed")
        record(name="search_http_p50_ms", value=1000 * report.latency_p50_s, unit="ms", better="lower", area=AREA,
               scale=scale, params=point, x="offered_qps", description="median latency, same runs as the p99")
        record(name="search_http_served_qps", value=report.throughput_rps, unit="req/s", better="higher", area=AREA,
               scale=scale, params=point, x="offered_qps",
               baseline=Baseline("offered load", report.offered_qps, "req/s", "limit"),
               question="Does the server keep up with the offered load?",
               description="completed requests over the span from first send to last answer")
    fleet = fleet_from_load(reports)
    if fleet is None:
        return
    record(name="search_replicas_for_10M_qps", value=fleet.replicas, unit="replicas", better="lower", area=AREA,
           scale=f"{TARGET_QPS:.0e} QPS, p99 ≤ {LATENCY_BUDGET_MS:.0f} ms", kind="projected",
           projection=fleet.projection(recall=round(recall, 4), nprobe=nprobe, hardware="this CPU host"),
           question="How many replicas of this machine serve 10M QPS within the latency budget?",
           description=f"{fleet.hosts} hosts of 8 replicas; from {fleet.measured_qps:.0f} req/s measured per replica "
                       f"at p99 {fleet.measured_p99_ms:.1f} ms, run at {fleet.utilization:.0%} utilization")
