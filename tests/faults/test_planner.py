"""``ai-system plan`` under bad input: one line naming the bad value, exit status 2, bounded work, and
``--json`` that any JSON parser reads (issue 11, item 6)."""

from __future__ import annotations

import json
import math
import os
import time

import pytest

from ai_system.cli import main

from .helpers import one_error_line

SMALL_PLAN = ["plan", "--model", "1B", "--gpus", "16", "--global-batch", "64", "--top", "2"]
BAD_VALUES = [
    (["--top", "0"], "argument --top: expected an integer >= 1, got '0'"),
    (["--top", "-3"], "argument --top: expected an integer >= 1, got '-3'"),
    (["--layout", "0,1,1,0,full"], "argument --layout: layout item '0' is not key=value"),
    (["--layout", "dp=0,tp=8"], "layout dp must be an integer >= 1, got 0"),
    (["--ffn=-14336"], "argument --ffn: expected an integer >= 1, got '-14336'"),
    (["--kv-heads", "0"], "argument --kv-heads: expected an integer >= 1, got '0'"),
    (["--layers", "1e8"], "argument --layers: expected an integer >= 1, got '1e8'"),
    (["--dim", "0"], "argument --dim: expected an integer >= 1, got '0'"),
    (["--heads", "7"], "dim=2048 must be divisible by n_heads=7"),
    (["--seq", "0"], "argument --seq: expected an integer >= 1, got '0'"),
    (["--global-batch", "-1"], "argument --global-batch: expected an integer >= 1, got '-1'"),
    (["--gpus", "0"], "argument --gpus: expected an integer >= 1, got '0'"),
    (["--tokens=-1e12"], "argument --tokens: expected a number > 0, got '-1e12'"),
    (["--tokens", "nan"], "argument --tokens: expected a number > 0, got 'nan'"),
    (["--tokens", "inf"], "argument --tokens: expected a number > 0, got 'inf'"),
    (["--price-per-gpu-hour=-3"], "argument --price-per-gpu-hour: expected a number >= 0, got '-3'"),
    (["--efficiency", "0"], "argument --efficiency: expected a number in (0, 1], got '0'"),
    (["--efficiency", "nan"], "argument --efficiency: expected a number in (0, 1], got 'nan'"),
    (["--dp-overlap", "1.5"], "argument --dp-overlap: expected a number in [0, 1], got '1.5'"),
    (["--tokens", "1e308", "--price-per-gpu-hour", "1e308"], "the plan's cost_usd is inf"),
    (["--dim", "1" + "0" * 400], "too large to compute with"),
    (["--gpu", "this-machine", "--gpus", str(64 * (os.cpu_count() or 1))], "with --gpu this-machine starts"),
]


@pytest.mark.parametrize(("args", "message"), BAD_VALUES, ids=[" ".join(args)[:40] for args, _ in BAD_VALUES])
def test_a_bad_value_is_one_line_naming_it(args, message, capsys):
    try:
        status = main([*SMALL_PLAN, *args])
    except SystemExit as exit_:
        status = exit_.code
    assert status == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith("ai-system plan: error: ") and message in line


def strict_json(text: str) -> object:
    """Parse as standard JSON (RFC 8259): NaN and Infinity are not JSON."""
    def refuse(constant: str) -> None:
        raise ValueError(f"non-standard JSON constant {constant}")
    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("args", [["--tokens", "1e12", "--price-per-gpu-hour", "2.5"],
                                  ["--layout", "dp=2,tp=8,pp=1,mb=1", "--tokens", "1e12"]], ids=["search", "layout"])
def test_json_output_is_standard_and_every_figure_finite(args, capsys):
    assert main([*SMALL_PLAN, *args, "--json"]) == 0
    parsed = strict_json(capsys.readouterr().out)
    for summary in parsed if isinstance(parsed, list) else [parsed]:
        numbers = [v for v in summary.values() if isinstance(v, float)]
        assert numbers and all(math.isfinite(v) and v >= 0 for v in numbers)


HUGE = {"1e8-layers": ["--model", "125M", "--layers", "100000000", "--gpus", "8"],
        "1e8-layers-many-divisors": ["--model", "125M", "--layers", "96000000", "--gpus", "1024",
                                     "--global-batch", "1024"],
        "1e9-gpus": ["--gpus", str(10**9)]}


@pytest.mark.parametrize("args", HUGE.values(), ids=HUGE.keys())
def test_huge_shapes_take_bounded_work(args, capsys):
    """``--layers 1e8`` took 32 s: pipeline depths are now the common divisors of the layers and the GPUs."""
    started = time.perf_counter()
    assert main(["plan", *args]) in (0, 1)
    assert time.perf_counter() - started < 10
    assert "Traceback" not in capsys.readouterr().err
