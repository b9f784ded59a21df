"""Detail and history tables: results selected, grouped and pivoted with pandas.

A benchmark publishes many figures per setting (latency p50, p99, throughput... at each offered
load). Listed one per line they read as a dump; pivoted, with one row per setting and one column
per figure (unit in the header), they read as a table. Settings shared by the whole table move to
a one-line caption.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd

from ai_system.bench.metrics import AREAS
from ai_system.report.format import format_param, human, params_label, with_spread
from ai_system.report.load import Row

EMPTY = "—"
# Below this share of filled cells a pivot is mostly holes: list the figures one per line instead.
DENSE_ENOUGH = 0.5


@dataclass(frozen=True)
class Table:
    title: str
    caption: str
    header: list[str]
    rows: list[list[str]]


def short_names(names: list[str]) -> dict[str, str]:
    """Metric names without the area prefix and the leading and trailing words every name of the
    group shares, as long as each keeps two words (``memory error``, not ``memory``)."""
    parts = {name: name.split("_") for name in names}
    parts = {name: p[1:] if len(p) > 1 and p[0] in AREAS else p for name, p in parts.items()}
    if len(parts) > 1:
        split = list(parts.values())
        head = 0
        while all(len(p) > head + 2 and p[head] == split[0][head] for p in split):
            head += 1
        tail = 0
        while all(len(p) > head + tail + 2 and p[-1 - tail] == split[0][-1 - tail] for p in split):
            tail += 1
        parts = {name: p[head:len(p) - tail] for name, p in parts.items()}
    return {name: human("_".join(p)) for name, p in parts.items()}


def _title(test_function: str) -> str:
    return human(re.sub(r"^test_", "", test_function)).capitalize()


def detail_tables(rows: list[Row]) -> list[Table]:
    """Tables of one run's figures on one hardware: per benchmark function, per set of parameters.

    Figures of one function that take different parameters (a sweep and its summary) get a table
    each, titled once.
    """
    groups: dict[tuple[str, tuple[str, ...]], list[Row]] = {}
    for row in rows:
        groups.setdefault((row.test_function, tuple(sorted(row.metric.params))), []).append(row)
    tables = []
    seen: set[str] = set()
    for (test, _), group in groups.items():
        tables.append(_pivot("" if test in seen else _title(test), group))
        seen.add(test)
    return tables


def _pivot(title: str, rows: list[Row]) -> Table:
    names = short_names(list(dict.fromkeys(row.metric.name for row in rows)))
    keys = list(dict.fromkeys(key for row in rows for key in row.metric.params))
    frame = pd.DataFrame.from_records([
        {**{key: format_param(row.metric.params[key]) if key in row.metric.params else EMPTY for key in keys},
         "_name": names[row.metric.name], "_figure": f"{names[row.metric.name]} ({row.metric.unit})",
         "_value": with_spread(row.metric.value, row.metric.spread), "_unit": row.metric.unit} for row in rows],
        columns=[*keys, "_name", "_figure", "_value", "_unit"])
    shared = [key for key in keys if frame[key].nunique() == 1]
    caption = " · ".join(f"{human(key)} {frame[key].iloc[0]}" for key in shared)
    varying = [key for key in keys if key not in shared]
    header = [human(key) for key in varying]
    figures = list(dict.fromkeys(frame["_figure"]))
    if varying:
        wide = frame.pivot_table(index=varying, columns="_figure", values="_value", aggfunc="first", sort=False)
    else:
        wide = frame.set_index("_figure")[["_value"]].T
    wide = wide.reindex(columns=figures)
    if wide.notna().to_numpy().mean() >= DENSE_ENOUGH:
        body = [[*(_parts(key) if varying else []), *(EMPTY if pd.isna(value) else value for value in values)]
                for key, values in zip(wide.index, wide.to_numpy().tolist(), strict=True)]
        return Table(title, caption, header + figures, body)
    body = [[*(record[key] for key in varying), record["_name"], f"{record['_value']} {record['_unit']}"]
            for record in frame.to_dict("records")]
    return Table(title, caption, header + ["figure", "value"], body)


def _parts(key: object) -> list[str]:
    return [str(part) for part in key] if isinstance(key, tuple) else [str(key)]


def history_table(rows: list[Row]) -> Table:
    """Every figure measured in more than one run on one hardware: a row per figure, a column per run."""
    frame = pd.DataFrame.from_records([
        {"figure": f"{row.metric.name} · {params_label(row.metric.params)}", "unit": row.metric.unit,
         "run": f"{row.run.when[:10]} {row.run.profile}", "value": with_spread(row.metric.value, row.metric.spread)}
        for row in rows])
    runs_per_figure = frame.groupby("figure")["run"].nunique()
    frame = frame[frame["figure"].isin(runs_per_figure[runs_per_figure > 1].index)]
    if frame.empty:
        return Table("", "", [], [])
    wide = frame.pivot_table(index=["figure", "unit"], columns="run", values="value", aggfunc="first", sort=False)
    body = [[figure, unit, *(EMPTY if pd.isna(v) else v for v in values)]
            for (figure, unit), values in zip(wide.index, wide.to_numpy().tolist(), strict=True)]
    return Table("", "", ["figure", "unit", *wide.columns], body)
