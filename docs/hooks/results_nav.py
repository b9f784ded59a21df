"""MkDocs hook: list the generated results pages under "Results" in the navigation.

``ai-system report`` writes one page per area that has results; which ones exist depends on what
has been measured, so the nav is completed at build time instead of by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ai_system.bench.metrics import AREAS

RESULTS_INDEX = "results/index.md"


def on_config(config: Any) -> Any:
    results_dir = Path(config["docs_dir"]) / "results"
    area_pages = [{title: f"results/{area}.md"} for area, title in AREAS.items()
                  if (results_dir / f"{area}.md").exists()]
    for position, item in enumerate(config["nav"]):
        if isinstance(item, dict) and item.get("Results") == RESULTS_INDEX:
            config["nav"][position] = {"Results": [RESULTS_INDEX, *area_pages]}
    return config
