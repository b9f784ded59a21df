"""The shared transformer running on the Triton kernels: same logits as the torch path, cache and
padding change nothing. Teacher-forced tokens keep every comparison on logits, not argmax ties.
"""

from __future__ import annotations

import pytest
import torch

from ai_system.inference import ops
from ai_system.inference.generate import decode_step, pad_prompts, prefill
from ai_system.models.config import get_config
from ai_system.models.transformer import Transformer

PROMPTS = [[5, 17, 3], [9, 1, 2, 44, 7, 100, 31], [250]]
CONTINUATION = [11, 12, 13]
LAUNCHERS = ("rms_norm_triton", "rope_triton", "attention_triton", "decode_attention_triton", "swiglu_triton")


TOLERANCE = {"atol": 1e-4, "rtol": 1e-4}


@pytest.fixture(scope="module")
def model(kernel_device: str) -> Transformer:
    torch.manual_seed(0)
    return Transformer(get_config("debug", n_layers=1, n_kv_heads=2)).to(kernel_device).eval()


@pytest.fixture
def launches(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts of each Triton launcher the ops call, so a test can show the kernels really ran."""
    counts = dict.fromkeys(LAUNCHERS, 0)
    for name in LAUNCHERS:
        original = getattr(ops, name)

        def counted(*args, _name=name, _original=original, **kwargs):
            counts[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(ops, name, counted)
    return counts


def torch_path_logits(model: Transformer, tokens: torch.Tensor) -> torch.Tensor:
    with ops.reference_only(), torch.no_grad():
        return model(tokens)


def cached_logits(model: Transformer, prompts: list[list[int]], steps: list[int]) -> list[torch.Tensor]:
    """Prefill ragged prompts, then feed ``steps`` to every row; logits after the prompt and after each step."""
    device = model.rope_cos.device
    tokens, lengths = pad_prompts(prompts, device=device)
    model.setup_cache(len(prompts), int(lengths.max()) + len(steps))
    try:
        logits = [prefill(model, tokens, lengths)]
        positions = lengths.clone()
        for token in steps:
            logits.append(decode_step(model, torch.full((len(prompts),), token, device=device), positions))
            positions += 1
    finally:
        model.clear_cache()
    return logits


def test_logits_equal_the_torch_forward(kernels, model, launches):
    tokens = torch.tensor([PROMPTS[1], PROMPTS[1][::-1]], device=kernels)
    with torch.no_grad():
        on_kernels = model(tokens)
    assert launches["attention_triton"] and launches["rms_norm_triton"] and launches["swiglu_triton"]
    torch.testing.assert_close(on_kernels, torch_path_logits(model, tokens), **TOLERANCE)


def test_cached_decode_equals_recomputing_the_sequence(kernels, model, launches):
    prompt = PROMPTS[1]
    stepwise = torch.stack(cached_logits(model, [prompt], CONTINUATION))[:, 0]
    assert launches["decode_attention_triton"] == len(CONTINUATION) * model.config.n_layers
    full = torch_path_logits(model, torch.tensor([prompt + CONTINUATION], device=kernels))[0, len(prompt) - 1:]
    torch.testing.assert_close(stepwise, full, **TOLERANCE)


def test_ragged_batch_equals_rows_one_at_a_time(kernels, model):
    batched = torch.stack(cached_logits(model, PROMPTS, CONTINUATION), dim=1)
    for row, prompt in enumerate(PROMPTS):
        alone = torch.stack(cached_logits(model, [prompt], CONTINUATION), dim=1)[0]
        torch.testing.assert_close(batched[row], alone, **TOLERANCE)


def test_training_keeps_autograd_on_the_torch_path(kernels, model, launches):
    try:
        model(torch.tensor([PROMPTS[1]], device=kernels)).sum().backward()
        assert model.layers["0"].attention.wq.weight.grad.abs().sum() > 0
    finally:
        model.zero_grad(set_to_none=True)
    assert not any(launches.values())
