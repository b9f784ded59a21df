"""``ai-system``: one entry point for the project's commands.

Each command lives beside the code it drives and contributes an ``add_parser(subparsers)`` that
registers itself under its name and sets ``func``; this module only maps names to modules. Only the
module of the command being run is imported (the others pull in torch, FastAPI, Redis clients),
except for ``--help``, which lists them all.
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys
from collections.abc import Callable
from typing import NoReturn

COMMAND_MODULES = {
    "report": "ai_system.report.cli",
    "plan": "ai_system.planning.cli",
    "serve": "ai_system.serving.server",
    "loadtest": "ai_system.serving.loadgen",
    "hub-cache": "ai_system.serving.hub_cache",
    "train": "ai_system.training.cli",
    "recommender": "ai_system.recsys.casestudy",
    "schedule": "ai_system.resources.cli",
    "deploy": "ai_system.deployment.cli",
    "search": "ai_system.search.cli",
}


class CommandParser(argparse.ArgumentParser):
    """A configuration error is one line naming the bad value and what was expected, and exit code 2
    (argparse would print the whole usage first); subcommand parsers inherit this class."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def number(kind: type[int] | type[float], low: float | None = None, high: float | None = None, *,
           low_open: bool = False, allow_inf: bool = False) -> Callable[[str], int | float]:
    """An argparse ``type``: the text as ``kind`` within [low, high] (``low_open``: above ``low``); NaN and
    infinities are refused unless ``allow_inf``. The error names the text and the range expected."""
    noun = "an integer" if kind is int else "a number"
    if low is not None and high is not None:
        expected = f"{noun} in {'(' if low_open else '['}{low:g}, {high:g}]"
    elif low is not None:
        expected = f"{noun} {'>' if low_open else '>='} {low:g}"
    else:
        expected = noun if high is None else f"{noun} <= {high:g}"
    expected += " or inf" if allow_inf else ""

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if kind is float and math.isinf(value) and allow_inf and value > 0:
            return value
        below = low is not None and (value <= low if low_open else value < low)
        if (kind is float and not math.isfinite(value)) or below or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser with every command, or with ``command`` alone when it is known."""
    parser = CommandParser(prog="ai-system", description=__doc__.splitlines()[0])
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
