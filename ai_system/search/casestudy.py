"""The search case study: our indexes against FAISS on two corpora, the HTTP server under Poisson load,
and the fleet for 10M QPS projected from what one replica measured.

``ai-system search study --out DIR`` runs it all in one process and writes ``DIR/results.json`` (every
operating point, build time, bytes per vector, load reports, the projection with its inputs) and
``DIR/summary.md``. The benchmarks (``benchmarks/test_search_*.py``) call the same functions.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ai_system.search.compare import FAMILIES, EngineRun, SweepConfig, sweep
from ai_system.search.data import Dataset, clustered_embeddings, exact_neighbors, python_docs_embeddings
from ai_system.search.faiss_peer import faiss_version, set_threads
from ai_system.search.fleet import TARGET_QPS, FleetPlan, plan_fleet
from ai_system.search.index import VectorIndex
from ai_system.search.ivf import IVFFlatIndex
from ai_system.search.load import search_load
from ai_system.search.server import create_app
from ai_system.serving.batcher import BatcherConfig
from ai_system.serving.loadgen import LoadReport
from ai_system.serving.threaded import ThreadedServer

RECALL_TARGETS = (0.90, 0.95, 0.99)
SERVING_RECALL = 0.95
LATENCY_BUDGET_MS = 50.0
"""The seed's inference-latency target, applied to one search request end to end."""


@dataclass(frozen=True)
class StudySize:
    n: int
    dim: int
    clusters: int
    queries: int
    nlist: int
    docs_nlist: int
    docs_limit: int | None
    """Stdlib paragraphs embedded (None: all of them, about 11k; embedding them takes minutes on a CPU)."""
    load_rates: tuple[float, ...]
    load_requests: int


STUDY_SIZES = {
    "quick": StudySize(10_000, 64, 100, 200, 32, 16, 3000, (50.0, 100.0, 200.0), 200),
    "full": StudySize(500_000, 128, 2000, 1000, 1024, 128, None, (100.0, 200.0, 400.0, 800.0), 2000),
}


def clustered_dataset(size: StudySize, seed: int = 0) -> Dataset:
    """Spread 1.2: a query's neighbours straddle several clusters, so IVF needs more than one list."""
    return clustered_embeddings(size.n, size.dim, size.clusters, size.queries, spread=1.2, seed=seed)


def docs_dataset(size: StudySize, seed: int = 0) -> Dataset:
    """The stdlib docstring paragraphs embedded with MiniLM (the first ``docs_limit``), queries held out."""
    return python_docs_embeddings(n_queries=size.queries, limit=size.docs_limit, seed=seed)


def compare_engines(dataset: Dataset, nlist: int, k: int = 10, repeats: int = 3, families: tuple[str, ...] = FAMILIES
                    ) -> tuple[list[EngineRun], torch.Tensor]:
    """Every family, ours then FAISS, on this dataset; also returns the float64 ground truth."""
    truth = exact_neighbors(dataset.corpus, dataset.queries, k, dataset.metric)
    pq_m = next(m for m in (16, 8, 4, 2, 1) if dataset.dim % m == 0)
    config = SweepConfig(k=k, nlist=nlist, pq_m=pq_m, repeats=repeats)
    return [run for family in families for run in sweep(family, dataset, truth, config)], truth


def serving_nprobe(runs: list[EngineRun], target: float = SERVING_RECALL) -> int:
    """The fewest lists our IVF-flat index scans to reach ``target`` recall (the fastest such point)."""
    ours = next(run for run in runs if run.engine == "ours" and run.family == "ivf_flat")
    point = ours.qps_at_recall(target)
    if point is None or point.nprobe is None:
        raise ValueError(f"our IVF index never reached recall {target} in the sweep; widen nprobes")
    return point.nprobe


def serve_under_load(index: VectorIndex, queries: torch.Tensor, rates: tuple[float, ...], count: int, k: int = 10,
                     config: BatcherConfig | None = None) -> list[LoadReport]:
    """Poisson load at each rate against ``POST /search`` served in this process."""
    with ThreadedServer(create_app(index, config)) as server:
        search_load(server.url, queries, k, rates[0], min(count, 50))
        return [search_load(server.url, queries, k, rate, count, seed=i, slo_s=LATENCY_BUDGET_MS / 1000)
                for i, rate in enumerate(rates)]


def fleet_from_load(reports: list[LoadReport]) -> FleetPlan | None:
    """The projection from the highest measured throughput whose p99 stayed within the budget."""
    within = [r for r in reports if r.failed == 0 and r.latency_p99_s * 1000 <= LATENCY_BUDGET_MS]
    if not within:
        return None
    best = max(within, key=lambda report: report.throughput_rps)
    return plan_fleet(best.throughput_rps, best.latency_p99_s * 1000, LATENCY_BUDGET_MS)


