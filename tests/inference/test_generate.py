"""Generation: cached decode equals recomputation, ragged batches equal single rows, seeds reproduce."""

from __future__ import annotations

import pytest
import torch

from ai_system.inference.generate import SamplingParams, generate, pad_prompts, sample_tokens
from ai_system.models.config import get_config
from ai_system.models.transformer import Transformer

PROMPTS = [[5, 17, 3], [9, 1, 2, 44, 7, 100, 31], [250]]


@pytest.fixture(scope="module")
def model() -> Transformer:
    torch.manual_seed(0)
    return Transformer(get_config("debug")).eval()


def greedy_by_recomputation(model: Transformer, prompt: list[int], steps: int) -> list[int]:
    """Greedy continuation that reruns the whole sequence each step, no cache."""
    tokens = list(prompt)
    with torch.no_grad():
        for _ in range(steps):
            logits = model(torch.tensor([tokens]))
            tokens.append(int(logits[0, -1].argmax()))
    return tokens[len(prompt):]


def test_cached_decode_equals_recomputing_the_sequence(model):
    for prompt in PROMPTS:
        assert generate(model, [prompt], SamplingParams(max_new_tokens=10)) == [
            greedy_by_recomputation(model, prompt, 10)]


def test_ragged_batch_equals_rows_one_at_a_time(model):
    params = SamplingParams(max_new_tokens=8)
    batched = generate(model, PROMPTS, params)
    assert batched == [generate(model, [prompt], params)[0] for prompt in PROMPTS]


def test_seeded_sampling_reproduces_and_seeds_differ(model):
    params = SamplingParams(max_new_tokens=12, temperature=1.5, top_p=0.95, seed=7)
    first = generate(model, PROMPTS, params)
    assert first == generate(model, PROMPTS, params)
    other = generate(model, PROMPTS, SamplingParams(max_new_tokens=12, temperature=1.5, top_p=0.95, seed=8))
    assert first != other


def test_tiny_top_p_is_greedy(model):
    sampled = generate(model, PROMPTS, SamplingParams(max_new_tokens=6, temperature=1.0, top_p=1e-6, seed=1))
    assert sampled == generate(model, PROMPTS, SamplingParams(max_new_tokens=6))


def test_stop_token_cuts_the_continuation(model):
    full = generate(model, [PROMPTS[0]], SamplingParams(max_new_tokens=6))[0]
    stopped = generate(model, [PROMPTS[0]], SamplingParams(max_new_tokens=6, stop_token=full[2]))[0]
    assert stopped == full[: full.index(full[2]) + 1]


def test_sample_tokens_per_row_settings():
    logits = torch.tensor([[0.0, 5.0, 1.0], [3.0, 0.0, 0.0]])
    generator = torch.Generator().manual_seed(0)
    tokens = sample_tokens(logits, torch.tensor([0.0, 0.0]), 1.0, generator)
    assert tokens.tolist() == [1, 0]
    hot = torch.tensor([0.0, 50.0])
    draws = torch.stack([sample_tokens(logits, hot, 1.0, generator) for _ in range(200)])
    assert (draws[:, 0] == 1).all() and len(set(draws[:, 1].tolist())) == 3


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"max_new_tokens": 0}, "max_new_tokens"),
    ({"temperature": -1.0}, "temperature"),
    ({"top_p": 0.0}, "top_p"),
])
def test_bad_sampling_params(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SamplingParams(**kwargs)


def test_bad_prompts_and_lengths(model):
    with pytest.raises(ValueError, match="at least one token"):
        pad_prompts([[1], []])
    with pytest.raises(ValueError, match="max_seq_len"):
        generate(model, [[1] * 120], SamplingParams(max_new_tokens=20))


def test_a_cached_forward_needs_the_rows_lengths(model):
    """The caller says how much of each cache row is filled; the model no longer guesses it from positions."""
    model.setup_cache(2, 16)
    try:
        tokens, positions = torch.tensor([[1, 2], [3, 0]]), torch.tensor([[0, 1], [0, 15]])
        with pytest.raises(ValueError, match="per-row lengths"):
            model(tokens, positions)
        assert model(tokens, positions, None, torch.tensor([2, 1])).shape == (2, 2, 256)
    finally:
        model.clear_cache()
