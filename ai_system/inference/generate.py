"""Autoregressive generation on the shared transformer: prefill, incremental decode, sampling.

Prompts of different lengths share one batch by right-padding: row ``b`` keeps its prompt at cache
positions ``0..len_b-1`` and writes each new token at its own next position, so a row never sees
another row's padding. Boolean masks (True = may attend) hide the padded slots; each decode step
overwrites the slot that padding wrote during prefill before any query can see it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ai_system import ops
from ai_system.models.transformer import Transformer

SAMPLING_DTYPE = torch.float32
SEED_LIMIT = 2**64


def _as_sampling_float(name: str, value: object) -> float:
    """``value`` as the float32 that sampling computes with; raises unless it is a finite number there.

    A value fine as a Python float can be 0 or inf in float32 (``top_p=1e-46``, ``temperature=1e39``),
    and sampling would then divide by it or keep no token at all.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    as_float32 = torch.tensor(float(value), dtype=SAMPLING_DTYPE).item()
    if not math.isfinite(as_float32):
        raise ValueError(f"{name} must be finite in {SAMPLING_DTYPE} (at most {torch.finfo(SAMPLING_DTYPE).max:.3g}), "
                         f"got {value!r}")
    return as_float32


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens: ``temperature == 0`` is greedy; ``top_p < 1`` samples from the nucleus.

    Checked here in the dtype ``sample_tokens`` uses, so a request that passes can never make
    sampling raise: the engine samples many requests in one call, and one bad row must not fail them all.
    """

    max_new_tokens: int = 32
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop_token: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) \
                or self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {self.max_new_tokens!r}")
        temperature = _as_sampling_float("temperature", self.temperature)
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 means greedy), got {self.temperature!r}")
        top_p = _as_sampling_float("top_p", self.top_p)
        if not 0 < self.top_p <= 1 or top_p == 0:
            raise ValueError(f"top_p must be in (0, 1] and not round to 0 in {SAMPLING_DTYPE} (the dtype "
                             f"sampling uses), got {self.top_p!r}")
        for name in ("seed", "stop_token"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"{name} must be None or an integer >= 0, got {value!r}")
        if self.seed is not None and self.seed >= SEED_LIMIT:
            raise ValueError(f"seed must be below 2**64 (the generator's seed is 64 bits), got {self.seed}")


def sample_tokens(logits: torch.Tensor, temperature: float | torch.Tensor = 0.0,
                  top_p: float | torch.Tensor = 1.0,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """One token per row of ``logits`` (batch, vocab).

    ``temperature`` and ``top_p`` are scalars or per-row tensors of shape (batch,), so requests with
    different settings can share a batch; rows with temperature 0 take the argmax. Both are checked
    after conversion to float32, where they are used (``SamplingParams`` checks the same up front).
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must be (batch, vocab), got shape {tuple(logits.shape)}")
    batch = logits.shape[0]
    temperature = torch.as_tensor(temperature, dtype=SAMPLING_DTYPE, device=logits.device).expand(batch)
    top_p = torch.as_tensor(top_p, dtype=SAMPLING_DTYPE, device=logits.device).expand(batch)
    if ((temperature < 0) | ~temperature.isfinite()).any():
        raise ValueError(f"temperature must be finite and >= 0, got {temperature.tolist()}")
    if ((top_p <= 0) | (top_p > 1) | top_p.isnan()).any():
        raise ValueError(f"top_p must be in (0, 1], got {top_p.tolist()}")
    greedy = logits.argmax(dim=-1)
    sampled_rows = temperature > 0
    if not sampled_rows.any():
        return greedy
    scaled = logits.float() / temperature.clamp_min(1e-6).unsqueeze(1)
    probs = ops.softmax(scaled)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
    sorted_probs = sorted_probs.masked_fill(mass_before >= top_p.unsqueeze(1), 0.0)
    picked = torch.multinomial(sorted_probs, 1, generator=generator).squeeze(1)
    sampled = order.gather(1, picked.unsqueeze(1)).squeeze(1)
    return torch.where(sampled_rows, sampled, greedy)