def recall_table(runs: list[EngineRun]) -> list[dict[str, object]]:
    rows = []
    for run in runs:
        row: dict[str, object] = {"engine": run.label, "build_s": run.build_s, "bytes_per_vector": run.bytes_per_vector}
        for target in RECALL_TARGETS:
            point = run.qps_at_recall(target)
            row[f"qps@{target}"] = None if point is None else point.qps
            row[f"nprobe@{target}"] = None if point is None else point.nprobe
        rows.append(row)
    return rows


def summary_markdown(results: dict[str, object]) -> str:
    """``summary.md``: the QPS-at-recall table per corpus, the load runs and the projected fleet."""
    lines = ["# Search case study results", "",
             f"Measured on {results['machine']} with {results['threads']} threads; torch {torch.__version__}, "
             f"faiss {results['faiss']}. QPS: one batch of all queries, median of repeats.", ""]
    for name, table in results["recall_qps"].items():  # type: ignore[union-attr]
        lines += [f"## {name}", "", "| engine | build s | bytes/vector | " +
                  " | ".join(f"QPS @ recall {t}" for t in RECALL_TARGETS) + " |",
                  "| --- | --- | --- | " + " | ".join("---" for _ in RECALL_TARGETS) + " |"]
        for row in table:
            cells = [("not reached" if not row[f"qps@{t}"] else f"{row[f'qps@{t}']:.0f}" +
                      (f" (nprobe {row[f'nprobe@{t}']})" if row[f"nprobe@{t}"] else "")) for t in RECALL_TARGETS]
            lines.append(f"| {row['engine']} | {row['build_s']:.2f} | {row['bytes_per_vector']:.0f} | "
                         + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Serving (HTTP, Poisson arrivals, one query per request)", "",
              "| offered QPS | served QPS | p50 ms | p99 ms | failed |", "| --- | --- | --- | --- | --- |"]
    for report in results["load"]:  # type: ignore[union-attr]
        lines.append(f"| {report['offered_qps']:.0f} | {report['throughput_rps']:.0f} | "
                     f"{1000 * report['latency_p50_s']:.1f} | {1000 * report['latency_p99_s']:.1f} | "
                     f"{report['failed']} |")
    fleet = results["fleet"]
    lines += ["", "## Projected fleet for 10M QPS (projected, not measured)", "",
              "No load level met the latency budget." if fleet is None else
              f"{fleet['replicas']} replicas of this machine ({fleet['hosts']} hosts of 8) at "
              f"{fleet['utilization']:.0%} utilization, from a measured {fleet['measured_qps']:.0f} QPS per replica "
              f"with p99 {fleet['measured_p99_ms']:.1f} ms (budget {fleet['latency_budget_ms']:.0f} ms)."]
    return "\n".join(lines) + "\n"


def run_study(out_dir: Path, profile: str = "quick", threads: int | None = None) -> dict[str, object]:
    size = STUDY_SIZES[profile]
    threads = threads or torch.get_num_threads()
    set_threads(threads)
    started = time.perf_counter()
    results: dict[str, object] = {"profile": profile, "threads": threads, "faiss": faiss_version(),
                                  "machine": platform.processor() or platform.machine(),
                                  "recall_qps": {}, "runs": {}}
    clustered = clustered_dataset(size)
    datasets = [(clustered, size.nlist), (docs_dataset(size), size.docs_nlist)]
    clustered_runs: list[EngineRun] = []
    for dataset, nlist in datasets:
        runs, _ = compare_engines(dataset, nlist)
        clustered_runs = clustered_runs or runs
        results["recall_qps"][dataset.name] = recall_table(runs)  # type: ignore[index]
        results["runs"][dataset.name] = [run.to_dict() for run in runs]  # type: ignore[index]
    index = IVFFlatIndex(clustered.dim, size.nlist, clustered.metric, serving_nprobe(clustered_runs))
    index.train(clustered.corpus)
    index.add(clustered.corpus)
    reports = serve_under_load(index, clustered.queries, size.load_rates, size.load_requests)
    fleet = fleet_from_load(reports)
    results.update(load=[asdict(report) for report in reports], serving_nprobe=index.nprobe,
                   fleet=None if fleet is None else asdict(fleet), target_qps=TARGET_QPS,
                   elapsed_s=time.perf_counter() - started)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    (out_dir / "summary.md").write_text(summary_markdown(results))
    return results


def study(args: argparse.Namespace) -> int:
    run_study(Path(args.out), args.profile, args.threads)
    print((Path(args.out) / "summary.md").read_text())
    return 0


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("study", help="the case study: ours vs FAISS, serving load, 10M-QPS fleet",
                                 description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="artifacts/search", help="directory for results.json, summary.md")
    parser.add_argument("--profile", choices=sorted(STUDY_SIZES), default="quick")
    parser.add_argument("--threads", type=int, default=None, help="threads for both engines (default: torch's)")
    parser.set_defaults(action=study)
