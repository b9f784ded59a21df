from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from ai_system.models.config import get_config
from ai_system.models.transformer import Transformer
from ai_system.parallel.compose import Layout, unwrapped_name
from ai_system.parallel.launch import run_distributed
from ai_system.parallel.pipeline import bubble_fraction, stage_layer_ranges, stage_module


def test_bubble_formula() -> None:
    assert bubble_fraction(1, 8) == 0
    assert bubble_fraction(4, 4) == pytest.approx(3 / 7)
    assert bubble_fraction(4, 16, stages_per_rank=2) == pytest.approx(3 / 35)
    with pytest.raises(ValueError, match="micro-batches"):
        bubble_fraction(2, 0)


def test_stage_ranges_cover_every_layer_once() -> None:
    ranges = stage_layer_ranges(10, 4)
    assert [len(r) for r in ranges] == [3, 3, 2, 2]
    assert [i for r in ranges for i in r] == list(range(10))
    with pytest.raises(ValueError, match="num_stages"):
        stage_layer_ranges(2, 3)


def test_stage_module_keeps_only_its_parts() -> None:
    model = Transformer(get_config("debug", n_layers=4))
    first, last = stage_module(model, 0, 2), stage_module(model, 1, 2)
    assert list(first.layers) == ["0", "1"] and first.output is None and first.tok_embeddings is not None
    assert list(last.layers) == ["2", "3"] and last.tok_embeddings is None and last.norm is not None
    assert len(model.layers) == 4


def test_layout_validation() -> None:
    assert Layout(pp=2, dp=2, tp=2, n_microbatches=2).world_size == 8
    assert not Layout(pp=2, tp=2, n_microbatches=2).uses_sequence_parallel
    with pytest.raises(ValueError, match="micro-batches"):
        Layout(pp=4, n_microbatches=2)
    with pytest.raises(ValueError, match="tp"):
        Layout(tp=0)
    assert Layout(pp=2, dp=2, n_microbatches=2, checkpoint=True).label() == "pp2-dp2-tp1-1f1b-ckpt"
    assert Layout(tp=2, sequence_parallel=False).label() == "pp1-dp1-tp2-nosp"
    assert unwrapped_name("layers.0._checkpoint_wrapped_module.attention.wq.weight") == "layers.0.attention.wq.weight"


def _fail() -> None:
    raise ValueError("boom on purpose")


def _fail_on_rank_one() -> None:
    if dist.get_rank() == 1:
        raise ValueError("boom on purpose")
    dist.barrier()


def _large_answer() -> torch.Tensor:
    return torch.full((1 << 20,), float(dist.get_rank()))


def test_launcher_returns_rank_zeros_answer_by_value() -> None:
    answer = run_distributed(_large_answer, 2)
    assert answer.shape == (1 << 20,) and answer.abs().sum() == 0


def test_launcher_reports_a_rank_failure() -> None:
    with pytest.raises(RuntimeError, match="boom on purpose"):
        run_distributed(_fail, 2)


def test_launcher_does_not_hang_when_one_rank_fails_mid_collective() -> None:
    with pytest.raises(RuntimeError, match="a rank of 2 failed"):
        run_distributed(_fail_on_rank_one, 2)
    with pytest.raises(ValueError, match="world_size"):
        run_distributed(_fail_on_rank_one, 0)
