"""The import graph points downward only: no package imports one above it (docs/architecture.md).

A package may import its own modules and packages on lower layers; packages on one layer
(``training`` and ``inference``, say) do not import each other. The systems on top are layered too:
the recommender retrieves through the search index, the blueprint uses the planners, and the
deployment renders the blueprint and the scheduler.
"""

from __future__ import annotations

import ast
from pathlib import Path

import ai_system

PACKAGE_ROOT = Path(ai_system.__file__).parent
LAYERS: dict[str, int] = {
    "ops": 0, "data": 0, "bench": 0,
    "models": 1,
    "distributed": 2,
    "training": 3, "inference": 3,
    "serving": 4,
    "planning": 5, "search": 5, "resources": 5, "report": 5,
    "recsys": 6, "architecture": 6,
    "deployment": 7,
}
TOP_LEVEL = {"__init__", "cli"}


def package_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "ai_system" else None


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            if node.module == "ai_system":
                found |= {f"ai_system.{alias.name}" for alias in node.names}
    return found


def test_every_package_has_a_layer() -> None:
    packages = {p.stem for p in PACKAGE_ROOT.iterdir() if p.name != "__pycache__"} - TOP_LEVEL
    assert packages <= set(LAYERS), f"give {sorted(packages - set(LAYERS))} a layer here and in docs/architecture.md"


def test_no_module_imports_a_layer_above_its_own() -> None:
    upward = []
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        relative = path.relative_to(PACKAGE_ROOT)
        if len(relative.parts) == 1:
            continue
        own = relative.parts[0]
        for module in imports(path):
            target = package_of(module)
            if target is None or target == own or target in TOP_LEVEL:
                continue
            if LAYERS[target] >= LAYERS[own]:
                upward.append(f"{relative} imports {module} ({own}: layer {LAYERS[own]} → {target}: "
                              f"layer {LAYERS[target]})")
    assert not upward, "\n".join(upward)
