"""Every kernel against its torch reference, through the public ops, on the kernel path.

Shapes that are not powers of two, size-1 and very long rows, non-contiguous inputs; fp32 and fp16
(bf16 too on a GPU). Tolerances per dtype live in conftest.py.
"""

from __future__ import annotations

import pytest
import torch

from ai_system.inference import ops
from ai_system.inference.kernels.attention import attention_reference
from ai_system.inference.kernels.layernorm import layer_norm_reference
from ai_system.inference.kernels.matmul import matmul_bias_act_reference, swiglu_matmul_reference
from ai_system.inference.kernels.rmsnorm import rms_norm_reference
from ai_system.inference.kernels.rope import rope_reference
from ai_system.inference.kernels.similarity_topk import similarity_topk_reference
from ai_system.inference.kernels.softmax import softmax_reference
from ai_system.inference.kernels.swiglu import swiglu_reference
from ai_system.models.transformer import rope_tables

ROW_SHAPES = [(3, 1), (5, 37), (2, 3, 1000), (1, 20000)]


def randn(*shape: int, dtype: torch.dtype, device: str, scale: float = 1.0) -> torch.Tensor:
    return (torch.randn(*shape, device=device) * scale).to(dtype)


@pytest.fixture(autouse=True)
def seeded() -> None:
    torch.manual_seed(0)


def non_contiguous(x: torch.Tensor) -> torch.Tensor:
    """The same values, laid out so the last dimension is strided."""
    return x.transpose(-1, -2).contiguous().transpose(-1, -2)


@pytest.mark.parametrize("shape", ROW_SHAPES)
def test_softmax(kernels, close, dtype, shape):
    x = randn(*shape, dtype=dtype, device=kernels, scale=3.0)
    assert ops.use_triton(x)
    close(ops.softmax(x), softmax_reference(x), dtype)


@pytest.mark.parametrize("shape", ROW_SHAPES)
def test_rms_norm(kernels, close, dtype, shape):
    x = randn(*shape, dtype=dtype, device=kernels)
    weight = randn(shape[-1], dtype=dtype, device=kernels)
    close(ops.rms_norm(x, weight, 1e-5), rms_norm_reference(x, weight, 1e-5), dtype)


@pytest.mark.parametrize("shape", ROW_SHAPES)
@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm(kernels, close, dtype, shape, affine):
    x = randn(*shape, dtype=dtype, device=kernels, scale=2.0) + 5
    weight = randn(shape[-1], dtype=dtype, device=kernels) if affine else None
    bias = randn(shape[-1], dtype=dtype, device=kernels) if affine else None
    close(ops.layer_norm(x, weight, bias), layer_norm_reference(x, weight, bias, 1e-5), dtype)


def test_row_ops_on_non_contiguous_inputs(kernels, close, dtype):
    x = non_contiguous(randn(6, 45, dtype=dtype, device=kernels))
    weight = randn(45, dtype=dtype, device=kernels)
    assert not x.is_contiguous()
    close(ops.softmax(x), softmax_reference(x), dtype)
    close(ops.rms_norm(x, weight), rms_norm_reference(x, weight, 1e-5), dtype)
    close(ops.layer_norm(x, weight, weight), layer_norm_reference(x, weight, weight, 1e-5), dtype)
    sliced = randn(4, 90, dtype=dtype, device=kernels)[:, ::2]
    close(ops.softmax(sliced), softmax_reference(sliced), dtype)


@pytest.mark.parametrize(("batch", "seq", "heads", "head_dim", "per_row"),
                         [(2, 7, 3, 12, True), (1, 1, 1, 2, False), (3, 5, 4, 64, False)])
