from __future__ import annotations

import json

import pytest
import torch

from ai_system.cli import main
from ai_system.distributed.layout import Layout
from ai_system.distributed.pipeline import bubble_fraction
from ai_system.models.config import get_config
from ai_system.models.transformer import Transformer
from ai_system.planning.accelerators import ACCELERATORS, Accelerator, get_accelerator
from ai_system.planning.planner import (
    PRECISIONS,
    Job,
    estimate,
    head_activation_bytes,
    layer_activation_bytes,
    layer_params,
    memory_per_gpu,
    run_summary,
    search,
)

H100 = get_accelerator("H100-SXM")
ONE_TRILLION = get_config("1T")


def saved_bytes(model: Transformer, run) -> int:
    """Bytes of distinct storages autograd saves for backward, not counting parameters and buffers."""
    owned = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers())}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in owned:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        run()
    return sum(saved.values())


@pytest.mark.parametrize("kv_heads", [None, 2])
def test_block_activation_formula_equals_what_autograd_saves(kv_heads: int | None) -> None:
    config = get_config("debug", n_kv_heads=kv_heads)
    model = Transformer(config)
    batch, seq = 2, 32
    block = model.layers["0"]
    hidden = torch.randn(batch, seq, config.dim, requires_grad=True)
    measured = saved_bytes(model, lambda: block(hidden, model.rope_cos[:seq][None], model.rope_sin[:seq][None]))
    assert layer_activation_bytes(config, batch * seq, 1, False, "none", 4) == measured


def test_model_activation_formula_within_two_percent_of_autograd() -> None:
    """The planner also counts the fp32 logits, which a training step holds but autograd does not save."""
    config = get_config("small")
    model = Transformer(config)
    tokens = torch.randint(0, config.vocab_size, (2, 65))
    measured = saved_bytes(model, lambda: torch.nn.functional.cross_entropy(
        model(tokens[:, :-1]).flatten(0, 1), tokens[:, 1:].flatten()))
    predicted = (config.n_layers * layer_activation_bytes(config, 128, 1, False, "none", 4)
                 + head_activation_bytes(config, 128, 1, False, 4) - 128 * 4 * config.vocab_size)
    assert predicted == pytest.approx(measured, rel=0.02)


def test_parameter_count_matches_the_real_model() -> None:
    config = get_config("small")
    model = Transformer(config)
    per_block = sum(p.numel() for p in model.layers["0"].parameters())
    assert layer_params(config) == per_block
    assert sum(p.numel() for p in model.parameters()) == config.num_params()
    assert ONE_TRILLION.num_params() == pytest.approx(1.009e12, rel=1e-3)


def test_zero_stages_shard_what_they_promise() -> None:
    job = Job(get_config("1B"), seq_len=2048, global_batch=64)
    memories = {zero: memory_per_gpu(job, Layout(dp=8, zero=zero, micro_batch=1), 8) for zero in (0, 2, 3)}
    assert memories[2].optimizer == pytest.approx(memories[0].optimizer / 8)
    assert memories[2].gradients == pytest.approx(memories[0].gradients / 8)
    assert memories[2].parameters == memories[0].parameters
    assert memories[3].parameters == pytest.approx(memories[0].parameters / 8)
    assert memories[3].fsdp_buffers > 0 == memories[2].fsdp_buffers
    unsharded = memories[0]
    n = get_config("1B").num_params()
    assert unsharded.parameters + unsharded.gradients + unsharded.optimizer == pytest.approx(16 * n, rel=1e-3)


def test_sequence_parallel_and_recompute_shrink_activations() -> None:
    config = get_config("8B")
    tokens = 4096
    plain = layer_activation_bytes(config, tokens, 8, False, "none", 2)
    sequence_parallel = layer_activation_bytes(config, tokens, 8, True, "none", 2)
    selective = layer_activation_bytes(config, tokens, 8, True, "selective", 2)
    full = layer_activation_bytes(config, tokens, 8, True, "full", 2)
    assert plain > sequence_parallel > selective > full == tokens * 2 * config.dim / 8


