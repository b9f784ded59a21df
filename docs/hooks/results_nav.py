"""MkDocs hook: results pages in the navigation, and the results summary on the home page.

``ai-system report`` writes one page per system that has results; which ones exist depends on what
has been measured, so the nav is completed at build time instead of by hand. It also writes the
home page's summary table as a fragment; the home page's ``<!-- results-summary -->`` line is
replaced by it, and the fragment itself is not published as a page.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ai_system.bench.metrics import AREAS

RESULTS_INDEX = "results/index.md"
SUMMARY_FRAGMENT = "results/home-summary.md"
SUMMARY_MARKER = "<!-- results-summary -->"
EXTRA_PAGES = {"history": "History", "compare": "Hardware compared"}


def on_config(config: Any) -> Any:
    results_dir = Path(config["docs_dir"]) / "results"
    pages = [{title: f"results/{name}.md"} for name, title in [*AREAS.items(), *EXTRA_PAGES.items()]
             if (results_dir / f"{name}.md").exists()]
    for position, item in enumerate(config["nav"]):
        if isinstance(item, dict) and item.get("Results") == RESULTS_INDEX:
            config["nav"][position] = {"Results": [RESULTS_INDEX, *pages]}
    return config


def on_files(files: Any, config: Any) -> Any:
    fragment = files.get_file_from_path(SUMMARY_FRAGMENT)
    if fragment is not None:
        files.remove(fragment)
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if page.file.src_uri != "index.md" or SUMMARY_MARKER not in markdown:
        return markdown
    fragment = Path(config["docs_dir"]) / SUMMARY_FRAGMENT
    summary = fragment.read_text() if fragment.exists() else "No results yet: run `make bench`.\n"
    return markdown.replace(SUMMARY_MARKER, summary)
