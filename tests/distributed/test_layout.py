from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from ai_system.distributed.launch import run_distributed
from ai_system.distributed.layout import Layout
from ai_system.distributed.parallelize import unwrapped_name
from ai_system.distributed.pipeline import bubble_fraction, stage_layer_ranges, stage_module
from ai_system.models.config import get_config
from ai_system.models.transformer import Transformer


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


def test_layout_text_round_trips_and_omits_what_cannot_matter() -> None:
    for text in ("dp=2", "tp=2,sp=off", "pp=2,mb=2,schedule=gpipe", "dp=2,tp=2,pp=2,zero=0,mb=1,recompute=full",
                 "pp=2,mb=1,schedule=interleaved-1f1b", "dp=4,zero=2,recompute=selective"):
        layout = Layout.parse(text)
        assert Layout.parse(layout.label()) == layout
    assert Layout.parse("tp=2").label() == "dp=1,tp=2,pp=1,zero=3,recompute=none"
    assert Layout.parse("pp=2,mb=1,schedule=interleaved-1f1b").virtual_stages == 2
    assert Layout(pp=2, dp=2, tp=2, micro_batch=1).world_size == 8


def test_layout_properties_match_what_the_trainer_runs() -> None:
    assert Layout(tp=2).uses_sequence_parallel and Layout(tp=2).uses_vocab_parallel_loss
    assert not Layout(pp=2, tp=2, micro_batch=1).uses_sequence_parallel
    assert Layout(dp=4, zero=0).mesh_shape == (1, 4, 1, 1) and Layout(dp=4).mesh_shape == (1, 1, 4, 1)
    assert Layout(dp=2, micro_batch=2).microbatches(8) == 2 and Layout().microbatches(8) == 1


@pytest.mark.parametrize(("text", "message"), [
    ("tp=0", "tp must be an integer >= 1"),
    ("zero=1", "zero must be one of"),
    ("pp=2", "needs a micro_batch"),
    ("pp=2,mb=1,v=2", "goes with schedule 'interleaved-1f1b'"),
    ("recompute=some", "recompute must be one of"),
    ("sp=maybe", "sp must be 'on' or 'off'"),
    ("dp=two", "dp must be a positive integer"),
    ("cp=2", "not key=value with key in"),
    ("dp=2,dp=4", "given twice"),
])
def test_bad_layout_text_names_the_problem(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Layout.parse(text)


def test_layout_check_names_what_the_model_or_batch_breaks() -> None:
    config = get_config("debug", n_layers=4)
    with pytest.raises(ValueError, match="n_heads=4 is not divisible by tp=8"):
        Layout(tp=8).check(config, 8)
    with pytest.raises(ValueError, match="does not split over dp=3"):
        Layout(dp=3).check(config, 8)
    with pytest.raises(ValueError, match="cannot fill a 4-stage pipeline"):
        Layout(pp=4, micro_batch=4).check(config, 8)
    with pytest.raises(ValueError, match="exceed the model's 4 layers"):
        Layout(pp=4, micro_batch=1, schedule="interleaved-1f1b", virtual_stages=2).check(config, 8)
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
