"""Large-scale training runs as their sources published them, to hold the capacity planner against.

``published_runs.csv`` holds one row per measured run with its citation, its layout and its
throughput in the unit the source printed. Sources count FLOPs differently (Megatron-LM's Table 1
counts the recompute forward pass, MFU does not; torchtitan counted the input embedding in MFU
until May 2024), so every conversion goes through tokens per second per GPU, the one quantity no
convention touches: a FLOP-based figure is divided by the source's own FLOPs per token
(``FLOP_CONVENTIONS``) and a caller multiplies by its own. Empty cells are facts the source did
not publish; ``docs/systems/published-runs.md`` says, source by source, how each counts FLOPs.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

from ai_system.models.config import ModelConfig

PUBLISHED_RUNS_CSV = Path(__file__).with_name("published_runs.csv")

MLP_TYPES = ("gelu", "swiglu")
RECOMPUTE = ("none", "selective", "full")
"""The planner's recomputation options, spelled alike so a row maps onto its layouts; kept here so
reading the table does not import torch through the planner."""
PRECISIONS = ("bf16", "fp16", "16bit", "fp8-linear")
"""``16bit``: the source says mixed precision without naming fp16 or bf16; ``fp8-linear``: torchtitan's
Float8 on ``nn.Linear`` with the rest in bf16."""

UNITS = {
    "tflops_per_gpu": "TFLOP/s per GPU, counted by the row's FLOP convention",
    "percent_of_peak": "MFU or % of peak: the row's convention divided by peak_tflops, in percent",
    "tokens_per_s_per_gpu": "tokens per second per GPU (all GPUs of the job)",
    "s_per_iteration": "seconds per optimizer step of global_batch sequences",
}


@dataclass(frozen=True)
class Measurement:
    """One published throughput figure, unconverted."""

    value: float
    unit: str

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise ValueError(f"unit {self.unit!r}: expected one of {sorted(UNITS)}")
        if not self.value > 0:
            raise ValueError(f"value {self.value!r}: expected a positive number")
        if self.unit == "percent_of_peak" and self.value > 100:
            raise ValueError(f"value {self.value!r} percent_of_peak: expected at most 100")


def _megatron_gpt_shape(run: PublishedRun) -> tuple[int, int, int, int]:
    """(L, h, s, V) for the GPT-block formulas, which assume multi-head attention and a 4h MLP."""
    if run.mlp != "gelu" or run.ffn_dim != 4 * run.dim or run.n_kv_heads != run.n_heads:
        raise ValueError(f"run {run.run_id!r}: the Megatron FLOP formulas count GPT blocks (MHA, 4h GeLU MLP), "
                         f"got mlp={run.mlp!r}, ffn_dim={run.ffn_dim}, n_kv_heads={run.n_kv_heads}")
    return run.n_layers, run.dim, run.seq_len, run.vocab_size


def _narayanan_eq3(run: PublishedRun) -> float:
    """Narayanan et al. (2021) Eq. 3 per token: blocks counted four forward passes (recompute included)."""
    layers, h, s, v = _megatron_gpt_shape(run)
    return 96 * layers * h**2 * (1 + s / (6 * h) + v / (16 * layers * h))


def _megatron_model_flops(run: PublishedRun) -> float:
    """Model FLOPs per token, 72·L·h²·(1 + s/6h + V/12hL): forward plus backward, no recompute."""
    layers, h, s, v = _megatron_gpt_shape(run)
    return 72 * layers * h**2 * (1 + s / (6 * h) + v / (12 * h * layers))


def _palm(run: PublishedRun) -> float:
    """6·N + 12·L·d·s with N the parameters without the input embedding (torchtitan from May 2024)."""
    return run.model_config().train_flops_per_token(run.seq_len)


def _palm_with_embedding(run: PublishedRun) -> float:
    """6·N + 12·L·d·s with N all parameters, input embedding included (torchtitan before May 2024)."""
    return _palm(run) + 6 * run.vocab_size * run.dim


FLOP_CONVENTIONS: dict[str, Callable[[PublishedRun], float]] = {
    "narayanan_eq3": _narayanan_eq3,
    "megatron_model": _megatron_model_flops,
    "palm_6n": _palm,
    "palm_6n_with_embedding": _palm_with_embedding,
}


@dataclass(frozen=True)
class PublishedRun:
    """One measured training run: model shape, layout and published throughput, with its citation.

    ``None`` means the source does not publish the field. ``tp``·``cp``·``pp``·``dp`` equals
    ``gpu_count`` wherever all four are given; ``cross_check`` is a second figure the source printed
    for the same run, which the conversions must reproduce.
    """

    run_id: str
    source: str
    reference: str
    url: str
    model: str
    n_layers: int
    dim: int
    n_heads: int
    n_kv_heads: int
    ffn_dim: int
    mlp: str
    vocab_size: int
    seq_len: int
    global_batch: int | None
    micro_batch: int | None
    gpu: str
    gpu_count: int
    tp: int | None
    cp: int | None
    pp: int | None
    dp: int | None
    interleaved: bool | None
    virtual_stages: int | None
    zero_stage: int | None
    recompute: str | None
    sequence_parallel: bool | None
    precision: str
    compile: bool | None
    throughput: Measurement
    cross_check: Measurement | None
    flop_convention: str
    peak_tflops: float | None
    notes: str

    def __post_init__(self) -> None:
        for name in ("run_id", "source", "reference", "url", "model", "gpu"):
            if not getattr(self, name).strip():
                raise ValueError(f"run {self.run_id!r}: {name} is empty; every row needs its citation and model")
        if not self.url.startswith("https://"):
            raise ValueError(f"run {self.run_id!r}: url {self.url!r}: expected an https:// link to the source")
        for name in ("n_layers", "dim", "n_heads", "n_kv_heads", "ffn_dim", "vocab_size", "seq_len", "gpu_count"):
            self._check_positive(name, getattr(self, name))
        for name in ("global_batch", "micro_batch", "tp", "cp", "pp", "dp", "virtual_stages"):
            if getattr(self, name) is not None:
                self._check_positive(name, getattr(self, name))
        self._check_choice("mlp", self.mlp, MLP_TYPES)
        self._check_choice("precision", self.precision, PRECISIONS)
        self._check_choice("flop_convention", self.flop_convention, tuple(FLOP_CONVENTIONS))
        if self.recompute is not None:
            self._check_choice("recompute", self.recompute, RECOMPUTE)
        if self.zero_stage is not None:
            self._check_choice("zero_stage", self.zero_stage, (0, 1, 2, 3))
        if self.dim % self.n_heads or self.n_heads % self.n_kv_heads:
            raise ValueError(f"run {self.run_id!r}: dim={self.dim}, n_heads={self.n_heads}, "
                             f"n_kv_heads={self.n_kv_heads}: expected heads dividing dim and KV heads dividing heads")
        if self.peak_tflops is not None:
            self._check_positive("peak_tflops", self.peak_tflops)
        self._check_layout()
        for measurement in filter(None, (self.throughput, self.cross_check)):
            if measurement.unit == "percent_of_peak" and self.peak_tflops is None:
                raise ValueError(f"run {self.run_id!r}: a percent_of_peak figure needs peak_tflops, the peak the "
                                 "source divided by")
            if measurement.unit == "s_per_iteration" and self.global_batch is None:
                raise ValueError(f"run {self.run_id!r}: an s_per_iteration figure needs global_batch")

    def _check_positive(self, name: str, value: float) -> None:
        if not value > 0:
            raise ValueError(f"run {self.run_id!r}: {name}={value!r}: expected a positive number")

    def _check_choice(self, name: str, value: object, options: tuple) -> None:
        if value not in options:
            raise ValueError(f"run {self.run_id!r}: {name}={value!r}: expected one of {list(options)}")

    def _check_layout(self) -> None:
        if self.world_size is not None and self.world_size != self.gpu_count:
            raise ValueError(f"run {self.run_id!r}: tp*cp*pp*dp = {self.tp}*{self.cp}*{self.pp}*{self.dp} = "
                             f"{self.world_size}, expected gpu_count={self.gpu_count}")
        if self.global_batch is None or self.dp is None:
            return
        if self.global_batch % self.dp:
            raise ValueError(f"run {self.run_id!r}: global_batch={self.global_batch} is not divisible by dp={self.dp}")
        if self.micro_batch is not None and (self.global_batch // self.dp) % self.micro_batch:
            raise ValueError(f"run {self.run_id!r}: micro_batch={self.micro_batch} does not divide the "
                             f"{self.global_batch // self.dp} sequences per data-parallel rank")

    @property
    def world_size(self) -> int | None:
        """tp·cp·pp·dp, or None where the source leaves one of them out."""
        sizes = (self.tp, self.cp, self.pp, self.dp)
        if any(size is None for size in sizes):
            return None
        return self.tp * self.cp * self.pp * self.dp

    def model_config(self) -> ModelConfig:
        """The row's shape as this project's model config (SwiGLU blocks only, as ``ModelConfig`` has)."""
        if self.mlp != "swiglu":
            raise ValueError(f"run {self.run_id!r}: ModelConfig has SwiGLU blocks; this run's MLP is {self.mlp!r} "
                             f"with ffn_dim={self.ffn_dim}")
        return ModelConfig(vocab_size=self.vocab_size, dim=self.dim, n_layers=self.n_layers, n_heads=self.n_heads,
                           n_kv_heads=self.n_kv_heads, ffn_dim=self.ffn_dim, max_seq_len=self.seq_len)

    def source_flops_per_token(self) -> float:
        """Training FLOPs per token as the source counts them (``flop_convention``)."""
        return FLOP_CONVENTIONS[self.flop_convention](self)

    def tokens_per_second_per_gpu(self, measurement: Measurement | None = None) -> float:
        """A published figure (the headline throughput by default) as tokens per second per GPU.

        A FLOP-based figure needs the source's FLOPs per token; a percentage also its peak; a step
        time the tokens of one step (global_batch·seq_len) spread over all GPUs.
        """
        figure = measurement or self.throughput
        if figure.unit == "tokens_per_s_per_gpu":
            return figure.value
        if figure.unit == "s_per_iteration":
            return self.global_batch * self.seq_len / (figure.value * self.gpu_count)
        if figure.unit == "tflops_per_gpu":
            return figure.value * 1e12 / self.source_flops_per_token()
        return figure.value / 100 * self.peak_tflops * 1e12 / self.source_flops_per_token()

    def model_tflops_per_gpu(self, flops_per_token: Callable[[PublishedRun], float]) -> float:
        """The headline throughput in TFLOP/s per GPU under the caller's FLOPs-per-token formula."""
        return self.tokens_per_second_per_gpu() * flops_per_token(self) / 1e12

    def iteration_seconds(self) -> float:
        """Seconds per optimizer step implied by the headline throughput (needs ``global_batch``)."""
        if self.global_batch is None:
            raise ValueError(f"run {self.run_id!r}: global_batch is not published, so no step time follows")
        return self.global_batch * self.seq_len / (self.tokens_per_second_per_gpu() * self.gpu_count)