def pad_prompts(prompts: Sequence[Sequence[int]], pad_token: int = 0,
                device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token lists into (batch, longest) and return it with each row's length."""
    if not prompts:
        raise ValueError("prompts must hold at least one prompt, got none")
    lengths = [len(prompt) for prompt in prompts]
    if min(lengths) == 0:
        raise ValueError(f"every prompt needs at least one token, got lengths {lengths}")
    tokens = torch.full((len(prompts), max(lengths)), pad_token, dtype=torch.long, device=device)
    for row, prompt in enumerate(prompts):
        tokens[row, : len(prompt)] = torch.as_tensor(list(prompt), dtype=torch.long, device=device)
    return tokens, torch.tensor(lengths, dtype=torch.long, device=device)


def prefill_mask(lengths: torch.Tensor, seq_len: int, cache_len: int) -> torch.Tensor:
    """(batch, 1, seq, cache_len): query i of row b sees keys j <= i that are inside its prompt."""
    keys = torch.arange(cache_len, device=lengths.device)
    queries = torch.arange(seq_len, device=lengths.device)
    causal = keys.view(1, -1) <= queries.view(-1, 1)
    inside = keys.view(1, -1) < lengths.view(-1, 1)
    return (causal.unsqueeze(0) & inside.unsqueeze(1)).unsqueeze(1)


def cache_length(model: Transformer) -> int:
    """Slots in the model's KV cache; raises if ``setup_cache`` has not been called."""
    for block in model.layers.values():
        if block.attention.cache is not None:
            return block.attention.cache.k.shape[2]
    raise ValueError("the model has no KV cache; call model.setup_cache(batch_size, max_seq_len) first")


@torch.inference_mode()
def prefill(model: Transformer, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Run right-padded prompts (batch, seq) through the model, filling the cache from position 0.

    Returns the logits (batch, vocab) at each row's last prompt token: the distribution of the
    first generated token. Attention reads only each row's prompt (``lengths``), not its padding.
    """
    if tokens.dim() != 2 or lengths.shape != (tokens.shape[0],):
        raise ValueError(f"tokens must be (batch, seq) and lengths (batch,), got {tuple(tokens.shape)} "
                         f"and {tuple(lengths.shape)}")
    if int(lengths.min()) < 1 or int(lengths.max()) > tokens.shape[1]:
        raise ValueError(f"lengths must lie in [1, {tokens.shape[1]}], got {lengths.tolist()}")
    batch, seq = tokens.shape
    positions = torch.arange(seq, device=tokens.device).expand(batch, seq)
    logits = model(tokens, positions, prefill_mask(lengths, seq, cache_length(model)), lengths)
    return logits[torch.arange(batch, device=tokens.device), lengths - 1]


@torch.inference_mode()
def decode_step(model: Transformer, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Feed one token per row (batch,) at its own cache position (batch,); return the next logits.

    No mask is built: each row's filled length, its position + 1, already hides every later cache slot.
    """
    if tokens.dim() != 1 or positions.shape != tokens.shape:
        raise ValueError(f"tokens and positions must both be (batch,), got {tuple(tokens.shape)} "
                         f"and {tuple(positions.shape)}")
    cache_length(model)  # raises when there is no cache to decode against
    logits = model(tokens.unsqueeze(1), positions.unsqueeze(1), None, positions + 1)
    return logits[:, -1]


@torch.inference_mode()
def generate(model: Transformer, prompts: Sequence[Sequence[int]], params: SamplingParams | None = None
             ) -> list[list[int]]:
    """Continue each prompt; returns only the new tokens, cut after ``stop_token`` if one appears.

    Sets up a KV cache sized for this batch and removes it afterwards.
    """
    params = params or SamplingParams()
    device = next(model.parameters()).device
    tokens, lengths = pad_prompts(prompts, device=device)
    total = int(lengths.max()) + params.max_new_tokens
    if total > model.config.max_seq_len:
        raise ValueError(f"longest prompt ({int(lengths.max())}) + max_new_tokens "
                         f"({params.max_new_tokens}) = {total} exceeds the model's max_seq_len "
                         f"{model.config.max_seq_len}")
    generator = None
    if params.seed is not None:
        generator = torch.Generator(device=device).manual_seed(params.seed)
    model.setup_cache(len(prompts), total)
    try:
        logits = prefill(model, tokens, lengths)
        positions = lengths.clone()
        finished = torch.zeros(len(prompts), dtype=torch.bool, device=device)
        produced = []
        for step in range(params.max_new_tokens):
            next_tokens = sample_tokens(logits, params.temperature, params.top_p, generator)
            produced.append(next_tokens)
            if params.stop_token is not None:
                finished |= next_tokens == params.stop_token
            if step == params.max_new_tokens - 1 or bool(finished.all()):
                break
            logits = decode_step(model, next_tokens, positions)
            positions += 1
    finally:
        model.clear_cache()
    rows = torch.stack(produced, dim=1).tolist()
    if params.stop_token is None:
        return rows
    return [row[: row.index(params.stop_token) + 1] if params.stop_token in row else row for row in rows]
