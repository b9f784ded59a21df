"""``ai-system``: one entry point for the project's commands.

Each command lives beside the code it drives and contributes an ``add_parser(subparsers)`` that
registers itself and sets ``func``; this module only lists them.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = (
    "ai_system.report.cli",
    "ai_system.planning.cli",
    "ai_system.inference.server",
    "ai_system.inference.loadgen",
    "ai_system.training.cli",
    "ai_system.recsys.casestudy",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ai-system", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
