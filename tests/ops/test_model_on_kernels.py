"""The shared transformer running on the Triton kernels: same logits as the torch path, cache and
padding change nothing, the MLP runs the fused SwiGLU matmul and sampling the softmax kernel.
Teacher-forced tokens keep every comparison on logits, not argmax ties.
"""

from __future__ import annotations

import pytest
import torch

from ai_system import ops
from ai_system.inference.generate import decode_step, pad_prompts, prefill, sample_tokens
from ai_system.models.config import get_config
from ai_system.models.transformer import Transformer

PROMPTS = [[5, 17, 3], [9, 1, 2, 44, 7, 100, 31], [250]]
CONTINUATION = [11, 12, 13]
TOLERANCE = {"atol": 1e-4, "rtol": 1e-4}


@pytest.fixture(scope="module")
def model(kernel_device: str) -> Transformer:
    torch.manual_seed(0)
    return Transformer(get_config("debug", n_layers=1, n_kv_heads=2)).to(kernel_device).eval()


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
    layers = model.config.n_layers
    assert launches["_flash_attention_kernel"] == layers and launches["_rope_kernel"] == 2 * layers
    assert launches["_rms_norm_kernel"] == 2 * layers + 1
    assert launches["_matmul_kernel"] == layers, "the MLP's w1/w3 must run as one fused SwiGLU matmul"
    torch.testing.assert_close(on_kernels, torch_path_logits(model, tokens), **TOLERANCE)


def test_cached_decode_equals_recomputing_the_sequence(kernels, model, launches):
    prompt = PROMPTS[1]
    stepwise = torch.stack(cached_logits(model, [prompt], CONTINUATION))[:, 0]
    assert launches["_decode_partial_kernel"] == len(CONTINUATION) * model.config.n_layers
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


def test_sampling_runs_the_softmax_kernel(kernels, launches):
    logits = torch.randn(3, 50, device=kernels)
    generator = torch.Generator(device=kernels).manual_seed(0)
    tokens = sample_tokens(logits, torch.tensor([0.0, 0.7, 1.3], device=kernels), 0.9, generator)
    assert launches["_softmax_kernel"] == 1
    assert tokens[0] == logits[0].argmax() and tokens.shape == (3,)
