"""``ai-system schedule``: run any placement policy on any node list and pod list.

    ai-system schedule fill --nodes NODES.csv --pods PODS.csv --policy fgd-pack [--seed 42 --target-load 1.3]
    ai-system schedule replay --nodes NODES.csv --pods PODS.csv --policy fgd [--carve 100 --offered-load 1.0]
    ai-system schedule extender --policy fgd-pack --typical-pods PODS.csv --api-server URL [--port 8888]
    ai-system schedule manifests --nodes NODES.csv --out DIR

Node and pod lists use the Alibaba trace's CSV format (see ``trace.py``). Bad input prints one line
and exits 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ai_system.resources.cluster import Cluster, carve_nodes
from ai_system.resources.events import replay, speedup_for
from ai_system.resources.fill import DEFAULT_TARGET_LOAD, run_fill
from ai_system.resources.manifests import all_manifests, to_yaml
from ai_system.resources.policies import POLICIES, make_policy
from ai_system.resources.trace import TraceError, load_nodes, load_tasks


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("schedule", help="GPU cluster scheduling: fill experiment, trace replay, "
                                                    "kube-scheduler extender, manifests", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="schedule_command", required=True, metavar="SUBCOMMAND")

    def lists(command: argparse.ArgumentParser, pods: bool = True) -> None:
        command.add_argument("--nodes", required=True, help="node list CSV (sn, cpu_milli, memory_mib, gpu, model)")
        if pods:
            command.add_argument("--pods", required=True, help="pod list CSV (name, cpu_milli, memory_mib, "
                                                               "num_gpu, gpu_milli[, gpu_spec, times, gang])")
        command.add_argument("--carve", type=int, help="use this many nodes carved from the list, same shape mix")

    fill = commands.add_parser("fill", help="the FGD paper's experiment: arrivals until full, unallocated GPU %%")
    lists(fill)
    fill.add_argument("--policy", default="fgd-pack", choices=sorted(POLICIES))
    fill.add_argument("--seed", type=int, default=42)
    fill.add_argument("--target-load", type=float, default=DEFAULT_TARGET_LOAD,
                      help=f"arriving GPU requests as a multiple of capacity (default {DEFAULT_TARGET_LOAD})")
    fill.add_argument("--json", action="store_true", help="print the curve as JSON")
    fill.set_defaults(func=run_fill_command)

    events = commands.add_parser("replay", help="discrete-event replay with the trace's creation/deletion times")
    lists(events)
    events.add_argument("--policy", default="fgd-pack", choices=sorted(POLICIES))
    events.add_argument("--offered-load", type=float,
                        help="compress arrival times until the GPU-seconds offer this share of capacity "
                             "(default: the trace's own times)")
    events.add_argument("--json", action="store_true")
    events.set_defaults(func=run_replay_command)

    extender = commands.add_parser("extender", help="serve the kube-scheduler extender (filter/prioritize/bind)")
    extender.add_argument("--policy", default="fgd-pack", choices=sorted(POLICIES))
    extender.add_argument("--typical-pods", help="pod list whose typical tasks define FGD's target workload")
    extender.add_argument("--api-server", help="API server URL for bindings (default: in-cluster service account)")
    extender.add_argument("--host", default="127.0.0.1")
    extender.add_argument("--port", type=int, default=8888)
    extender.set_defaults(func=run_extender_command)

    manifests = commands.add_parser("manifests", help="write KubeSchedulerConfiguration, Kueue and extender YAML")
    lists(manifests, pods=False)
    manifests.add_argument("--out", required=True, help="folder to write the YAML files into")
    manifests.set_defaults(func=run_manifests_command)


def run_fill_command(args: argparse.Namespace) -> int:
    return _guard(_fill, args)


def run_replay_command(args: argparse.Namespace) -> int:
    return _guard(_replay, args)


def run_extender_command(args: argparse.Namespace) -> int:
    return _guard(_extender, args)


def run_manifests_command(args: argparse.Namespace) -> int:
    return _guard(_manifests, args)


def _guard(command, args: argparse.Namespace) -> int:
    try:
        return command(args)
    except (TraceError, ValueError, OSError) as error:
        print(f"ai-system schedule {args.schedule_command}: {error}", file=sys.stderr)
        return 2


def _nodes(args: argparse.Namespace) -> list:
    nodes = load_nodes(args.nodes)
    return carve_nodes(nodes, args.carve) if args.carve else nodes


def _tasks(path: str) -> tuple[list, list]:
    tasks, rejected = load_tasks(path)
    for record in rejected:
        print(f"rejected {record.name}: {record.reason}", file=sys.stderr)
    if not tasks:
        raise ValueError(f"{path}: no valid task rows")
    return tasks, rejected


def _fill(args: argparse.Namespace) -> int:
    nodes, (tasks, rejected) = _nodes(args), _tasks(args.pods)
    curve = run_fill(nodes, tasks, lambda seed: make_policy(args.policy, tasks, seed), seed=args.seed,
                     target_load=args.target_load, check_every=100)
    if args.json:
        print(json.dumps({"policy": curve.policy, "seed": curve.seed, "capacity_gpus": curve.capacity_gpus,
                          "arrived_pct": curve.arrived_pct, "unallocated_pct": curve.unallocated_pct,
                          "allocated_pct": curve.allocated_pct, "fragmented_pct": curve.fragmented_pct,
                          "placed": curve.placed, "failed": len(curve.failed), "rejected_rows": len(rejected)}))
        return 0
    print(f"{curve.policy} on {len(nodes)} nodes ({curve.capacity_gpus:.0f} GPUs), seed {curve.seed}: "
          f"{curve.placed} placed, {len(curve.failed)} not placed, {len(rejected)} malformed rows")
    print("GPUs: " + ", ".join(f"{model} × {count} ({memory // 1024} GiB)" if memory else f"{model} × {count}"
                               for model, count, memory in _gpu_pools(nodes)))
    print(f"{'arrived %':>10} {'unallocated %':>14} {'allocated %':>12} {'fragmented %':>13}")
    for row in zip(curve.arrived_pct, curve.unallocated_pct, curve.allocated_pct, curve.fragmented_pct, strict=True):
        print(f"{row[0]:10.1f} {row[1]:14.2f} {row[2]:12.2f} {row[3]:13.2f}")
    return 0


def _gpu_pools(nodes: list) -> list[tuple[str, int, int | None]]:
    """(model, GPU count, memory per GPU in MiB or None for anonymised models) of each GPU model."""
    pools: dict[str, list] = {}
    for node in nodes:
        if node.gpus:
            pools.setdefault(node.gpu_model, []).append(node)
    return [(model, sum(n.gpus for n in group), group[0].gpu_memory_mib) for model, group in sorted(pools.items())]


def _replay(args: argparse.Namespace) -> int:
    nodes, (tasks, _) = _nodes(args), _tasks(args.pods)
    speedup = speedup_for(tasks, Cluster(nodes).total_gpu_milli, args.offered_load) if args.offered_load else 1.0
    result = replay(nodes, tasks, make_policy(args.policy, tasks), arrival_speedup=speedup)
    summary = {"policy": result.policy, "nodes": len(nodes), "capacity_gpus": result.capacity_gpus,
               "arrival_speedup": round(speedup, 3),
               "gpu_hour_utilization_pct": round(result.gpu_hour_utilization_pct, 2),
               "queueing_delay_p50_s": result.delay_percentile(50), "queueing_delay_p99_s": result.delay_percentile(99),
               "started": len(result.queueing_delays), "never_fit": len(result.never_fit),
               "never_started": len(result.never_started)}
    print(json.dumps(summary) if args.json else "\n".join(f"{key:<28}{value}" for key, value in summary.items()))
    for record in result.never_fit[:10]:
        print(f"never fits: {record.reason}", file=sys.stderr)
    return 0


def _extender(args: argparse.Namespace) -> int:
    import uvicorn

    from ai_system.resources.extender import api_server_binder, build_state, create_app

    typical = _tasks(args.typical_pods)[0] if args.typical_pods else []
    binder = api_server_binder(args.api_server)
    uvicorn.run(create_app(build_state(args.policy, typical, binder)), host=args.host, port=args.port,
                log_level="info")
    return 0


def _manifests(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, documents in all_manifests(_nodes(args)).items():
        (out / name).write_text(to_yaml(documents))
        print(out / name)
    return 0
