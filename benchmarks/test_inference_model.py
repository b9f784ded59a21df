"""The shared transformer's prefill and decode throughput through the generation API.

On the CPU the ops take the torch reference path (Triton needs a GPU; interpreter timings are
never published, so these tests refuse to run under ``TRITON_INTERPRET=1``). On a GPU the same
loop runs once on the Triton kernels and once inside ``ops.reference_only()``, the torch path the
kernels must beat. Weights are random from seed 0: speed does not depend on them.

Decode is memory-bound at small batches: each step must read every weight once plus each row's
cached keys and values. Its roofline figure divides those bytes per step by the step time and by the
copy bandwidth measured next to it with the same threads (goal: 60 %, issue 15; gpt-fast reaches
about 70 % of HBM bandwidth on a GPU with ``torch.compile``).
"""

from __future__ import annotations

import contextlib

import pytest
import torch

from ai_system import ops
from ai_system.bench.metrics import Spread
from ai_system.bench.peaks import MeasuredPeaks
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
    times = Spread.of(list(benchmark.stats.stats.data))
    tokens_per_run = BATCH * prompt_len
    record(name=f"prefill_tokens_per_s_{device}", value=tokens_per_run / times.median,
           spread=Spread(tokens_per_run / times.max, tokens_per_run / times.median, tokens_per_run / times.min,
                         times.repeats),
           question="How many prompt tokens per second does prefill process?",
           unit="tokens/s", better="higher", area="inference",
           scale=f"{config_name} model, batch {BATCH} × {prompt_len}-token prompts",
           params={"config": config_name, "batch": BATCH, "prompt_len": prompt_len, "dtype": dtype_name,
                   "device": device, "path": path},
           x="prompt_len", description="prompt tokens processed per second by prefill (fills the KV cache)")


def decode_bytes_per_step(model: Transformer, batch: int, context: int, steps: int) -> float:
    """Bytes one decode step must read, averaged over ``steps`` steps after a ``context``-token prompt.

    Every weight once (the input embedding only for the ``batch`` rows it gathers, unless the output
    layer shares it), plus each row's keys and values up to its position; the one new key and value
    written per row are left out.
    """
    config = model.config
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    embedding = model.tok_embeddings.weight
    if not config.tie_embeddings:
        weights -= (embedding.shape[0] - batch) * embedding.shape[1] * embedding.element_size()
    mean_filled = context + (steps + 1) / 2
    kv = 2 * config.n_layers * config.kv_heads * config.head_dim * embedding.element_size() * mean_filled * batch
    return float(weights + kv)


def measure_decode(benchmark, record, config_name: str, context: int, steps: int, device: str, dtype: torch.dtype,
                   rounds: int, path: str = "torch", batch: int = BATCH, peaks: MeasuredPeaks | None = None
                   ) -> None:
    """Decode tokens/s and step latency; with ``peaks``, also the share of the memory roofline reached."""
    model = build(config_name, device, dtype)
    tokens = torch.randint(0, model.config.vocab_size, (batch, context), device=device)
    lengths = torch.full((batch,), context, device=device)
    next_tokens = torch.randint(0, model.config.vocab_size, (batch,), device=device)
    model.setup_cache(batch, context + steps)
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
    times = Spread.of(list(benchmark.stats.stats.data))
    seconds = times.median
    dtype_name = str(dtype).removeprefix("torch.")
    params = {"config": config_name, "batch": batch, "context": context, "dtype": dtype_name, "device": device,
              "path": path}
    scale = f"{config_name} model, batch {batch}, {steps} steps after a {context}-token context"
    record(name=f"decode_tokens_per_s_{device}", value=batch * steps / seconds, unit="tokens/s", better="higher",
           area="inference", scale=scale, params=params, x="batch",
           spread=Spread(batch * steps / times.max, batch * steps / seconds, batch * steps / times.min, times.repeats),
           question="How many tokens per second does cached decoding generate?",
           description="generated tokens per second across the batch, one cached decode step per token")
    record(name=f"decode_step_latency_{device}", value=seconds / steps * 1e3, unit="ms", better="lower",
           area="inference", scale=scale, params=params, x="batch",
           spread=times.scaled(1e3 / steps),
           description="wall time of one decode step for the whole batch (time per output token)")
    if peaks is None:
        return
    peak = peaks.remeasure_copy(device, threads=torch.get_num_threads())
    step_bytes = decode_bytes_per_step(model, batch, context, steps)
    achieved = step_bytes * steps / seconds
    record(name=f"decode_memory_roofline_fraction_{device}", value=100 * achieved / peak.rate, unit="%",
           better="higher", area="inference", scale=scale, params=params, x="batch", goal=60.0,
           baseline=peak.baseline(achieved=achieved),
           question="What share of the memory roofline does decoding reach?",
           description=f"bytes a step must read (weights + cached K/V, {step_bytes / 1e6:.1f} MB) per step time, "
                       f"over the copy bandwidth measured next to it with {peak.threads} threads")


def test_prefill_cpu(benchmark, record, profile):
    measure_prefill(benchmark, record, profile.pick(quick="small", full="125M"), prompt_len=128, device="cpu",
                    dtype=torch.float32, rounds=profile.pick(quick=3, full=10))


@pytest.mark.parametrize("batch", [1, 4])
def test_decode_cpu(benchmark, record, profile, peaks, batch):
    measure_decode(benchmark, record, profile.pick(quick="small", full="125M"), context=128,
                   steps=profile.pick(quick=8, full=64), device="cpu", dtype=torch.float32,
                   rounds=profile.pick(quick=3, full=5), batch=batch, peaks=peaks)


@pytest.mark.gpu
@pytest.mark.parametrize("path", ["triton", "torch"])
def test_prefill_gpu(benchmark, record, path):
    measure_prefill(benchmark, record, "1B", prompt_len=1024, device="cuda", dtype=torch.bfloat16, rounds=10,
                    path=path)


@pytest.mark.gpu
@pytest.mark.parametrize("path", ["triton", "torch"])
def test_decode_gpu(benchmark, record, peaks, path):
    measure_decode(benchmark, record, "1B", context=1024, steps=64, device="cuda", dtype=torch.bfloat16, rounds=5,
                   path=path, peaks=peaks)
