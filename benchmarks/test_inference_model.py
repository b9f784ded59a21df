"""The shared transformer's prefill and decode throughput through the generation API.

On the CPU the ops take the torch reference path (Triton needs a GPU; interpreter timings are
never published, so these tests refuse to run under ``TRITON_INTERPRET=1``). On a GPU the same
loop runs once on the Triton kernels and once inside ``ops.reference_only()``, the torch path the
kernels must beat. Weights are random from seed 0: speed does not depend on them.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

from ai_system import ops
from ai_system.inference.generate import decode_step, prefill
from ai_system.models.config import get_config
from ai_system.models.transformer import Transformer
from ai_system.ops.dispatch import interpreting

BATCH = 4


@pytest.fixture(autouse=True)
def no_interpreter() -> None:
    if interpreting():
        pytest.skip("TRITON_INTERPRET=1 is set: interpreter timings are never published")


def build(config_name: str, device: str, dtype: torch.dtype) -> Transformer:
    """Built directly on ``device``: a 1B model initialized on the CPU first would take longer than the benchmark."""
    torch.manual_seed(0)
    with torch.device(device):
        model = Transformer(get_config(config_name))
    return model.to(dtype=dtype).eval()


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def ops_path(path: str) -> contextlib.AbstractContextManager[None]:
    """``triton``: the ops pick kernels where they can; ``torch``: every op on its reference."""
    return ops.reference_only() if path == "torch" else contextlib.nullcontext()


def measure_prefill(benchmark, record, config_name: str, prompt_len: int, device: str, dtype: torch.dtype,
                    rounds: int, path: str = "torch") -> None:
    model = build(config_name, device, dtype)
    tokens = torch.randint(0, model.config.vocab_size, (BATCH, prompt_len), device=device)
    lengths = torch.full((BATCH,), prompt_len, device=device)
    model.setup_cache(BATCH, prompt_len)

    def run() -> None:
        with ops_path(path):
            prefill(model, tokens, lengths)
        sync(device)

    benchmark.pedantic(run, rounds=rounds, iterations=1, warmup_rounds=1)
    model.clear_cache()
    dtype_name = str(dtype).removeprefix("torch.")
    record(name=f"prefill_tokens_per_s_{device}", value=BATCH * prompt_len / benchmark.stats.stats.median,
           unit="tokens/s", better="higher", area="inference",
           scale=f"{config_name} model, batch {BATCH} × {prompt_len}-token prompts",
           params={"config": config_name, "batch": BATCH, "prompt_len": prompt_len, "dtype": dtype_name,
                   "device": device, "path": path},
           x="prompt_len", description="prompt tokens processed per second by prefill (fills the KV cache)")


def measure_decode(benchmark, record, config_name: str, context: int, steps: int, device: str, dtype: torch.dtype,
                   rounds: int, path: str = "torch") -> None:
    model = build(config_name, device, dtype)
    tokens = torch.randint(0, model.config.vocab_size, (BATCH, context), device=device)
    lengths = torch.full((BATCH,), context, device=device)
    next_tokens = torch.randint(0, model.config.vocab_size, (BATCH,), device=device)
    model.setup_cache(BATCH, context + steps)
    with ops_path(path):
        prefill(model, tokens, lengths)

    def run() -> None:
        positions = lengths.clone()
        with ops_path(path):
            for _ in range(steps):
                decode_step(model, next_tokens, positions)
                positions += 1
        sync(device)

    benchmark.pedantic(run, rounds=rounds, iterations=1, warmup_rounds=1)
    model.clear_cache()
    seconds = benchmark.stats.stats.median
    dtype_name = str(dtype).removeprefix("torch.")
    params = {"config": config_name, "batch": BATCH, "context": context, "dtype": dtype_name, "device": device,
              "path": path}
    scale = f"{config_name} model, batch {BATCH}, {steps} steps after a {context}-token context"
    record(name=f"decode_tokens_per_s_{device}", value=BATCH * steps / seconds, unit="tokens/s", better="higher",
           area="inference", scale=scale, params=params, x="context",
           description="generated tokens per second across the batch, one cached decode step per token")
    record(name=f"decode_step_latency_{device}", value=seconds / steps * 1e3, unit="ms", better="lower",
           area="inference", scale=scale, params=params, x="context",
           description="wall time of one decode step for the whole batch (time per output token)")


def test_prefill_cpu(benchmark, record, profile):
    measure_prefill(benchmark, record, profile.pick(quick="small", full="125M"), prompt_len=128, device="cpu",
                    dtype=torch.float32, rounds=profile.pick(quick=3, full=10))


def test_decode_cpu(benchmark, record, profile):
    measure_decode(benchmark, record, profile.pick(quick="small", full="125M"), context=128,
                   steps=profile.pick(quick=8, full=64), device="cpu", dtype=torch.float32,
                   rounds=profile.pick(quick=3, full=5))


@pytest.mark.gpu
@pytest.mark.parametrize("path", ["triton", "torch"])
def test_prefill_gpu(benchmark, record, path):
    measure_prefill(benchmark, record, "1B", prompt_len=1024, device="cuda", dtype=torch.bfloat16, rounds=10,
                    path=path)


@pytest.mark.gpu
@pytest.mark.parametrize("path", ["triton", "torch"])
def test_decode_gpu(benchmark, record, path):
    measure_decode(benchmark, record, "1B", context=1024, steps=64, device="cuda", dtype=torch.bfloat16, rounds=5,
                   path=path)
