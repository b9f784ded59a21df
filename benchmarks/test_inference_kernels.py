"""The Triton kernels of ``ai_system.ops`` on the GPU against torch eager and ``torch.compile``, in one run.

Memory-bound kernels report GB/s (bytes each must read and write once, over the median time) and
their fraction of the copy bandwidth measured in the same run; matmul and attention report TFLOP/s
and the fraction of the measured bf16 matmul peak. Timings come from ``triton.testing.do_bench``,
which clears the L2 cache before every call. Each test wraps its sweep in one
``benchmark.pedantic`` round so the run is saved. GPU only: interpreter timings are never published.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from ai_system import ops
from ai_system.models.transformer import rope_tables
from ai_system.ops import reference

pytestmark = pytest.mark.gpu

DTYPE = torch.bfloat16
ELEMENT = 2
ROWS = 16384
ROW_WIDTHS = (1024, 2048, 4096, 8192, 16384)


def median_ms(fn: Callable[[], Any]) -> float:
    """Median milliseconds per call with L2 flushed between calls (first call compiles, outside the timing)."""
    import triton.testing

    fn()
    torch.cuda.synchronize()
    return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")


def compare(benchmark, record, op: str, impls: dict[str, Callable[[], Any]], work: float, per: str,
            peak: float, params: dict[str, Any], x: str, scale: str) -> dict[str, float]:
    """Time every implementation and publish rate per implementation, the Triton kernel's fraction of
    ``peak``, and its speedup over eager and compiled torch. ``per`` is "bytes" (GB/s) or "flops" (TFLOP/s)."""
    times: dict[str, float] = {}
    benchmark.pedantic(lambda: times.update({name: median_ms(fn) for name, fn in impls.items()}),
                       rounds=1, iterations=1)
    divisor, unit = (1e9, "GB/s") if per == "bytes" else (1e12, "TFLOP/s")
    metric = "bandwidth" if per == "bytes" else "throughput"
    for name, ms in times.items():
        record(name=f"{op}_{metric}", value=work / (ms * 1e-3) / divisor, unit=unit, better="higher",
               area="inference", scale=scale, params={**params, "impl": name}, x=x,
               description=f"{op} by {name}: {per} it must move/compute over the median do_bench time")
    triton_rate = work / (times["triton"] * 1e-3)
    peak_name = "copy bandwidth" if per == "bytes" else "bf16 matmul peak"
    record(name=f"{op}_fraction_of_peak", value=100 * triton_rate / peak, unit="%", better="higher",
           area="inference", scale=scale, params=params, x=x,
           description=f"Triton {op} as a share of the {peak_name} measured in the same run")
    for baseline in ("torch_eager", "torch_compile"):
        record(name=f"{op}_speedup_vs_{baseline}", value=times[baseline] / times["triton"], unit="×",
               better="higher", area="inference", scale=scale, params=params, x=x,
               description=f"{baseline} time / Triton time for {op} (>1: the kernel is faster)")
    return times


def with_compiled(triton_fn: Callable[[], Any], eager: Callable[..., Any], *args: Any
                  ) -> dict[str, Callable[[], Any]]:
    compiled = torch.compile(eager, dynamic=False)
    return {"triton": triton_fn, "torch_eager": lambda: eager(*args), "torch_compile": lambda: compiled(*args)}


@pytest.mark.parametrize("cols", ROW_WIDTHS)
def test_softmax_bandwidth(benchmark, record, peaks, cols):
    x = torch.randn(ROWS, cols, device="cuda", dtype=DTYPE)
    compare(benchmark, record, "softmax", with_compiled(lambda: ops.softmax(x), lambda t: torch.softmax(t, -1), x),
            work=2 * x.numel() * ELEMENT, per="bytes", peak=peaks.copy_bandwidth("cuda"),
            params={"cols": cols, "rows": ROWS, "dtype": "bfloat16"}, x="cols", scale=f"{ROWS} rows × {cols}")


@pytest.mark.parametrize("cols", ROW_WIDTHS)
def test_rms_norm_bandwidth(benchmark, record, peaks, cols):
    x = torch.randn(ROWS, cols, device="cuda", dtype=DTYPE)
    weight = torch.randn(cols, device="cuda", dtype=DTYPE)
    impls = with_compiled(lambda: ops.rms_norm(x, weight), lambda t, w: F.rms_norm(t, (cols,), w, 1e-5), x, weight)
    compare(benchmark, record, "rms_norm", impls, work=2 * x.numel() * ELEMENT, per="bytes",
            peak=peaks.copy_bandwidth("cuda"), params={"cols": cols, "rows": ROWS, "dtype": "bfloat16"}, x="cols",
            scale=f"{ROWS} rows × {cols}")


@pytest.mark.parametrize("tokens", (1024, 4096, 16384))
def test_rope_bandwidth(benchmark, record, peaks, tokens):
    heads, head_dim, batch = 32, 128, 4
    seq = tokens // batch
    x = torch.randn(batch, seq, heads, head_dim, device="cuda", dtype=DTYPE)
    cos, sin = rope_tables(head_dim, seq, 10000.0, device="cuda")
    cos, sin = cos.unsqueeze(0), sin.unsqueeze(0)
    compare(benchmark, record, "rope", with_compiled(lambda: ops.rope(x, cos, sin), reference.rope, x, cos, sin),
            work=2 * x.numel() * ELEMENT + 2 * cos.numel() * 4, per="bytes", peak=peaks.copy_bandwidth("cuda"),
            params={"tokens": tokens, "heads": heads, "head_dim": head_dim, "dtype": "bfloat16"}, x="tokens",
            scale=f"{tokens} tokens × {heads} heads × {head_dim}")


@pytest.mark.parametrize("size", (1024, 2048, 4096, 8192))
def test_matmul_gelu_throughput(benchmark, record, peaks, size):
    x = torch.randn(size, size, device="cuda", dtype=DTYPE)
    weight = torch.randn(size, size, device="cuda", dtype=DTYPE) / size**0.5
    bias = torch.randn(size, device="cuda", dtype=DTYPE)
    impls = with_compiled(lambda: ops.matmul_bias_act(x, weight, bias, "gelu"),
                          lambda a, w, b: F.gelu(F.linear(a, w, b)), x, weight, bias)
    compare(benchmark, record, "matmul_bias_gelu", impls, work=2.0 * size**3, per="flops",
            peak=peaks.matmul_flops("cuda", "bfloat16"), params={"size": size, "dtype": "bfloat16"}, x="size",
            scale=f"{size}×{size} @ {size}×{size}ᵀ + bias, GELU")


@pytest.mark.parametrize("tokens", (16, 512, 4096))
def test_swiglu_matmul_throughput(benchmark, record, peaks, tokens):
    dim, hidden = 4096, 14336
    x = torch.randn(tokens, dim, device="cuda", dtype=DTYPE)
    w_gate = torch.randn(hidden, dim, device="cuda", dtype=DTYPE) / dim**0.5
    w_up = torch.randn(hidden, dim, device="cuda", dtype=DTYPE) / dim**0.5
    impls = with_compiled(lambda: ops.swiglu_matmul(x, w_gate, w_up),
                          lambda a, g, u: F.silu(F.linear(a, g)) * F.linear(a, u), x, w_gate, w_up)
    compare(benchmark, record, "swiglu_matmul", impls, work=2 * 2.0 * tokens * dim * hidden, per="flops",
            peak=peaks.matmul_flops("cuda", "bfloat16"), params={"tokens": tokens, "dim": dim, "hidden": hidden},
            x="tokens", scale=f"{tokens} tokens, {dim} → 2×{hidden} (8B-shaped MLP)")


@pytest.mark.parametrize("seq", (1024, 2048, 4096, 8192))
def test_attention_prefill_throughput(benchmark, record, peaks, seq):
    batch, heads, head_dim = 4, 32, 128
    q, k, v = (torch.randn(batch, heads, seq, head_dim, device="cuda", dtype=DTYPE) for _ in range(3))
    impls = with_compiled(lambda: ops.attention(q, k, v, causal=True),
                          lambda a, b, c: F.scaled_dot_product_attention(a, b, c, is_causal=True), q, k, v)
    compare(benchmark, record, "attention_causal", impls, work=2.0 * batch * heads * seq * seq * head_dim,
            per="flops", peak=peaks.matmul_flops("cuda", "bfloat16"),
            params={"seq": seq, "batch": batch, "heads": heads, "head_dim": head_dim}, x="seq",
            scale=f"batch {batch}, {heads} heads × {head_dim}, causal (half of 4·s²·d FLOPs per head)")


@pytest.mark.parametrize("cache_len", (1024, 4096, 16384, 65536))
def test_decode_attention_bandwidth(benchmark, record, peaks, cache_len):
    batch, q_heads, kv_heads, head_dim = 8, 32, 8, 128
    q = torch.randn(batch, q_heads, 1, head_dim, device="cuda", dtype=DTYPE)
    k, v = (torch.randn(batch, kv_heads, cache_len, head_dim, device="cuda", dtype=DTYPE) for _ in range(2))
    impls = with_compiled(lambda: ops.decode_attention(q, k, v),
                          lambda a, b, c: F.scaled_dot_product_attention(a, b, c, enable_gqa=True), q, k, v)
    compare(benchmark, record, "decode_attention", impls, work=2 * k.numel() * ELEMENT, per="bytes",
            peak=peaks.copy_bandwidth("cuda"),
            params={"cache_len": cache_len, "batch": batch, "q_heads": q_heads, "kv_heads": kv_heads},
            x="cache_len", scale=f"batch {batch}, {q_heads} query / {kv_heads} KV heads × {head_dim}, one token")


@pytest.mark.parametrize("n_keys", (65536, 262144, 1048576))
def test_similarity_topk_throughput(benchmark, record, peaks, n_keys):
    n_queries, dim, k = 1024, 128, 10
    queries = torch.randn(n_queries, dim, device="cuda", dtype=DTYPE)
    keys = torch.randn(n_keys, dim, device="cuda", dtype=DTYPE)
    impls = with_compiled(lambda: ops.similarity_topk(queries, keys, k),
                          lambda q, kk: (q @ kk.T).topk(k, dim=1), queries, keys)
    compare(benchmark, record, "similarity_topk", impls, work=2.0 * n_queries * n_keys * dim, per="flops",
            peak=peaks.matmul_flops("cuda", "bfloat16"), params={"n_keys": n_keys, "queries": n_queries, "k": k},
            x="n_keys", scale=f"{n_queries} queries × {n_keys} keys × {dim}, top {k}")