def test_flops_bubble_and_recompute() -> None:
    job = Job(ONE_TRILLION, seq_len=2048, global_batch=1536)
    layout = Layout(tp=8, pp=16, dp=16, micro_batch=1, zero=0, recompute="full")
    result = estimate(job, layout, H100)
    assert result.model_flops == pytest.approx(ONE_TRILLION.train_flops_per_token(2048) * 2048 * 1536)
    assert result.hardware_flops / result.model_flops == pytest.approx(4 / 3, rel=0.02)
    assert result.bubble == bubble_fraction(16, 96)
    assert result.n_microbatches == 96
    assert 0 < result.mfu < 0.5
    assert result.seconds["bubble"] / result.iteration_seconds < result.bubble


def test_search_ranks_layouts_that_fit() -> None:
    job = Job(get_config("8B"), seq_len=8192, global_batch=64)
    ranked = search(job, H100, 64)
    assert ranked, "an 8B model must fit 64 H100s"
    times = [result.iteration_seconds for result in ranked]
    assert times == sorted(times)
    assert all(r.layout.world_size == 64 and r.memory.total <= 0.9 * H100.memory_bytes for r in ranked)
    assert search(Job(ONE_TRILLION, 2048, 64), H100, 8) == []


def test_bad_inputs_name_the_value() -> None:
    job = Job(get_config("8B"), seq_len=8192, global_batch=64)
    with pytest.raises(ValueError, match="tp=3"):
        estimate(job, Layout(tp=3), H100)
    with pytest.raises(ValueError, match="global batch 64"):
        estimate(job, Layout(dp=3), H100)
    with pytest.raises(ValueError, match="unknown accelerator"):
        get_accelerator("TPU")
    with pytest.raises(ValueError, match="unknown model config"):
        get_config("2T")
    with pytest.raises(ValueError, match="peak_flops"):
        Accelerator("x", 0, 1, 1, 1, 1, "none")
    with pytest.raises(ValueError, match="seq_len"):
        Job(get_config("debug"), 0, 1)


def test_every_accelerator_cites_a_source() -> None:
    assert all("datasheet" in accelerator.source for accelerator in ACCELERATORS.values())


def test_summary_adds_training_time_and_cost() -> None:
    job = Job(get_config("1B"), seq_len=2048, global_batch=64, precision=PRECISIONS["bf16-mixed"])
    result = estimate(job, Layout(dp=8, micro_batch=8), H100)
    summary = run_summary(result, training_tokens=job.tokens_per_iteration * 1000, price_per_gpu_hour=2.0)
    assert summary["gpu_hours"] == pytest.approx(1000 * result.iteration_seconds * 8 / 3600)
    assert summary["cost_usd"] == pytest.approx(2.0 * summary["gpu_hours"])


def test_plan_command_prints_the_train_command_of_each_plan(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--model", "1B", "--gpus", "16", "--global-batch", "64", "--top", "2", "--json"]) == 0
    summaries = json.loads(capsys.readouterr().out)
    assert len(summaries) == 2 and summaries[0]["gpus"] == 16
    command = summaries[0]["train_command"]
    assert command.startswith("ai-system train --model 1B --seq-len 2048 --batch-size 64 --layout ")
    assert Layout.parse(command.split("--layout ")[1].split()[0]).label() == summaries[0]["layout"]
    assert main(["plan", "--gpus", "8", "--global-batch", "64"]) == 1
    assert "no layout" in capsys.readouterr().out


def test_plan_command_evaluates_one_layout(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--gpu", "A100-80GB", "--gpus", "3072", "--global-batch", "3072",
                 "--layout", "dp=6,tp=8,pp=64,zero=0,mb=1,recompute=full", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["layout"] == "dp=6,tp=8,pp=64,zero=0,mb=1,schedule=1f1b,recompute=full" and summary["fits"] is True
    with pytest.raises(SystemExit):
        main(["plan", "--layout", "8,64"])
    assert "not key=value" in capsys.readouterr().err
    assert main(["plan", "--gpus", "100", "--layout", "dp=6,tp=8,pp=64,mb=1"]) == 2
    assert "uses 3072 GPUs but --gpus is 100" in capsys.readouterr().err