def test_rope(kernels, close, dtype, batch, seq, heads, head_dim, per_row):
    cos, sin = rope_tables(head_dim, 64, 10000.0, device=kernels)
    positions = torch.randint(0, 64, (batch if per_row else 1, seq), device=kernels)
    x = randn(batch, seq, heads, head_dim, dtype=dtype, device=kernels)
    close(ops.rope(x, cos[positions], sin[positions]), rope_reference(x, cos[positions], sin[positions]),
          dtype)
    strided = randn(batch, heads, seq, head_dim, dtype=dtype, device=kernels).transpose(1, 2)
    close(ops.rope(strided, cos[positions], sin[positions]),
          rope_reference(strided, cos[positions], sin[positions]), dtype)


ATTENTION_CASES = [
    # batch, q_heads, kv_heads, seq, keys, head_dim
    (2, 4, 2, 37, 37, 16),
    (1, 2, 2, 1, 1, 8),
    (1, 3, 1, 5, 70, 40),
    (2, 2, 2, 33, 33, 64),
]


@pytest.mark.parametrize("case", ATTENTION_CASES)
@pytest.mark.parametrize("causal", [True, False])
def test_attention(kernels, close, dtype, case, causal):
    batch, q_heads, kv_heads, seq, keys, head_dim = case
    q = randn(batch, q_heads, seq, head_dim, dtype=dtype, device=kernels)
    k = randn(batch, kv_heads, keys, head_dim, dtype=dtype, device=kernels)
    v = randn(batch, kv_heads, keys, head_dim, dtype=dtype, device=kernels)
    close(ops.attention(q, k, v, causal=causal), attention_reference(q, k, v, causal=causal), dtype, 2)
    mask = torch.rand(batch, 1, seq, keys, device=kernels) < 0.7
    mask[..., 0] = True
    close(ops.attention(q, k, v, mask=mask, causal=causal),
          attention_reference(q, k, v, mask=mask, causal=causal), dtype, 2)
    lengths = torch.randint(1, keys + 1, (batch,), device=kernels)
    filled = (torch.arange(keys, device=kernels) < lengths.view(-1, 1)).view(batch, 1, 1, keys)
    close(ops.attention(q, k, v, mask=mask, causal=causal, lengths=lengths),
          attention_reference(q, k, v, mask=mask & filled, causal=causal), dtype, 2)


def test_attention_on_strided_views(kernels, close, dtype):
    """q, k, v as the transformer makes them: (batch, seq, heads, dim) memory viewed as (batch, heads, seq, dim)."""
    q = randn(2, 19, 4, 32, dtype=dtype, device=kernels).transpose(1, 2)
    k = randn(2, 19, 2, 32, dtype=dtype, device=kernels).transpose(1, 2)
    v = randn(2, 19, 2, 32, dtype=dtype, device=kernels).transpose(1, 2)
    close(ops.attention(q, k, v, causal=True), attention_reference(q, k, v, causal=True), dtype, 2)


@pytest.mark.parametrize(("batch", "q_heads", "kv_heads", "cache_len", "head_dim"),
                         [(2, 4, 2, 77, 16), (1, 1, 1, 1, 8), (3, 2, 2, 300, 64)])
def test_decode_attention(kernels, close, dtype, batch, q_heads, kv_heads, cache_len, head_dim):
    q = randn(batch, q_heads, 1, head_dim, dtype=dtype, device=kernels)
    k = randn(batch, kv_heads, cache_len, head_dim, dtype=dtype, device=kernels)
    v = randn(batch, kv_heads, cache_len, head_dim, dtype=dtype, device=kernels)
    close(ops.decode_attention(q, k, v), attention_reference(q, k, v), dtype, 2)
    lengths = torch.randint(1, cache_len + 1, (batch,), device=kernels)
    filled = (torch.arange(cache_len, device=kernels) < lengths.view(-1, 1)).view(batch, 1, 1, cache_len)
    close(ops.decode_attention(q, k, v, lengths=lengths), attention_reference(q, k, v, mask=filled),
          dtype, 2)
    mask = torch.rand(batch, 1, 1, cache_len, device=kernels) < 0.5
    mask[..., 0] = True
    close(ops.decode_attention(q, k, v, mask=mask, lengths=lengths),
          attention_reference(q, k, v, mask=mask & filled), dtype, 2)


