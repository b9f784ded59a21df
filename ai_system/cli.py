"""``ai-system``: one entry point for the project's commands.

Each command lives beside the code it drives and contributes an ``add_parser(subparsers)`` that
registers itself under its name and sets ``func``; this module only maps names to modules. Only the
module of the command being run is imported (the others pull in torch, FastAPI, Redis clients),
except for ``--help``, which lists them all.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = {
    "report": "ai_system.report.cli",
    "plan": "ai_system.planning.cli",
    "serve": "ai_system.serving.server",
    "loadtest": "ai_system.serving.loadgen",
    "train": "ai_system.training.cli",
    "recommender": "ai_system.recsys.casestudy",
    "schedule": "ai_system.resources.cli",
    "search": "ai_system.search.cli",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser with every command, or with ``command`` alone when it is known."""
    parser = argparse.ArgumentParser(prog="ai-system", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in COMMAND_MODULES.items():
        if command in (None, name):
            importlib.import_module(module_name).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = argv[0] if argv and argv[0] in COMMAND_MODULES else None
    args = build_parser(command).parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
