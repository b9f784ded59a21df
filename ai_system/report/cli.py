"""``ai-system report``: results/ → docs/results/; ``--compare RUN_A RUN_B``: what changed between two runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ai_system.bench.harness import REPO_ROOT, results_dir
from ai_system.report.compare import DEFAULT_THRESHOLD, comparison_text, find_run
from ai_system.report.load import load_results
from ai_system.report.pages import write_pages


def run(args: argparse.Namespace) -> int:
    if not args.results.is_dir():
        print(f"ai-system report: results directory {args.results} does not exist; run `make bench` first",
              file=sys.stderr)
        return 2
    if args.compare:
        try:
            paths = [find_run(spec, args.results) for spec in args.compare]
            print(comparison_text(*paths, threshold=args.threshold), end="")
        except ValueError as error:
            print(f"ai-system report: {error}", file=sys.stderr)
            return 2
        return 0
    results = load_results(args.results)
    for warning in results.warnings:
        print(f"ai-system report: {warning}", file=sys.stderr)
    written = write_pages(results, args.out)
    print(f"report: {len(results.rows)} figures from {args.results} → {len(written)} files in {args.out}")
    return 0


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"threshold must be a fraction between 0 and 1, got {text}")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("report", help="publish results/ as the site's results pages, or compare two runs")
    parser.add_argument("--results", type=Path, default=results_dir(), help="results folder (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "results",
                        help="pages folder (default: %(default)s)")
    parser.add_argument("--compare", nargs=2, metavar=("RUN_A", "RUN_B"),
                        help="print every figure's change from RUN_A to RUN_B (a results file, or a run name "
                             "such as 20261127T091945Z-full) instead of writing pages")
    parser.add_argument("--threshold", type=_fraction, default=DEFAULT_THRESHOLD,
                        help="relative noise band for figures without a measured spread (default: %(default)s)")
    parser.set_defaults(func=run)
