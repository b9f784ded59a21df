"""Write the results pages: a headline per system, the seed's table, details, history and plots.

Every page opens with what a new reader needs in ten seconds: what was measured, against what, on
which hardware, and whether it met its goal. Details follow, from the newest run only; older runs
live on the history page. Pages are Markdown for MkDocs, plots PNGs beside them, and the output
depends only on the results files, so the same ``results/`` always gives the same pages.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from ai_system.bench.metrics import AREAS, SEED_PERFORMANCE, Metric, SeedRow, meets
from ai_system.report.format import (
    collapsed,
    figure,
    format_value,
    markdown_table,
    slug,
    status_badge,
)
from ai_system.report.headline import HEADER, Headline, headlines, not_measured_row
from ai_system.report.load import Results, Row, Run, Skipped, newest_rows
from ai_system.report.plots import plot_curve, plot_history, plot_vs_x
from ai_system.report.tables import Table, detail_tables, history_table

IMAGE_DIR = "img"
HOME_SUMMARY = "home-summary.md"
STYLESHEET = "results.css"
NOT_MEASURED = "not yet measured"
READING_GUIDE = (
    "**How to read this**: each row is a question one benchmark answers. *Ours* is our figure, "
    "*compared with* is the peer or limit it is judged against (plain torch, FAISS, redis-benchmark, "
    "the hardware peak measured in the same run, a formula, an SLO), *ratio* is ours against it and "
    "the status says whether the goal was met. Figures in brackets are the min–max over repeats.")
BASELINE_KIND_TEXT = {"peer": "a peer", "peak": "a measured peak", "limit": "a limit", "formula": "a formula"}
CSS = """\
.md-grid { max-width: 90rem; }
.aisys-status { padding: 0 .35em; border-radius: .25em; white-space: nowrap; font-weight: 600; }
.aisys-met { background: #d8f0dd; color: #14532d; }
.aisys-not-met { background: #fadbd8; color: #7f1d1d; }
.aisys-no-goal { background: #eceff1; color: #37474f; }
.aisys-not-measured { background: #fff4ce; color: #6b4e00; }
"""


def _by_hardware(rows: list[Row]) -> dict[str, list[Row]]:
    grouped: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        grouped[row.run.hardware_slug].append(row)
    return dict(sorted(grouped.items()))


def _runs_line(rows: list[Row]) -> str:
    """``**label** · run 2026-11-27 09:34 UTC, profile full, commit abc1234`` for the runs behind ``rows``."""
    runs = sorted({row.run for row in rows}, key=lambda run: run.datetime, reverse=True)
    described = "; ".join(f"{run.when}, `{run.profile}` profile, commit `{run.short_commit}`" for run in runs)
    return f"**{runs[0].hardware_label}** · {'runs' if len(runs) > 1 else 'run'} {described}"


def _table_lines(table: Table) -> list[str]:
    lines = markdown_table(table.header, table.rows)
    return collapsed(lines, table.title or "Table", len(table.rows))


# ---------------------------------------------------------------- summaries


def goal_summary(rows: list[Row]) -> tuple[str, str]:
    """(status, "k of n goals met") over the headlines of one system on one hardware."""
    heads = [head for head in headlines(rows) if head.judged]
    if not heads:
        return "no-goal", "no goal declared yet"
    met = sum(head.status == "met" for head in heads)
    return ("met" if met == len(heads) else "not-met"), f"{met} of {len(heads)} goals met"


def summary_rows(newest: list[Row], link: Callable[[str], str]) -> list[list[str]]:
    """One line per system and hardware: goals met, hardware, newest run; ``link`` makes the page link."""
    lines = []
    for area, title in AREAS.items():
        area_rows = [row for row in newest if row.metric.area == area]
        if not area_rows:
            continue
        for hardware_rows in _by_hardware(area_rows).values():
            status, text = goal_summary(hardware_rows)
            newest_run = max((row.run for row in hardware_rows), key=lambda run: run.datetime)
            lines.append([f"[{title}]({link(area)})", status_badge(status, text=text),
                          f"{len(headlines(hardware_rows))}", newest_run.hardware_label, newest_run.when])
    return lines


SUMMARY_HEADER = ["System", "Goals", "Questions", "Hardware", "Newest run"]


def home_summary(newest: list[Row]) -> str:
    """The home page's results table (links relative to the docs root); ``docs/hooks`` inserts it."""
    if not newest:
        return "No results yet: run `make bench` to measure this machine.\n"
    lines = summary_rows(newest, lambda area: f"results/{area}.md")
    return "\n".join(markdown_table(SUMMARY_HEADER, lines)) + "\n"


# ---------------------------------------------------------------- seed table


def _best(rows: list[Row], seed: SeedRow) -> Row | None:
    if not rows:
        return None
    return max(rows, key=lambda row: row.metric.value if seed.better == "higher" else -row.metric.value)


def seed_table_rows(newest: list[Row], every_row: list[Row]) -> list[list[str]]:
    """The seed's Performance table: one row per seed metric.

    *Measured* is our best figure in the target's unit at the scale we ran; *projected* is the
    figure at the seed's scale by the named model, judged against the target; any other projected
    quantity (replicas, cost) goes in that cell's note, never in a latency or throughput cell.
    ``every_row`` (all runs) tells "never measured" from "not in the newest run".
    """
    lines = []
    for key, seed in SEED_PERFORMANCE.items():
        speaking = [row for row in newest if row.metric.seed_row == key]
        in_unit = [row for row in speaking if row.metric.unit == seed.target_unit]
        best = _best([row for row in in_unit if row.metric.kind == "measured"], seed)
        projected = [row for row in in_unit if row.metric.kind == "projected"]
        others = [row for row in speaking if row.metric.kind == "projected" and row not in in_unit]
        older = any(row.metric.seed_row == key and row.metric.kind == "measured" for row in every_row)
        measured_cell = ("none in the newest run; older runs: [history](history.md)" if older else NOT_MEASURED) \
            if best is None else (
            f"{figure(best.metric)}<br><small>{best.metric.scale}; {best.run.hardware_label}, {best.run.date}</small>")
        lines.append([seed.metric, seed.target, measured_cell, _projection_cell(seed, projected, others),
                      f"{seed.seed_achieved} ({seed.scale})", _evidence(speaking)])
    return lines


def _projection_cell(seed: SeedRow, projected: list[Row], others: list[Row]) -> str:
    if not projected:
        return "not yet projected"
    values = sorted(row.metric.value for row in projected)
    text = format_value(values[0]) if len(values) == 1 else f"{format_value(values[0])}–{format_value(values[-1])}"
    worst = values[0] if seed.better == "higher" else values[-1]
    status = "met" if meets(worst, seed.target_value, seed.better) else "not-met"
    models = sorted({row.metric.projection.model for row in projected if row.metric.projection})
    note = f"by {', '.join(models)}" + (f"; at that scale also {', '.join(figure(row.metric) for row in others)}"
                                        if others else "")
    return f"{text} {seed.target_unit} {status_badge(status, 'vs target')}<br><small>{note}</small>"


def _evidence(rows: list[Row]) -> str:
    areas = list(dict.fromkeys(row.metric.area for row in rows))
    return ", ".join(f"[{AREAS[area]}]({area}.md)" for area in areas) or "—"


# ---------------------------------------------------------------- pages


def overview_page(results: Results, newest: list[Row], has_compare: bool) -> str:
    lines = [
        "# Results",
        "",
        "Every figure here is read from a results file in `results/` by `ai-system report`; nothing is typed "
        "in by hand. **Measured** figures ran on the hardware named beside them; **projected** figures name the "
        "model that produced them, and their page lists the measured inputs it used.",
        "",
        "## At a glance",
        "",
    ]
    if newest:
        lines += markdown_table(SUMMARY_HEADER, summary_rows(newest, lambda area: f"{area}.md"))
    else:
        lines.append("No results yet: run `make bench` to measure this machine.")
    lines += ["", "## The seed's performance table", "",
              "Target and claim are the seed README's. *Measured* is our best figure at the scale we ran; "
              "*projected* carries it to the seed's scale with the model named, and is the figure judged "
              "against the target.", ""]
    lines += markdown_table(["Seed metric", "Target", "Measured (best)", "Projected to the seed's scale",
                             "Seed's claim", "Evidence"], seed_table_rows(newest, results.rows))
    lines += ["", "## Hardware measured", ""]
    runs_by_hardware: dict[str, list[Run]] = defaultdict(list)
    for run in results.runs:
        runs_by_hardware[run.hardware_slug].append(run)
    peaks = defaultdict(list)
    for row in newest:
        if row.metric.area == "hardware":
            peaks[row.run.hardware_slug].append(f"{row.metric.name}: {figure(row.metric)}")
    hardware_rows = [[runs[-1].hardware_label, "<br>".join(peaks[slug_]) or NOT_MEASURED, str(len(runs)),
                      runs[-1].when, runs[-1].short_commit] for slug_, runs in sorted(runs_by_hardware.items())]
    if hardware_rows:
        lines += markdown_table(["Hardware", "Measured peaks", "Runs", "Newest run", "Commit"], hardware_rows)
    else:
        lines.append("No results yet: run `make bench` to measure this machine.")
    lines += ["", "Older runs: [history](history.md)." + (" Hardware side by side: [compare](compare.md)."
                                                         if has_compare else ""),
              "To see what changed between two runs, with noise bands, before merging: "
              "`ai-system report --compare RUN_A RUN_B` (run names as listed on the history page)."]
    return "\n".join(lines) + "\n"


def area_page(area: str, newest: list[Row], skipped: list[Skipped], image_dir: Path) -> str:
    """The page for one system; writes its plots into ``image_dir``."""
    area_rows = [row for row in newest if row.metric.area == area]
    lines = [f"# {AREAS[area]} results", "", READING_GUIDE, "", "## At a glance"]
    per_hardware = _by_hardware(area_rows)
    all_questions = list(dict.fromkeys(row.metric.question for row in area_rows if row.metric.question))
    for hardware_slug, hardware_rows in per_hardware.items():
        heads = headlines(hardware_rows)
        answered = {head.question for head in heads}
        lines += ["", _runs_line(hardware_rows), ""]
        if all_questions:
            body = [head.cells() for head in heads] + [not_measured_row(q) for q in all_questions if q not in answered]
            lines += markdown_table(HEADER, body)
        else:
            lines.append("No benchmark of this system declares a question and goal yet; its figures are below.")
        lines += _not_measured(skipped, area, hardware_slug, {row.test for row in hardware_rows})
    lines += _plots(area, area_rows, image_dir)
    lines += ["", "## Details", "", "Newest run only; every earlier run is on the "
              f"[history page](history.md#{slug(AREAS[area])}).", ""]
    for hardware_rows in per_hardware.values():
        lines += [f"### {hardware_rows[0].run.hardware_label}", ""]
        for table in detail_tables(hardware_rows):
            if table.title:
                lines += [f"#### {table.title}", ""]
            if table.caption:
                lines += [f"*Setting:* {table.caption}", ""]
            lines += [*_table_lines(table), ""]
        lines += _notes(hardware_rows)
    return "\n".join(lines).rstrip() + "\n"


def _not_measured(skipped: list[Skipped], area: str, hardware_slug: str, measured_tests: set[str]) -> list[str]:
    """Benchmarks of this system that skipped on this hardware and never ran there, grouped by function."""
    reasons: dict[str, set[str]] = defaultdict(set)
    cases: dict[str, set[str]] = defaultdict(set)
    for skip in skipped:
        if skip.area == area and skip.run.hardware_slug == hardware_slug and skip.test not in measured_tests:
            function = skip.test.split("::")[-1].split("[")[0]
            reasons[function].add(skip.reason)
            cases[function].add(skip.test)
    if not reasons:
        return []
    lines = ["", "Not measured on this hardware:", ""]
    for function, why in sorted(reasons.items()):
        count = len(cases[function])
        lines.append(f"- `{function}`{f' ({count} cases)' if count > 1 else ''}: {'; '.join(sorted(why))}")
    return lines


def _notes(rows: list[Row]) -> list[str]:
    """One bullet per figure name: what it is, what it is compared with, how it was projected."""
    notes: dict[str, str] = {}
    for row in rows:
        metric = row.metric
        if metric.name not in notes and (metric.description or metric.baseline or metric.projection):
            notes[metric.name] = _note(metric)
    if not notes:
        return []
    lines = [f"- {text}" for text in notes.values()]
    return [*collapsed(lines, "What each figure is", len(lines)), ""]


def _note(metric: Metric) -> str:
    text = f"`{metric.name}`" + (f": {metric.description}" if metric.description else "")
    if metric.baseline is not None:
        text += f" — compared with {metric.baseline.name} ({BASELINE_KIND_TEXT[metric.baseline.kind]})"
    if metric.projection is not None:
        inputs = ", ".join(f"{key}={value}" for key, value in metric.projection.inputs.items())
        text += f" — projected by *{metric.projection.model}* from {inputs}"
    return text


def _plots(area: str, rows: list[Row], image_dir: Path) -> list[str]:
    lines: list[str] = []
    by_name: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        by_name[row.metric.name].append(row)
    for name, name_rows in by_name.items():
        if name_rows[0].metric.x and len(name_rows) > 1:
            file = f"{area}-{slug(name)}.png"
            plot_vs_x(name, name_rows, image_dir / file)
            lines += ["", f"![{name} against {name_rows[0].metric.x}]({IMAGE_DIR}/{file})"]
        if name_rows[0].metric.curve:
            file = f"{area}-{slug(name)}-curve.png"
            plot_curve(name, name_rows, image_dir / file)
            lines += ["", f"![{name}: its series]({IMAGE_DIR}/{file})"]
    return ["", "## Plots", *lines] if lines else []


def history_page(results: Results, image_dir: Path) -> str:
    """Every run on record, and every figure measured in more than one run, with its history plot."""
    lines = ["# Results history", "",
             "Every run on record, oldest first. The system pages show only each benchmark's newest run; "
             "here a figure measured in several runs gets a column per run and, for the headline figures, "
             "a plot of one point per run (min–max over repeats as error bars, never a line between runs).",
             "", "## Runs", ""]
    runs = results.runs
    if not runs:
        return "\n".join([*lines, "No results yet: run `make bench`."]) + "\n"
    figures = defaultdict(int)
    for row in results.rows:
        figures[row.run] += 1
    lines += markdown_table(["Run", "Hardware", "Profile", "Commit", "Figures"],
                            [[f"`{run.name}`", run.hardware_label, run.profile, f"`{run.short_commit}`",
                              str(figures[run])] for run in runs])
    for area, title in AREAS.items():
        area_rows = [row for row in results.rows if row.metric.area == area]
        if not area_rows:
            continue
        lines += ["", f"## {title}"]
        for hardware_rows in _by_hardware(area_rows).values():
            table = history_table(hardware_rows)
            lines += ["", f"### {hardware_rows[0].run.hardware_label}", ""]
            lines += _history_plots(area, hardware_rows, image_dir)
            if table.rows:
                lines += [*collapsed(markdown_table(table.header, table.rows), "Every figure, every run",
                                     len(table.rows)), ""]
            else:
                lines += ["Each figure has been measured in one run so far.", ""]
    return "\n".join(lines).rstrip() + "\n"


def _history_plots(area: str, rows: list[Row], image_dir: Path) -> list[str]:
    series: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for row in rows:
        if row.metric.question:
            series[row.series_key].append(row)
    by_name: dict[str, list[Row]] = defaultdict(list)
    for series_rows in series.values():
        if len({row.run for row in series_rows}) > 1:
            by_name[series_rows[0].metric.name] += series_rows
    lines = []
    for name, name_rows in by_name.items():
        file = f"history-{slug(rows[0].run.hardware_slug)}-{area}-{slug(name)}.png"
        plot_history(name, name_rows, image_dir / file)
        lines += [f"![{name}: every run]({IMAGE_DIR}/{file})", ""]
    return lines


def compare_page(newest: list[Row]) -> str:
    """Each system's questions side by side across hardware: the shown figure, ratio and status."""
    hardware = _by_hardware(newest)
    labels = {slug_: rows[0].run.hardware_label for slug_, rows in hardware.items()}
    lines = ["# Hardware compared", "", "The newest run of every benchmark on each hardware, question by question.",
             ""]
    for area, title in AREAS.items():
        by_question: dict[str, dict[str, Headline]] = defaultdict(dict)
        for slug_, rows in hardware.items():
            for head in headlines([row for row in rows if row.metric.area == area]):
                by_question[head.question][slug_] = head
        if not by_question:
            continue
        body = []
        for question, heads in by_question.items():
            cells = []
            for slug_ in hardware:
                head = heads.get(slug_)
                cells.append(status_badge("not-measured") if head is None else
                             f"{head.cells()[1]}<br>{status_badge(head.status, head.count_text)}")
            body.append([question, *cells])
        lines += [f"## [{title}]({area}.md)", "", *markdown_table(["Question", *labels.values()], body), ""]
    return "\n".join(lines).rstrip() + "\n"


def write_pages(results: Results, out_dir: Path) -> list[Path]:
    """Regenerate ``out_dir`` (``docs/results``): overview, a page per system, history, plots."""
    image_dir = out_dir / IMAGE_DIR
    image_dir.mkdir(parents=True, exist_ok=True)
    for stale in [*out_dir.glob("*.md"), *image_dir.glob("*.png")]:
        stale.unlink()
    newest = newest_rows(results.rows)
    has_compare = len({row.run.hardware_slug for row in newest}) > 1
    pages: dict[str, str] = {
        "index.md": overview_page(results, newest, has_compare),
        "history.md": history_page(results, image_dir),
        HOME_SUMMARY: home_summary(newest),
        STYLESHEET: CSS,
    }
    if has_compare:
        pages["compare.md"] = compare_page(newest)
    for area in AREAS:
        if any(row.metric.area == area for row in newest):
            pages[f"{area}.md"] = area_page(area, newest, results.skipped, image_dir)
    written = []
    for name, text in pages.items():
        (out_dir / name).write_text(text)
        written.append(out_dir / name)
    return written + sorted(image_dir.glob("*.png"))
