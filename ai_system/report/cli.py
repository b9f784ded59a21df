"""``ai-system report``: results/ → docs/results/."""

from __future__ import annotations

import argparse
from pathlib import Path

from ai_system.bench.harness import REPO_ROOT, results_dir
from ai_system.report.load import load_results
from ai_system.report.pages import write_pages


def run(args: argparse.Namespace) -> int:
    if not args.results.is_dir():
        raise SystemExit(f"results directory {args.results} does not exist; run `make bench` first")
    rows, skipped = load_results(args.results)
    written = write_pages(rows, skipped, args.out)
    print(f"report: {len(rows)} figures from {args.results} → {len(written)} files in {args.out}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("report", help="publish results/ as the site's results pages")
    parser.add_argument("--results", type=Path, default=results_dir(), help="results folder (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "results",
                        help="pages folder (default: %(default)s)")
    parser.set_defaults(func=run)
