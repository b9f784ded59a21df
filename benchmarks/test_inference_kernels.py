"""The Triton kernels of ``ai_system.ops`` on the GPU against torch eager and ``torch.compile``, in one run.

Memory-bound kernels report GB/s (bytes each must read and write once, over the median time) and
their fraction of the copy bandwidth measured in the same run; matmul and attention report TFLOP/s
and the fraction of the measured bf16 matmul peak. Timings come from ``triton.testing.do_bench``,
which clears the L2 cache before every call; figures are medians, with the min–max of do_bench's
repeats as their spread, judged against the peak (``Peak.baseline``) or the torch peer's own time
and the goals on docs/systems/inference-kernels.md. Each test wraps its sweep in one
``benchmark.pedantic`` round so the run is saved. GPU only: interpreter timings are never published.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from ai_system import ops
from ai_system.bench.metrics import Baseline, Spread
from ai_system.bench.peaks import Peak
from ai_system.models.transformer import rope_tables
from ai_system.ops import reference

pytestmark = pytest.mark.gpu

DTYPE = torch.bfloat16
ELEMENT = 2
ROWS = 16384
ROW_WIDTHS = (1024, 2048, 4096, 8192, 16384)


MEMORY_BOUND_GOAL = 85.0
"""% of the measured copy bandwidth a memory-bound kernel must reach at sizes >= 4096 (issue 15; the
narrower rows pay launch and tail costs that no kernel hides)."""
QUESTIONS = {
    "bytes": "What share of the measured copy bandwidth does each memory-bound kernel reach?",
    "flops": "What share of the measured bf16 matmul peak does each compute-bound kernel reach?",
    "speedup": "How fast is each Triton kernel against torch eager on the same GPU?",
}


def timings_ms(fn: Callable[[], Any]) -> Spread:
    """Min, median and max milliseconds per call over do_bench's repeats, the L2 cache flushed before each
    call (the first call compiles, outside the timing)."""
    import triton.testing

    fn()
    torch.cuda.synchronize()
    return Spread.of(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="all"))


def rates(work: float, times: Spread, divisor: float) -> Spread:
    """Work per second, in units of ``divisor``, for each of the min/median/max times (fastest is highest)."""
    return Spread(work / (times.max * 1e-3) / divisor, work / (times.median * 1e-3) / divisor,
                  work / (times.min * 1e-3) / divisor, times.repeats)


def compare(benchmark, record, op: str, impls: dict[str, Callable[[], Any]], work: float, per: str,
            peak: Peak, params: dict[str, Any], x: str, scale: str, goal_fraction: float | None = None,
            goal_speedup: float | None = None) -> dict[str, Spread]:
    """Time every implementation and publish rate per implementation, the Triton kernel's fraction of
    ``peak`` (a ``Peak`` measured in this run), and its speedup over each torch peer.
    ``per`` is "bytes" (GB/s) or "flops" (TFLOP/s); the goals are in % of the peak and × torch eager."""
    times: dict[str, Spread] = {}
    benchmark.pedantic(lambda: times.update({name: timings_ms(fn) for name, fn in impls.items()}),
                       rounds=1, iterations=1)
    divisor, unit = (1e9, "GB/s") if per == "bytes" else (1e12, "TFLOP/s")
    metric = "bandwidth" if per == "bytes" else "throughput"
    for name, spread in times.items():
        rate = rates(work, spread, divisor)
        record(name=f"{op}_{metric}", value=rate.median, unit=unit, better="higher", area="inference",
               scale=scale, params={**params, "impl": name}, x=x, spread=rate,
               description=f"{op} by {name}: {per} it must move/compute over the median do_bench time")
    triton_rate = rates(work, times["triton"], divisor)
    fraction = triton_rate.scaled(100 * divisor / peak.rate)
    record(name=f"{op}_fraction_of_peak", value=fraction.median, unit="%", better="higher", area="inference",
           scale=scale, params=params, x=x, question=QUESTIONS[per], spread=fraction,
           baseline=peak.baseline(achieved=triton_rate.median * divisor),
           goal=goal_fraction,
           description=f"Triton {op} as a share of the {peak.label} measured in the same run")
    for peer in (name for name in times if name != "triton"):
        record(name=f"{op}_speedup_vs_{peer}", value=times[peer].median / times["triton"].median, unit="×",
               better="higher", area="inference", scale=scale, params=params, x=x, question=QUESTIONS["speedup"],
               baseline=Baseline(peer.replace("_", " "), times[peer].median, "ms", ours=times["triton"].median),
               goal=goal_speedup if peer == "torch_eager" else None,
               description=f"{peer} time / Triton time for {op}, medians (>1: the kernel is faster)")
    return times


def memory_bound_goal(size: int) -> float | None:
    return MEMORY_BOUND_GOAL if size >= 4096 else None


def with_compiled(triton_fn: Callable[[], Any], eager: Callable[..., Any], *args: Any
                  ) -> dict[str, Callable[[], Any]]:
    compiled = torch.compile(eager, dynamic=False)
    return {"triton": triton_fn, "torch_eager": lambda: eager(*args), "torch_compile": lambda: compiled(*args)}


@pytest.mark.parametrize("cols", ROW_WIDTHS)
def test_softmax_bandwidth(benchmark, record, peaks, cols):
    x = torch.randn(ROWS, cols, device="cuda", dtype=DTYPE)
    compare(benchmark, record, "softmax", with_compiled(lambda: ops.softmax(x), lambda t: torch.softmax(t, -1), x),
            work=2 * x.numel() * ELEMENT, per="bytes", peak=peaks.copy("cuda"),
            params={"cols": cols, "rows": ROWS, "dtype": "bfloat16"}, x="cols", scale=f"{ROWS} rows × {cols}",
            goal_fraction=memory_bound_goal(cols))


@pytest.mark.parametrize("cols", ROW_WIDTHS)
def test_rms_norm_bandwidth(benchmark, record, peaks, cols):
    x = torch.randn(ROWS, cols, device="cuda", dtype=DTYPE)
    weight = torch.randn(cols, device="cuda", dtype=DTYPE)
    impls = with_compiled(lambda: ops.rms_norm(x, weight), lambda t, w: F.rms_norm(t, (cols,), w, 1e-5), x, weight)
    compare(benchmark, record, "rms_norm", impls, work=2 * x.numel() * ELEMENT, per="bytes",
            peak=peaks.copy("cuda"), params={"cols": cols, "rows": ROWS, "dtype": "bfloat16"}, x="cols",
            scale=f"{ROWS} rows × {cols}", goal_fraction=memory_bound_goal(cols))


@pytest.mark.parametrize("tokens", (1024, 4096, 16384))
def test_rope_bandwidth(benchmark, record, peaks, tokens):
    heads, head_dim, batch = 32, 128, 4
    seq = tokens // batch
    x = torch.randn(batch, seq, heads, head_dim, device="cuda", dtype=DTYPE)
    cos, sin = rope_tables(head_dim, seq, 10000.0, device="cuda")
    cos, sin = cos.unsqueeze(0), sin.unsqueeze(0)
    compare(benchmark, record, "rope", with_compiled(lambda: ops.rope(x, cos, sin), reference.rope, x, cos, sin),
            work=2 * x.numel() * ELEMENT + 2 * cos.numel() * 4, per="bytes", peak=peaks.copy("cuda"),
            params={"tokens": tokens, "heads": heads, "head_dim": head_dim, "dtype": "bfloat16"}, x="tokens",
            scale=f"{tokens} tokens × {heads} heads × {head_dim}", goal_fraction=memory_bound_goal(tokens))


@pytest.mark.parametrize("size", (1024, 2048, 4096, 8192))
def test_matmul_gelu_throughput(benchmark, record, peaks, size):
    x = torch.randn(size, size, device="cuda", dtype=DTYPE)
    weight = torch.randn(size, size, device="cuda", dtype=DTYPE) / size**0.5
    bias = torch.randn(size, device="cuda", dtype=DTYPE)
    impls = with_compiled(lambda: ops.matmul_bias_act(x, weight, bias, "gelu"),
                          lambda a, w, b: F.gelu(F.linear(a, w, b)), x, weight, bias)
    compare(benchmark, record, "matmul_bias_gelu", impls, work=2.0 * size**3, per="flops",
            peak=peaks.matmul("cuda", "bfloat16"), params={"size": size, "dtype": "bfloat16"}, x="size",
            scale=f"{size}×{size} @ {size}×{size}ᵀ + bias, GELU", goal_speedup=0.9)


@pytest.mark.parametrize("tokens", (16, 512, 4096))
def test_swiglu_matmul_throughput(benchmark, record, peaks, tokens):
    dim, hidden = 4096, 14336
    x = torch.randn(tokens, dim, device="cuda", dtype=DTYPE)
    w_gate = torch.randn(hidden, dim, device="cuda", dtype=DTYPE) / dim**0.5
    w_up = torch.randn(hidden, dim, device="cuda", dtype=DTYPE) / dim**0.5
    impls = with_compiled(lambda: ops.swiglu_matmul(x, w_gate, w_up),
                          lambda a, g, u: F.silu(F.linear(a, g)) * F.linear(a, u), x, w_gate, w_up)
    compare(benchmark, record, "swiglu_matmul", impls, work=2 * 2.0 * tokens * dim * hidden, per="flops",
            peak=peaks.matmul("cuda", "bfloat16"), params={"tokens": tokens, "dim": dim, "hidden": hidden},
            x="tokens", scale=f"{tokens} tokens, {dim} → 2×{hidden} (8B-shaped MLP)", goal_speedup=0.9)


@pytest.mark.parametrize("seq", (1024, 2048, 4096, 8192))
def test_attention_prefill_throughput(benchmark, record, peaks, seq):
    batch, heads, head_dim = 4, 32, 128
    q, k, v = (torch.randn(batch, heads, seq, head_dim, device="cuda", dtype=DTYPE) for _ in range(3))
    impls = with_compiled(lambda: ops.attention(q, k, v, causal=True),
                          lambda a, b, c: F.scaled_dot_product_attention(a, b, c, is_causal=True), q, k, v)
    compare(benchmark, record, "attention_causal", impls, work=2.0 * batch * heads * seq * seq * head_dim,
            per="flops", peak=peaks.matmul("cuda", "bfloat16"),
            params={"seq": seq, "batch": batch, "heads": heads, "head_dim": head_dim}, x="seq",
            scale=f"batch {batch}, {heads} heads × {head_dim}, causal (half of 4·s²·d FLOPs per head)",
            goal_speedup=0.7)


@pytest.mark.parametrize("cache_len", (1024, 4096, 16384, 65536))
def test_decode_attention_bandwidth(benchmark, record, peaks, cache_len):
    batch, q_heads, kv_heads, head_dim = 8, 32, 8, 128
    q = torch.randn(batch, q_heads, 1, head_dim, device="cuda", dtype=DTYPE)
    k, v = (torch.randn(batch, kv_heads, cache_len, head_dim, device="cuda", dtype=DTYPE) for _ in range(2))
    impls = with_compiled(lambda: ops.decode_attention(q, k, v),
                          lambda a, b, c: F.scaled_dot_product_attention(a, b, c, enable_gqa=True), q, k, v)
    compare(benchmark, record, "decode_attention", impls, work=2 * k.numel() * ELEMENT, per="bytes",
            peak=peaks.copy("cuda"),
            params={"cache_len": cache_len, "batch": batch, "q_heads": q_heads, "kv_heads": kv_heads},
            x="cache_len", scale=f"batch {batch}, {q_heads} query / {kv_heads} KV heads × {head_dim}, one token",
            goal_fraction=memory_bound_goal(cache_len))


@pytest.mark.parametrize("n_keys", (65536, 262144, 1048576))
def test_similarity_topk_throughput(benchmark, record, peaks, n_keys):
    n_queries, dim, k = 1024, 128, 10
    queries = torch.randn(n_queries, dim, device="cuda", dtype=DTYPE)
    keys = torch.randn(n_keys, dim, device="cuda", dtype=DTYPE)
    impls = with_compiled(lambda: ops.similarity_topk(queries, keys, k),
                          lambda q, kk: (q @ kk.T).topk(k, dim=1), queries, keys)
    compare(benchmark, record, "similarity_topk", impls, work=2.0 * n_queries * n_keys * dim, per="flops",
            peak=peaks.matmul("cuda", "bfloat16"), params={"n_keys": n_keys, "queries": n_queries, "k": k},
            x="n_keys", scale=f"{n_queries} queries × {n_keys} keys × {dim}, top {k}")
