"""Reading node lists and pod lists in the Alibaba GPU trace format (cluster-trace-gpu-v2023, "openb").

Node list columns: ``sn, cpu_milli, memory_mib, gpu, model``. Pod list columns: ``name, cpu_milli,
memory_mib, num_gpu, gpu_milli`` and optionally ``gpu_spec`` (allowed models, ``|``-separated),
``creation_time, deletion_time, scheduled_time`` (seconds) and our own ``gang`` (rows sharing a
name form one all-or-nothing job). A malformed node row is an error (the cluster must be exact); a
malformed pod row becomes a ``Rejected`` record with its line and reason, so nothing is dropped
silently.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from ai_system.resources.cluster import MILLI, NodeSpec, Task

TRACE_ENV = "AISYS_ALIBABA_TRACE_DIR"
TRACE_NAME = "alibaba-gpu-v2023"
_REPO_ROOT = Path(__file__).resolve().parents[2]
NODE_COLUMNS = ("sn", "cpu_milli", "memory_mib", "gpu", "model")
POD_COLUMNS = ("name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli")
POD_LISTS = ("default", "multigpu20", "gpushare40", "gpuspec33")


class TraceError(ValueError):
    """A node or pod list that cannot be read at all (missing file or column, malformed node row)."""


@dataclass(frozen=True)
class Rejected:
    """A task that was not scheduled, and why (malformed row, never fits, unknown GPU model)."""

    name: str
    reason: str


def trace_dir() -> Path | None:
    """Where the trace is: ``$AISYS_ALIBABA_TRACE_DIR``, else ``<repo>/../shared/data/...``, else ``/work/shared``."""
    candidates = [Path(os.environ[TRACE_ENV])] if os.environ.get(TRACE_ENV) else []
    candidates += [_REPO_ROOT.parent / "shared" / "data" / TRACE_NAME, Path("/work/shared/data") / TRACE_NAME]
    return next((path for path in candidates if (path / "openb_node_list_all_node.csv").is_file()), None)


def node_list_path(name: str = "all_node") -> Path:
    return _require_trace_dir() / f"openb_node_list_{name}.csv"


def pod_list_path(name: str = "default") -> Path:
    return _require_trace_dir() / f"openb_pod_list_{name}.csv"


def _require_trace_dir() -> Path:
    found = trace_dir()
    if found is None:
        raise TraceError(f"the Alibaba GPU trace is not here: set {TRACE_ENV} to the folder holding "
                         f"openb_node_list_all_node.csv, or place it at ../shared/data/{TRACE_NAME}")
    return found


def _rows(path: Path, required: tuple[str, ...]) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    if not Path(path).is_file():
        raise TraceError(f"{path}: no such file")
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        missing = [column for column in required if column not in columns]
        if missing:
            raise TraceError(f"{path}: missing column(s) {missing}; expected at least {list(required)}, got {columns}")
        return columns, [(reader.line_num, row) for row in reader]


def _integer(row: dict[str, str | None], column: str, *, optional: bool = False) -> int | None:
    text = (row.get(column) or "").strip()
    if not text and optional:
        return None
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{column}={text!r}, expected a non-negative integer") from None
    if value < 0:
        raise ValueError(f"{column}={value}, expected a non-negative integer")
    return value


def load_nodes(path: str | Path) -> list[NodeSpec]:
    """Every node of a node list; raises ``TraceError`` naming the line and field of a malformed row."""
    _, rows = _rows(Path(path), NODE_COLUMNS)
    nodes = []
    for line, row in rows:
        try:
            gpus = _integer(row, "gpu")
            model = (row.get("model") or "").strip()
            if gpus and not model:
                raise ValueError(f"gpu={gpus} with an empty model, expected the GPU model name")
            nodes.append(NodeSpec(name=(row.get("sn") or "").strip() or f"line-{line}",
                                  cpu_milli=_integer(row, "cpu_milli"), memory_mib=_integer(row, "memory_mib"),
                                  gpus=gpus, gpu_model=model if gpus else ""))
        except ValueError as error:
            raise TraceError(f"{path}:{line}: {error}") from None
    if not nodes:
        raise TraceError(f"{path}: no node rows")
    return nodes


def parse_task(row: dict[str, str | None], line: int) -> Task:
    """One pod-list row as a ``Task``; ``ValueError`` names the bad field and what was expected."""
    name = (row.get("name") or "").strip() or f"line-{line}"
    num_gpu, gpu_milli = _integer(row, "num_gpu"), _integer(row, "gpu_milli")
    if gpu_milli > MILLI:
        raise ValueError(f"gpu_milli={gpu_milli}, expected at most {MILLI} (one whole GPU) per GPU")
    spec = (row.get("gpu_spec") or "").strip()
    creation, deletion = _integer(row, "creation_time", optional=True), _integer(row, "deletion_time", optional=True)
    if creation is not None and deletion is not None and deletion < creation:
        raise ValueError(f"deletion_time={deletion} before creation_time={creation}")
    return Task(name=name, cpu_milli=_integer(row, "cpu_milli"), memory_mib=_integer(row, "memory_mib"),
                num_gpu=num_gpu, gpu_milli=gpu_milli,
                gpu_models=frozenset(model for model in spec.split("|") if model),
                creation=creation, deletion=deletion, scheduled=_integer(row, "scheduled_time", optional=True),
                gang=(row.get("gang") or "").strip())


def load_tasks(path: str | Path) -> tuple[list[Task], list[Rejected]]:
    """The tasks of a pod list in file order, and a ``Rejected`` record for every malformed row."""
    _, rows = _rows(Path(path), POD_COLUMNS)
    tasks, rejected = [], []
    for line, row in rows:
        try:
            tasks.append(parse_task(row, line))
        except ValueError as error:
            name = (row.get("name") or "").strip() or f"line-{line}"
            rejected.append(Rejected(name, f"{Path(path).name}:{line}: {error}"))
    return tasks, rejected
