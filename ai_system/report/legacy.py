"""Judge figures recorded before metrics could say what they are judged against.

Results files written before ``Metric`` had ``question``, ``baseline``, ``goal`` and ``spread``
kept the comparison in ``params`` (``peak_tflops``, ``numpy_gather_rows_per_s``, ...) or in a sibling
figure of the same benchmark, and the goal in the docs. This fills the new fields from there, so
the committed history gets headline rows too, and takes the evidence out of ``params`` (where it
would split one figure into a series per run). Goals are the ones the docs state. New benchmarks
declare the fields themselves and never come here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ai_system.bench.metrics import Baseline, Metric

JUDGEMENT_FIELDS = ("question", "baseline", "goal", "spread")
SERVING_SLO_MS = 50.0


@dataclass(frozen=True)
class Siblings:
    """The other figures of the same benchmark, and the hardware it ran on."""

    metrics: list[Metric]
    hardware: dict[str, Any]

    def value(self, name: str, **params: Any) -> float:
        for metric in self.metrics:
            if metric.name == name and all(metric.params.get(key) == value for key, value in params.items()):
                return metric.value
        raise ValueError(f"no sibling figure {name} with {params} to compare with")


def _without(params: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {key: value for key, value in params.items() if key not in keys}


def _peak(metric: Metric, match: re.Match, siblings: Siblings) -> dict[str, Any]:
    device = match["device"]
    dtype = match["dtype"]
    question = (f"How fast does a dense {dtype} matmul run on this {device.upper()}?" if dtype
                else f"How fast does this {device.upper()} copy memory?")
    params = {**_without(metric.params, "n", "bytes"), "threads": siblings.hardware.get("torch_threads")}
    return {"params": params, "question": question}


def _mfu(metric: Metric, match: re.Match, siblings: Siblings) -> dict[str, Any]:
    peak = metric.params["peak_tflops"]
    dtype = "bf16" if match["where"] == "gpu" else "fp32"
    name = ("summed 1-thread fp32 matmul peaks of the ranks" if match["where"] == "cpu_fsdp"
            else f"{dtype} matmul peak measured in the same run")
    fields: dict[str, Any] = {
        "params": _without(metric.params, "peak_tflops"),
        "baseline": Baseline(name=name, value=peak, unit="TFLOP/s", kind="peak", ours=metric.value / 100 * peak)}
    if match["where"] == "cpu_process":
        fields.update(question="What share of the measured matmul peak does training reach (MFU)?", goal=50.0)
    if match["where"] == "gpu" and metric.params.get("mode") == "compile":
        fields.update(question="What share of the measured bf16 matmul peak does 1B training reach (MFU)?",
                      goal=40.0)
    return fields


def _scaling(metric: Metric, match: re.Match, siblings: Siblings) -> dict[str, Any]:
    one = siblings.value("training_samples_per_s_cpu_fsdp", ranks=1)
    two = siblings.value("training_samples_per_s_cpu_fsdp", ranks=2)
    return {"question": "How close to linear is going from 1 to 2 FSDP ranks?", "goal": 85.0,
            "baseline": Baseline(name="linear scaling: 2 × the 1-rank rate", value=2 * one, unit="samples/s",
                                 kind="formula", ours=two)}


def _inference_rate(metric: Metric, match: re.Match, siblings: Siblings) -> dict[str, Any]:
    return {"question": f"How many tokens per second does the model {match['phase']} on this CPU?"}


def _tp_speedup(metric: Metric, match: re.Match, siblings: Siblings) -> dict[str, Any]:
    base = siblings.value("tp_forward_backward_seconds", variant="unsharded")
    ours = siblings.value("tp_forward_backward_seconds", variant=metric.params["variant"])
    return {"question": "Does 2-way tensor parallelism make a training step faster than one process?",
            "baseline": Baseline(name="one unsharded process", value=base, unit="s", ours=ours)}


def _planner(metric: Metric, match: re.Match, siblings: Siblings) -> dict[str, Any]:
    unit = {"memory": "MB", "time": "s"}[match["what"]]
    suffix = {"memory": "mb", "time": "s"}[match["what"]]
    params = metric.params
    calibration = f" (calibrated {params['rank_gflops']:.3g} GFLOP/s per rank)" if "rank_gflops" in params else ""
    return {"question": f"How close is the capacity planner's {match['what']} prediction to a measured run?",
            "params": _without(params, f"measured_{suffix}", f"predicted_{suffix}", "rank_gflops", "bus_gb_per_s"),
            "baseline": Baseline(name=f"planner's prediction{calibration}", value=params[f"predicted_{suffix}"],
                                 unit=unit, kind="formula", ours=params[f"measured_{suffix}"])}


def _bubble(metric: Metric, match: re.Match, siblings: Siblings) -> dict[str, Any]:
    formula = metric.params["formula_pct"]
    params = _without(metric.params, "formula_pct")
    if match["what"] == "measured":
        return {"params": params, "baseline": Baseline(name="(p−1)/(m+p−1) formula", value=formula, unit="%",
                                                       kind="formula")}
    fields: dict[str, Any] = {
        "params": params, "question": "Does the measured pipeline bubble match the formula (within 10 % at m ≥ 4p)?"}
    if params["microbatches"] >= 4 * params["pp"]:
        fields["goal"] = 10.0
    return fields


def _parity(metric: Metric, match: re.Match, siblings: Siblings) -> dict[str, Any]:
    return {"question": "Does every parallel layout compute the same gradients as one process?", "goal": 1e-6}


def _plan(metric: Metric, match: re.Match, siblings: Siblings) -> dict[str, Any]:
    return {"question": "What MFU does the planner project for a 1T-parameter model on its fleet?"}


def _lookup(metric: Metric, match: re.Match, siblings: Siblings) -> dict[str, Any]:
    store, peer = match["store"], match["peer"]
    key = "numpy_gather_rows_per_s" if peer == "numpy_gather" else "redis_benchmark_get_rows_per_s"
    name = "numpy gather from one array" if peer == "numpy_gather" else "redis-benchmark GET on the same server"
    fields: dict[str, Any] = {
        "params": _without(metric.params, key),
        "baseline": Baseline(name=name, value=metric.params[key] / 1e6, unit="Mrows/s",
                             ours=siblings.value(f"lookup_{store}_rows_per_s"))}
    if store.startswith("embedded"):
        fields.update(question="Is the embedded store close to memory speed?", goal=0.5)
    elif peer == "redis_benchmark_get":
        fields.update(question="Is the Redis client close to what the server can do?", goal=0.5)
    elif store == "torchrec_ebc":
        fields.update(question="How does TorchRec's EmbeddingBagCollection compare with a numpy gather?")
    return fields


def _freshness(metric: Metric, match: re.Match, siblings: Siblings) -> dict[str, Any]:
    return {"question": "How soon does serving see an update (p99)?", "goal": 1000.0}


def _quality(metric: Metric, match: re.Match, siblings: Siblings) -> dict[str, Any]:
    if match["what"] == "recall":
        return {"question": "Does the two-tower model recover the planted structure?", "goal": 0.95,
                "params": _without(metric.params, "recall", "truth_recall"),
                "baseline": Baseline(name="the ground-truth model", value=metric.params["truth_recall"],
                                     unit="recall@10", ours=metric.params["recall"])}
    return {"question": "Does the DLRM ranker recover the true click probabilities?",
            "params": _without(metric.params, "auc", "truth_auc"),
            "baseline": Baseline(name="the true click probabilities", value=metric.params["truth_auc"], unit="AUC",
                                 ours=metric.params["auc"])}


def _sizing(metric: Metric, match: re.Match, siblings: Siblings) -> dict[str, Any]:
    return {"question": "How many nodes does a 1B-user cluster need?"}


def _serving(metric: Metric, match: re.Match, siblings: Siblings) -> dict[str, Any]:
    what = match["what"]
    if what == "latency_p99":
        return {"goal": SERVING_SLO_MS}
    if what == "p99_at_max_qps":
        return {"baseline": Baseline(name="p99 SLO", value=SERVING_SLO_MS, unit="ms", kind="limit"),
                "goal": SERVING_SLO_MS}
    if what == "max_qps_at_slo":
        return {"question": "What load does one server carry within the 50 ms p99 SLO?"}
    if what == "failed_below_saturation":
        return {"question": "Does the server lose any request below saturation?", "goal": 0.0}
    if what == "mlperf_valid":
        return {"question": "Does MLPerf LoadGen accept the run as VALID?", "goal": 1.0}
    offline = siblings.value("serving_offline_throughput")
    return {"question": "How much of the engine's offline throughput does the HTTP server deliver?", "goal": 0.85,
            "baseline": Baseline(name="the same requests queued in-process", value=offline, unit="req/s",
                                 ours=metric.value * offline)}


RULES: list[tuple[re.Pattern[str], Callable[[Metric, re.Match, Siblings], dict[str, Any]]]] = [
    (re.compile(p), rule) for p, rule in (
        (r"matmul_peak_(?P<device>cpu|cuda)_(?P<dtype>\w+)", _peak),
        (r"copy_bandwidth_(?P<device>cpu|cuda)(?P<dtype>)", _peak),
        (r"training_mfu_(?P<where>cpu_process|cpu_fsdp|gpu)", _mfu),
        (r"training_scaling_efficiency_cpu", _scaling),
        (r"(?P<phase>prefill|decode)_tokens_per_s_cpu", _inference_rate),
        (r"tp_speedup_vs_unsharded", _tp_speedup),
        (r"planner_(?P<what>memory|time)_error", _planner),
        (r"pipeline_bubble_(?P<what>measured|error)", _bubble),
        (r"parity_grad_max_abs_diff", _parity),
        (r"plan_1t_mfu", _plan),
        (r"lookup_(?P<store>embedded_\dshard|redis|redis_cluster|torchrec_ebc)_vs_(?P<peer>numpy_gather|redis_benchmark_get)",
         _lookup),
        (r"freshness_(embedded|redis)_p99", _freshness),
        (r"(?P<what>recall)_at_10_(embedded|redis)_vs_ground_truth|auc_dlrm_vs_ground_truth", _quality),
        (r"sizing_1b_(embedded|redis)_nodes", _sizing),
        (r"serving_(?P<what>latency_p99|p99_at_max_qps|max_qps_at_slo|failed_below_saturation|mlperf_valid|"
         r"served_over_offline)", _serving),
    )
]


def upgrade(metrics: list[Metric], hardware: dict[str, Any]) -> tuple[list[Metric], list[str]]:
    """The figures of one benchmark with their judgement filled in, and a line per figure left out.

    A figure whose filled-in judgement does not validate (e.g. above 100 % of its peak) is left out:
    an impossible number is never published.
    """
    siblings = Siblings(metrics, hardware)
    upgraded: list[Metric] = []
    problems: list[str] = []
    for metric in metrics:
        fields = _judgement(metric, siblings)
        try:
            upgraded.append(replace(metric, **fields))
        except ValueError as error:
            problems.append(str(error))
    return upgraded, problems


def _judgement(metric: Metric, siblings: Siblings) -> dict[str, Any]:
    """The fields the first matching rule derives; none when no rule matches or its evidence is missing."""
    for pattern, rule in RULES:
        match = pattern.fullmatch(metric.name)
        if match:
            try:
                return rule(metric, match, siblings)
            except (KeyError, ValueError):
                return {}
    return {}
