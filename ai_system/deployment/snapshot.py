"""The dashboard drawn from real scraped data, for the docs (Grafana is not needed to see it).

``snapshot`` starts the ``debug`` model server on loopback, a local Prometheus scraping it with the
system's rules, and an open-loop load that steps up past what one replica sustains and back down;
then ``plot_dashboard`` asks Prometheus for every serving panel's queries over that window (the
dashboard JSON's own PromQL, through the HTTP query API) and draws them with matplotlib, one axes
per panel. The title says what was measured and where.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt

from ai_system.architecture.blueprint import DistributedAISystem
from ai_system.bench.hardware import hardware_info, hardware_label
from ai_system.data.tokenizer import ByteTokenizer
from ai_system.deployment.local_prometheus import LocalPrometheus
from ai_system.deployment.monitoring import dashboard
from ai_system.inference.engine import EngineConfig, EngineThread, load_model
from ai_system.serving.loadgen import open_loop
from ai_system.serving.server import create_app
from ai_system.serving.threaded import ThreadedServer

SERVING_ONLY = DistributedAISystem(training_nodes=0, inference_nodes=1, gpu_per_node=1, training=None, kv_store=None,
                                   scheduler_policy=None, serving={"model": "debug", "weights": "random"})
RATES = (2.0, 5.0, 10.0, 20.0, 40.0, 10.0, 2.0)
UNIT_SCALE = {"s": (1e3, "ms"), "percent": (1.0, "%"), "reqps": (1.0, "req/s"), "bytes": (1.0, "bytes")}


def plot_dashboard(board: dict[str, Any], prometheus: LocalPrometheus, start: float, end: float, path: Path,
                   title: str, step: float = 1.0) -> list[str]:
    """Draw every panel whose queries return data; returns the titles drawn."""
    plt.switch_backend("Agg")
    drawn: list[tuple[dict[str, Any], list[tuple[str, list[float], list[float]]]]] = []
    for panel in board["panels"]:
        lines = []
        for target in panel["targets"]:
            for series in prometheus.query_range(target["expr"], start, end, step):
                legend = target["legendFormat"]
                for key, value in series["metric"].items():
                    legend = legend.replace("{{" + key + "}}", value)
                times = [float(t) - start for t, _ in series["values"]]
                values = [float(v) for _, v in series["values"]]
                lines.append((legend, times, values))
        if lines:
            drawn.append((panel, lines))
    columns = 2
    rows = -(-len(drawn) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(12, 2.8 * rows), squeeze=False)
    for axis, (panel, lines) in zip(axes.flat, drawn, strict=False):
        unit = panel["fieldConfig"]["defaults"]["unit"]
        scale, label = UNIT_SCALE.get(unit, (1.0, ""))
        for legend, times, values in lines:
            axis.plot(times, [value * scale for value in values], label=legend, linewidth=1.2)
        threshold = panel["fieldConfig"]["defaults"].get("thresholds")
        if threshold:
            axis.axhline(threshold["steps"][-1]["value"] * scale, color="red", linestyle="--", linewidth=0.8,
                         label="SLO")
        axis.set_title(panel["title"], fontsize=10)
        axis.set_ylabel(label, fontsize=8)
        axis.set_xlabel("seconds", fontsize=8)
        axis.tick_params(labelsize=8)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, loc="upper left")
    for axis in list(axes.flat)[len(drawn):]:
        axis.set_visible(False)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return [panel["title"] for panel, _ in drawn]


def snapshot(path: Path, seconds_per_rate: float = 20.0) -> list[str]:
    """Serve, scrape and load for ``len(RATES) x seconds_per_rate`` seconds, then draw the dashboard."""
    engine = EngineThread(load_model("debug", seed=0), EngineConfig(max_batch_size=16, max_queue_size=256))
    server = ThreadedServer(create_app(engine, ByteTokenizer(), "debug"))
    url = server.start(ready=lambda: engine.ready)
    try:
        with LocalPrometheus(SERVING_ONLY, {"serving": [url.removeprefix("http://")]}) as prometheus:
            start = time.time()
            for rate in RATES:
                open_loop(url, rate, int(rate * seconds_per_rate), "def main():\n", 16)
            time.sleep(5)
            title = (f"measured: ai-system serve (debug model, random weights, 16 output tokens), one replica on "
                     f"loopback, open-loop load stepping through {', '.join(f'{r:g}' for r in RATES)} req/s\n"
                     f"{hardware_label(hardware_info())}, {time.strftime('%Y-%m-%d')}")
            return plot_dashboard(dashboard(SERVING_ONLY), prometheus, start, time.time(), path, title)
    finally:
        server.stop()


def run(args: argparse.Namespace) -> int:
    drawn = snapshot(Path(args.out), args.seconds)
    print(f"{args.out}: {len(drawn)} panels ({', '.join(drawn)})")
    return 0