_KINDS = {"int": int, "int | None": int, "float | None": float, "bool | None": bool}
_EXPECTED = {int: "an integer", float: "a number", bool: "yes, no or empty", str: "text"}
_MEASUREMENTS = {"throughput": ("throughput_value", "throughput_unit"),
                 "cross_check": ("cross_check_value", "cross_check_unit")}
COLUMNS = tuple(column for field in fields(PublishedRun)
                for column in _MEASUREMENTS.get(field.name, (field.name,)))


def _parse_cell(run_id: str, name: str, text: str, annotation: str) -> object:
    """One CSV cell as its field's type: an empty cell is None where the field is optional, else an error."""
    kind = _KINDS.get(annotation, str)
    if text == "":
        if annotation.endswith("| None"):
            return None
        if kind is str:
            return text
        raise ValueError(f"run {run_id!r}: {name} is empty: expected {_EXPECTED[kind]}")
    try:
        if kind is bool:
            return {"yes": True, "no": False}[text]
        return kind(text)
    except (ValueError, KeyError):
        raise ValueError(f"run {run_id!r}: {name}={text!r}: expected {_EXPECTED[kind]}") from None



def _measurement(run_id: str, row: dict[str, str], value_column: str, unit_column: str) -> Measurement | None:
    value, unit = row[value_column], row[unit_column]
    if not value and not unit:
        return None
    if not value or not unit:
        raise ValueError(f"run {run_id!r}: {value_column} and {unit_column} go together, got {value!r} and {unit!r}")
    number = _parse_cell(run_id, value_column, value, "float | None")
    try:
        return Measurement(number, unit)
    except ValueError as error:
        raise ValueError(f"run {run_id!r}: {value_column}/{unit_column}: {error}") from None


