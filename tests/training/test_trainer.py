"""Single-process training: schedule, accumulation, resume, atomic checkpoints, clear errors, metrics."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp

from ai_system.distributed.layout import Layout
from ai_system.distributed.parallelize import mixed_precision
from ai_system.training import checkpoint
from ai_system.training.config import TrainConfig
from ai_system.training.metrics import mfu, read_log
from ai_system.training.preflight import RunRefused
from ai_system.training.schedule import WarmupCosine
from ai_system.training.trainer import train

TINY = {"dim": 32, "n_layers": 2, "n_heads": 2, "max_seq_len": 32}


def tiny(**fields) -> TrainConfig:
    base = {"model_overrides": TINY, "seq_len": 32, "batch_size": 8, "steps": 6, "warmup_steps": 2,
            "dataset": "synthetic", "progress": False}
    return TrainConfig(**{**base, **fields})


def test_schedule_warms_up_linearly_then_decays_to_the_floor():
    schedule = WarmupCosine(warmup=4, total=20, min_ratio=0.1)
    assert [schedule(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    values = [schedule(s) for s in range(4, 21)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))
    assert math.isclose(schedule(20), 0.1) and math.isclose(schedule(12), 0.55)


def test_accumulating_k_micro_batches_equals_one_k_times_batch():
    whole = train(tiny()).losses
    accumulated = train(tiny(layout=Layout(micro_batch=2))).losses
    assert accumulated == pytest.approx(whole, abs=1e-5)


@pytest.mark.parametrize("recompute", ["selective", "full"])
def test_activation_checkpointing_changes_memory_not_math(recompute: str):
    checkpointed = train(tiny(layout=Layout(recompute=recompute))).losses
    assert checkpointed == pytest.approx(train(tiny()).losses, abs=1e-6)


def test_loss_goes_down_on_the_stdlib_corpus():
    losses = train(tiny(dataset="stdlib", steps=30, lr=1e-2)).losses
    assert sum(losses[-5:]) / 5 < losses[0] - 1.5


def test_resume_reproduces_the_uninterrupted_curve_exactly(tmp_path):
    uninterrupted = train(tiny(steps=8)).losses
    first = train(tiny(steps=8, checkpoint_dir=str(tmp_path), checkpoint_every=3, keep_checkpoints=5))
    assert first.losses == uninterrupted
    resumed = train(tiny(steps=8, checkpoint_dir=str(tmp_path), resume=str(tmp_path / "step_00000003")))
    assert resumed.start_step == 3
    assert resumed.losses == uninterrupted[3:]


def test_keeps_only_the_newest_checkpoints(tmp_path):
    train(tiny(steps=6, checkpoint_dir=str(tmp_path), checkpoint_every=1, keep_checkpoints=2))
    assert [p.name for p in checkpoint.complete_checkpoints(tmp_path)] == ["step_00000005", "step_00000006"]


def test_a_crash_while_saving_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    real_save = dcp.save

    def crash_after_writing_step_6(state, checkpoint_id, **kwargs):
        real_save(state, checkpoint_id=checkpoint_id, **kwargs)
        if Path(checkpoint_id).name.startswith("step_00000006"):
            raise KeyboardInterrupt("killed mid-save")

    monkeypatch.setattr(checkpoint.dcp, "save", crash_after_writing_step_6)
    with pytest.raises(KeyboardInterrupt):
        train(tiny(steps=8, checkpoint_dir=str(tmp_path), checkpoint_every=2, keep_checkpoints=5))
    monkeypatch.undo()
    assert (tmp_path / "step_00000006.tmp").is_dir()
    assert checkpoint.newest_intact(tmp_path)[0].name == "step_00000004"
    resumed = train(tiny(steps=8, checkpoint_dir=str(tmp_path), checkpoint_every=2, resume="auto"))
    assert resumed.start_step == 4
    assert resumed.losses == train(tiny(steps=8)).losses[4:]
    assert not (tmp_path / "step_00000006.tmp").exists()


def test_resume_auto_without_a_checkpoint_starts_fresh(tmp_path):
    assert train(tiny(steps=2, checkpoint_dir=str(tmp_path / "none"), resume="auto")).start_step == 0


def test_bad_configs_fail_before_training(tmp_path):
    with pytest.raises(ValueError, match="global batch 8 does not split over dp=3"):
        tiny(layout=Layout(dp=3))
    with pytest.raises(ValueError, match="batch of 8 sequences does not split into micro-batches of 3"):
        tiny(layout=Layout(micro_batch=3))
    with pytest.raises(ValueError, match="layout dp=2,tp=1,pp=1,zero=3,recompute=none needs 2 ranks, got 1"):
        train(tiny(layout=Layout(dp=2)))
    for field, value in (("lr", float("inf")), ("weight_decay", float("nan")), ("grad_clip", float("nan"))):
        with pytest.raises(ValueError, match=field):
            tiny(**{field: value})
    with pytest.raises(RunRefused, match="no checkpoint at .*missing"):
        train(tiny(resume=str(tmp_path / "missing")))
    with pytest.raises(ValueError, match="unknown model config|model must be one of"):
        tiny(model="2B")
    with pytest.raises(ValueError, match="seq_len=64 exceeds model"):
        tiny(seq_len=64)
    with pytest.raises(ValueError, match="checkpoint_every=2 needs a checkpoint_dir"):
        tiny(checkpoint_every=2)
    with pytest.raises(ValueError, match="param_dtype='bfloat16' needs FSDP"):
        train(tiny(param_dtype="bfloat16"))


def test_resume_refuses_a_different_model_shape(tmp_path):
    train(tiny(steps=2, checkpoint_dir=str(tmp_path)))
    wider = tiny(steps=4, model_overrides={**TINY, "dim": 64}, resume=str(tmp_path / "step_00000002"))
    with pytest.raises(ValueError, match="holds a model of shape"):
        train(wider)


def test_metrics_log_has_every_step_with_throughput_and_mfu(tmp_path):
    log_file = tmp_path / "log.jsonl"
    result = train(tiny(steps=3, log_file=str(log_file)))
    records = read_log(log_file)
    assert [r["event"] for r in records] == ["start", "step", "step", "step", "done"]
    step = records[2]
    assert step["tokens_per_s"] == pytest.approx(step["samples_per_s"] * 32)
    assert step["mfu"] == pytest.approx(mfu(records[0]["flops_per_token"], step["tokens_per_s"], result.peak_flops))
    assert 0 < step["mfu"] < 1 and step["peak_memory_bytes"] > 0
    assert [r["loss"] for r in records[1:4]] == result.losses


def test_mfu_needs_a_positive_peak():
    assert mfu(6e6, 1e3, 1e10) == pytest.approx(0.6)
    with pytest.raises(ValueError, match="peak_flops must be positive, got 0"):
        mfu(1.0, 1.0, 0)


def test_config_round_trips_and_rejects_unknown_fields():
    config = tiny(betas=(0.8, 0.9))
    assert TrainConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match=r"unknown TrainConfig fields \['colour'\]"):
        TrainConfig.from_dict({"colour": "blue"})


def test_checkpoint_meta_and_manifest_are_required(tmp_path: Path):
    (tmp_path / "step_00000001").mkdir()
    path, meta, skipped = checkpoint.newest_intact(tmp_path)
    assert path is None and meta is None
    assert [s.path.name for s in skipped] == ["step_00000001"] and "manifest.json" in skipped[0].reason
    with pytest.raises(checkpoint.CheckpointError, match="train_meta.json"):
        checkpoint.read_meta(tmp_path / "step_00000001")


def test_config_round_trips_with_its_layout():
    config = tiny(layout=Layout(micro_batch=2, recompute="full"))
    assert TrainConfig.from_dict(config.to_dict()) == config
    assert config.to_dict()["layout"] == "dp=1,tp=1,pp=1,zero=3,mb=2,recompute=full"


def test_mixed_precision_is_bf16_compute_with_fp32_reduction_or_fp32_throughout():
    bf16 = mixed_precision("bfloat16")
    assert (bf16.param_dtype, bf16.reduce_dtype) == (torch.bfloat16, torch.float32)
    fp32 = mixed_precision("float32")
    assert (fp32.param_dtype, fp32.reduce_dtype) == (torch.float32, torch.float32)
