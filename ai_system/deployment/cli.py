"""``ai-system deploy``: a blueprint (``architectures/*.yaml``) to Kubernetes.

    ai-system deploy capacity architectures/llm-training.yaml       # planner + measured results, labelled
    ai-system deploy diagram architectures/quickstart.yaml          # Mermaid topology
    ai-system deploy render architectures/quickstart.yaml --out DIR # manifests + monitoring files, no cluster
    ai-system deploy apply architectures/quickstart.yaml [--dry-run server]
    ai-system deploy examples                                       # regenerate deployment/{kubernetes,monitoring}/
    ai-system deploy train-exporter --log-file train.jsonl --port 9401
    ai-system deploy dashboard-snapshot --out docs/assets/monitoring/dashboard.png  # needs prometheus

Bad input prints one line and exits 2.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from ai_system.architecture.blueprint import DistributedAISystem
from ai_system.deployment import exporter
from ai_system.deployment.kubernetes import DRY_RUNS, LAUNCHERS, DeploymentError, KubernetesDeployment

REPO_ROOT = Path(__file__).resolve().parents[2]
BLUEPRINTS = REPO_ROOT / "architectures"
EXAMPLES = REPO_ROOT / "deployment"
EXAMPLE_FOLDERS = ("kubernetes", "monitoring")


def example_texts(blueprints: Path = BLUEPRINTS) -> dict[str, str]:
    """``deployment/<kubernetes|monitoring>/<blueprint>/...`` → text, rendered from every blueprint."""
    texts = {}
    for path in sorted(blueprints.glob("*.yaml")):
        rendered = KubernetesDeployment(DistributedAISystem.from_yaml(path)).render()
        for relative, text in rendered.texts().items():
            top, rest = relative.split("/", 1)
            texts[f"{top}/{path.stem}/{rest}"] = text
    return texts


def write_examples(root: Path = EXAMPLES, blueprints: Path = BLUEPRINTS) -> list[Path]:
    texts = example_texts(blueprints)
    for folder in EXAMPLE_FOLDERS:
        for stem in {key.split("/")[1] for key in texts}:
            shutil.rmtree(root / folder / stem, ignore_errors=True)
    written = []
    for relative, text in texts.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


def _deployment(args: argparse.Namespace) -> KubernetesDeployment:
    return KubernetesDeployment(DistributedAISystem.from_yaml(Path(args.blueprint)), monitoring=args.monitoring,
                                autoscaling=args.autoscaling, launcher=args.launcher)


def _run(args: argparse.Namespace) -> int:
    command = args.deploy_command
    if command == "capacity":
        print(DistributedAISystem.from_yaml(Path(args.blueprint)).capacity_summary(args.results))
    elif command == "diagram":
        print(DistributedAISystem.from_yaml(Path(args.blueprint)).diagram(), end="")
    elif command == "render":
        for path in _deployment(args).render().write(Path(args.out)):
            print(path)
    elif command == "apply":
        _deployment(args).deploy(args.out, apply=True, dry_run=args.dry_run)
    elif command == "examples":
        print(f"wrote {len(write_examples())} files under {EXAMPLES}/{{{','.join(EXAMPLE_FOLDERS)}}}/")
    elif command == "dashboard-snapshot":
        from ai_system.deployment.snapshot import run

        return run(args)
    else:
        return exporter.run(args)
    return 0


def run_command(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except (ValueError, OSError, DeploymentError) as error:
        print(f"ai-system deploy {args.deploy_command}: {error}", file=sys.stderr)
        return 2


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("deploy", help="blueprint → Kubernetes manifests, monitoring, capacity, apply",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="deploy_command", required=True, metavar="SUBCOMMAND")

    def blueprint(command: argparse.ArgumentParser) -> None:
        command.add_argument("blueprint", help="a blueprint YAML file (see architectures/)")

    def options(command: argparse.ArgumentParser) -> None:
        blueprint(command)
        command.add_argument("--launcher", choices=LAUNCHERS, default="auto",
                             help="training: Kubeflow PyTorchJob, indexed Job, or auto (PyTorchJob if the cluster "
                                  "serves it; render writes the Job and the PyTorchJob as an alternative)")
        command.add_argument("--no-monitoring", dest="monitoring", action="store_false")
        command.add_argument("--no-autoscaling", dest="autoscaling", action="store_false")

    capacity = commands.add_parser("capacity", help="what the system can do: planner projections, measured results")
    blueprint(capacity)
    capacity.add_argument("--results", default=None, help="results folder (default: results/)")
    blueprint(commands.add_parser("diagram", help="the topology as a Mermaid graph"))
    render = commands.add_parser("render", help="write manifests and monitoring files; touches no cluster")
    options(render)
    render.add_argument("--out", required=True, help="folder to write into")
    apply = commands.add_parser("apply", help="write, then kubectl apply to the current context")
    options(apply)
    apply.add_argument("--out", default=None, help="folder to write into (default ai-system-deploy/<name>)")
    apply.add_argument("--dry-run", choices=DRY_RUNS, default=None,
                       help="server: the API server validates and admits everything, nothing is persisted")
    commands.add_parser("examples", help="regenerate the checked-in examples in deployment/ from architectures/")
    sidecar = commands.add_parser("train-exporter", help="serve a training log (JSON lines) as Prometheus metrics")
    sidecar.add_argument("--log-file", required=True, help="the trainer's --log-file")
    sidecar.add_argument("--host", default="127.0.0.1")
    sidecar.add_argument("--port", type=int, default=exporter.EXPORTER_PORT)
    picture = commands.add_parser("dashboard-snapshot", help="serve, scrape with a local Prometheus, load, and draw "
                                                             "the dashboard's serving panels from the scraped data")
    picture.add_argument("--out", required=True, help="PNG file")
    picture.add_argument("--seconds", type=float, default=20.0, help="seconds of load at each of the rates")
    parser.set_defaults(func=run_command)