def _run_from_row(row: dict[str, str]) -> PublishedRun:
    run_id = row["run_id"]
    values: dict[str, object] = {}
    for field in fields(PublishedRun):
        if field.name in _MEASUREMENTS:
            values[field.name] = _measurement(run_id, row, *_MEASUREMENTS[field.name])
        else:
            values[field.name] = _parse_cell(run_id, field.name, row[field.name], str(field.type))
    if values["throughput"] is None:
        raise ValueError(f"run {run_id!r}: throughput_value is empty; every row needs its published throughput")
    return PublishedRun(**values)


def load_published_runs(path: Path | str = PUBLISHED_RUNS_CSV) -> list[PublishedRun]:
    """Every row of the published-runs table, validated; errors name the file, line, run and field."""
    runs: list[PublishedRun] = []
    seen: dict[str, int] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            missing = sorted(set(COLUMNS) - set(reader.fieldnames or ()))
            unexpected = sorted(set(reader.fieldnames or ()) - set(COLUMNS))
            raise ValueError(f"{path}: header does not match the PublishedRun columns in order "
                             f"(missing {missing}, unexpected {unexpected})")
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if row["run_id"] in seen:
                raise ValueError(f"{where}: run_id {row['run_id']!r} duplicates line {seen[row['run_id']]}")
            seen[row["run_id"]] = reader.line_num
            try:
                runs.append(_run_from_row(row))
            except ValueError as error:
                raise ValueError(f"{where}: {error}") from None
    return runs