@pytest.mark.parametrize(("rows", "n_in", "n_out"), [(37, 50, 70), (1, 16, 1), (65, 130, 33)])
@pytest.mark.parametrize("activation", ["none", "gelu", "silu"])
def test_matmul_bias_act(kernels, close, dtype, rows, n_in, n_out, activation):
    x = randn(rows, n_in, dtype=dtype, device=kernels)
    weight = randn(n_out, n_in, dtype=dtype, device=kernels, scale=n_in**-0.5)
    bias = randn(n_out, dtype=dtype, device=kernels)
    close(ops.matmul_bias_act(x, weight, bias, activation),
          matmul_bias_act_reference(x, weight, bias, activation), dtype, 4)
    close(ops.matmul_bias_act(x, weight, None, activation),
          matmul_bias_act_reference(x, weight, None, activation), dtype, 4)


def test_matmul_on_strided_operands(kernels, close, dtype):
    x = randn(3, 40, 24, dtype=dtype, device=kernels).transpose(1, 2)
    weight_t = randn(40, 30, dtype=dtype, device=kernels, scale=40**-0.5)
    close(ops.matmul_bias_act(x, weight_t.T, None, "gelu"),
          matmul_bias_act_reference(x, weight_t.T, None, "gelu"), dtype, 4)


@pytest.mark.parametrize(("rows", "n_in", "hidden"), [(37, 50, 70), (1, 16, 1)])
def test_swiglu_matmul(kernels, close, dtype, rows, n_in, hidden):
    x = randn(2, rows, n_in, dtype=dtype, device=kernels)
    w_gate = randn(hidden, n_in, dtype=dtype, device=kernels, scale=n_in**-0.5)
    w_up = randn(hidden, n_in, dtype=dtype, device=kernels, scale=n_in**-0.5)
    close(ops.swiglu_matmul(x, w_gate, w_up), swiglu_matmul_reference(x, w_gate, w_up), dtype, 4)


@pytest.mark.parametrize("shape", [(1, 1), (7, 171), (2, 3, 3000)])
def test_swiglu_gate(kernels, close, dtype, shape):
    gate = randn(*shape, dtype=dtype, device=kernels)
    up = non_contiguous(randn(*shape, dtype=dtype, device=kernels))
    close(ops.swiglu(gate, up), swiglu_reference(gate, up), dtype)


@pytest.mark.parametrize(("n_queries", "n_keys", "dim", "k"),
                         [(5, 1000, 24, 10), (37, 333, 100, 1), (3, 50, 16, 50), (1, 1, 3, 1), (2, 700, 8, 100)])
def test_similarity_topk(kernels, close, dtype, n_queries, n_keys, dim, k):
    queries = randn(n_queries, dim, dtype=dtype, device=kernels)
    keys = randn(n_keys, dim, dtype=dtype, device=kernels)
    scores, indices = ops.similarity_topk(queries, keys, k)
    expected_scores, _ = similarity_topk_reference(queries, keys, k)
    assert scores.dtype == torch.float32 and indices.dtype == torch.int64
    close(scores, expected_scores, dtype, 4)
    recomputed = (queries.float().unsqueeze(1) * keys.float()[indices]).sum(-1)
    close(scores, recomputed, dtype, 4)
    assert all(len(set(row)) == k for row in indices.tolist())


def test_similarity_topk_on_strided_keys(kernels, close):
    queries = randn(20, 9, dtype=torch.float32, device=kernels).T
    keys = randn(20, 400, dtype=torch.float32, device=kernels).T
    scores, indices = ops.similarity_topk(queries, keys, 7)
    expected_scores, expected_indices = similarity_topk_reference(queries, keys, 7)
    close(scores, expected_scores, torch.float32, 4)
    assert torch.equal(indices, expected_indices)