UNIT_LABELS = {"tflops_per_gpu": "TFLOP/s/GPU", "percent_of_peak": "% of peak", "tokens_per_s_per_gpu": "tok/s/GPU",
               "s_per_iteration": "s/iter"}
TABLE_HEADER = ("Run", "Model", "GPUs", "TP·CP·PP·DP", "v", "ZeRO", "Recompute", "SP", "Batch (global / micro)", "Seq",
                "Precision", "Published", "Cross-check", "tok/s/GPU", "Source")
EMPTY = "–"


def _cell(value: object) -> str:
    if value is None:
        return EMPTY
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _figure(measurement: Measurement | None) -> str:
    return EMPTY if measurement is None else f"{measurement.value:g} {UNIT_LABELS[measurement.unit]}"


def _schedule(run: PublishedRun) -> str:
    if run.virtual_stages is not None:
        return str(run.virtual_stages)
    return "yes (v ?)" if run.interleaved else _cell(run.interleaved)


def runs_table(runs: list[PublishedRun]) -> list[str]:
    """The runs as the Markdown table of ``docs/systems/published-runs.md``, which a test holds to it."""
    lines = ["| " + " | ".join(TABLE_HEADER) + " |", "|" + " --- |" * len(TABLE_HEADER)]
    for run in runs:
        layout = "·".join(_cell(size) for size in (run.tp, run.cp, run.pp, run.dp))
        cells = (f"`{run.run_id}`", run.model, f"{run.gpu_count} × {run.gpu}", layout, _schedule(run),
                 _cell(run.zero_stage), _cell(run.recompute), _cell(run.sequence_parallel),
                 f"{_cell(run.global_batch)} / {_cell(run.micro_batch)}", str(run.seq_len), run.precision,
                 _figure(run.throughput), _figure(run.cross_check), f"{run.tokens_per_second_per_gpu():.4g}",
                 f"[{run.source.split(':')[0]}]({run.url}), {run.reference}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


if __name__ == "__main__":
    print("\n".join(runs_table(load_published_runs())))
