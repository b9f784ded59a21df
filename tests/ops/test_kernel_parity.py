"""Every kernel against its torch reference, through the public ops, on the kernel path.

Shapes that are not powers of two, size-1 and very long rows, strided, transposed and broadcast
(stride-0) inputs, and NaN/inf in KV-cache slots past a row's length; fp32 and fp16 (bf16 too on a
GPU). Tolerances per dtype live in conftest.py. Every op call here must launch its kernels
(``every_op_call_launches``): a call that fell back to the reference fails its test.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ai_system import ops
from ai_system.models.transformer import rope_tables
from ai_system.ops import reference

ROW_SHAPES = [(3, 1), (5, 37), (2, 3, 1000), (1, 20000)]


def randn(*shape: int, dtype: torch.dtype, device: str, scale: float = 1.0) -> torch.Tensor:
    return (torch.randn(*shape, device=device) * scale).to(dtype)


@pytest.fixture(autouse=True)
def seeded(every_op_call_launches) -> None:
    torch.manual_seed(0)


def non_contiguous(x: torch.Tensor) -> torch.Tensor:
    """The same values, laid out so the last dimension is strided."""
    return x.transpose(-1, -2).contiguous().transpose(-1, -2)


@pytest.mark.parametrize("shape", ROW_SHAPES)
def test_softmax(kernels, close, dtype, shape):
    x = randn(*shape, dtype=dtype, device=kernels, scale=3.0)
    close(ops.softmax(x), reference.softmax(x), dtype)


@pytest.mark.parametrize("shape", ROW_SHAPES)
def test_rms_norm(kernels, close, dtype, shape):
    x = randn(*shape, dtype=dtype, device=kernels)
    weight = randn(shape[-1], dtype=dtype, device=kernels)
    close(ops.rms_norm(x, weight, 1e-5), reference.rms_norm(x, weight, 1e-5), dtype)


def test_row_ops_on_strided_and_broadcast_inputs(kernels, close, dtype):
    x = non_contiguous(randn(6, 45, dtype=dtype, device=kernels))
    weight = randn(45, dtype=dtype, device=kernels)
    assert not x.is_contiguous()
    close(ops.softmax(x), reference.softmax(x), dtype)
    close(ops.rms_norm(x, weight), reference.rms_norm(x, weight, 1e-5), dtype)
    sliced = randn(4, 90, dtype=dtype, device=kernels)[:, ::2]
    close(ops.softmax(sliced), reference.softmax(sliced), dtype)
    strided_weight = randn(90, dtype=dtype, device=kernels)[::2]
    close(ops.rms_norm(sliced, strided_weight), reference.rms_norm(sliced, strided_weight, 1e-5), dtype)
    one_row = randn(1, 45, dtype=dtype, device=kernels).expand(3, 45)
    close(ops.softmax(one_row), reference.softmax(one_row), dtype)
    scalar_weight = randn(1, dtype=dtype, device=kernels).expand(45)
    close(ops.rms_norm(x, scalar_weight), reference.rms_norm(x, scalar_weight, 1e-5), dtype)


@pytest.mark.parametrize(("batch", "seq", "heads", "head_dim", "per_row"),
                         [(2, 7, 3, 12, True), (1, 1, 1, 2, False), (3, 5, 4, 64, False)])
def test_rope(kernels, close, dtype, batch, seq, heads, head_dim, per_row):
    cos, sin = rope_tables(head_dim, 64, 10000.0, device=kernels)
    positions = torch.randint(0, 64, (batch if per_row else 1, seq), device=kernels)
    x = randn(batch, seq, heads, head_dim, dtype=dtype, device=kernels)
    close(ops.rope(x, cos[positions], sin[positions]), reference.rope(x, cos[positions], sin[positions]), dtype)
    strided = randn(batch, heads, seq, head_dim, dtype=dtype, device=kernels).transpose(1, 2)
    close(ops.rope(strided, cos[positions], sin[positions]),
          reference.rope(strided, cos[positions], sin[positions]), dtype)
    broadcast_cos, broadcast_sin = cos[positions[:1]].expand(batch, -1, -1), sin[positions[:1]].expand(batch, -1, -1)
    close(ops.rope(x, broadcast_cos, broadcast_sin), reference.rope(x, broadcast_cos, broadcast_sin), dtype)


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
    close(ops.attention(q, k, v, causal=causal), reference.attention(q, k, v, causal=causal), dtype, 2)
    mask = torch.rand(batch, 1, seq, keys, device=kernels) < 0.7
    mask[..., 0] = True
    close(ops.attention(q, k, v, mask=mask, causal=causal),
          reference.attention(q, k, v, mask=mask, causal=causal), dtype, 2)
    lengths = torch.randint(1, keys + 1, (batch,), device=kernels)
    close(ops.attention(q, k, v, mask=mask, causal=causal, lengths=lengths),
          reference.attention(q, k, v, mask=mask, causal=causal, lengths=lengths), dtype, 2)


def test_attention_on_strided_views(kernels, close, dtype):
    """q, k, v as the transformer makes them: (batch, seq, heads, dim) memory viewed as (batch, heads, seq, dim)."""
    q = randn(2, 19, 4, 32, dtype=dtype, device=kernels).transpose(1, 2)
    k = randn(2, 19, 2, 32, dtype=dtype, device=kernels).transpose(1, 2)
    v = randn(2, 19, 2, 32, dtype=dtype, device=kernels).transpose(1, 2)
    close(ops.attention(q, k, v, causal=True), reference.attention(q, k, v, causal=True), dtype, 2)


@pytest.mark.parametrize(("batch", "q_heads", "kv_heads", "cache_len", "head_dim"),
                         [(2, 4, 2, 77, 16), (1, 1, 1, 1, 8), (3, 2, 2, 300, 64)])
def test_decode_attention(kernels, close, dtype, batch, q_heads, kv_heads, cache_len, head_dim):
    q = randn(batch, q_heads, 1, head_dim, dtype=dtype, device=kernels)
    k = randn(batch, kv_heads, cache_len, head_dim, dtype=dtype, device=kernels)
    v = randn(batch, kv_heads, cache_len, head_dim, dtype=dtype, device=kernels)
    close(ops.decode_attention(q, k, v), reference.attention(q, k, v), dtype, 2)
    lengths = torch.randint(1, cache_len + 1, (batch,), device=kernels)
    close(ops.decode_attention(q, k, v, lengths=lengths), reference.attention(q, k, v, lengths=lengths), dtype, 2)
    mask = torch.rand(batch, 1, 1, cache_len, device=kernels) < 0.5
    mask[..., 0] = True
    close(ops.decode_attention(q, k, v, mask=mask, lengths=lengths),
          reference.attention(q, k, v, mask=mask, lengths=lengths), dtype, 2)


def fill_past_lengths(cache: torch.Tensor, lengths: torch.Tensor, value: float) -> torch.Tensor:
    """A copy of ``cache`` (batch, heads, slots, dim) holding ``value`` in every slot at or past its row's length."""
    unfilled = torch.arange(cache.shape[2], device=cache.device) >= lengths.view(-1, 1)
    return cache.masked_fill(unfilled[:, None, :, None], value)


@pytest.mark.parametrize("garbage", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("masked", [False, True])
def test_unfilled_cache_slots_never_reach_the_output(kernels, close, dtype, garbage, masked):
    """Slots past a row's length may hold anything (a stale or overflowed row): prefill (causal when
    unmasked, as the transformer calls it) and decode read only below the length, so the answer
    equals the one over a clean cache."""
    batch, q_heads, kv_heads, slots, seq, head_dim = 3, 4, 2, 70, 6, 16
    lengths = torch.tensor([6, 40, 70], device=kernels)[:batch]
    k = fill_past_lengths(randn(batch, kv_heads, slots, head_dim, dtype=dtype, device=kernels), lengths, 0.0)
    v = fill_past_lengths(randn(batch, kv_heads, slots, head_dim, dtype=dtype, device=kernels), lengths, 0.0)
    dirty_k, dirty_v = fill_past_lengths(k, lengths, garbage), fill_past_lengths(v, lengths, garbage)
    mask = None
    if masked:
        mask = torch.rand(batch, 1, seq, slots, device=kernels) < 0.7
        mask[..., 0] = True
    q = randn(batch, q_heads, seq, head_dim, dtype=dtype, device=kernels)
    prefill = ops.attention(q, dirty_k, dirty_v, mask=mask, causal=not masked, lengths=lengths)
    assert prefill.isfinite().all()
    close(prefill, reference.attention(q, k, v, mask=mask, causal=not masked, lengths=lengths), dtype, 2)
    decode_mask = None if mask is None else mask[:, :, :1]
    decode = ops.decode_attention(q[:, :, :1], dirty_k, dirty_v, mask=decode_mask, lengths=lengths)
    assert decode.isfinite().all()
    close(decode, reference.attention(q[:, :, :1], k, v, mask=decode_mask, lengths=lengths), dtype, 2)


def test_attention_lengths_at_the_edges(kernels, close, dtype):
    """A row with nothing filled attends to nothing (zeros, as the reference), a length past the
    cache means the whole cache; int32 lengths in a strided view and a non-contiguous mask work."""
    q = randn(3, 4, 5, 16, dtype=dtype, device=kernels)
    k, v = randn(3, 2, 50, 16, dtype=dtype, device=kernels), randn(3, 2, 50, 16, dtype=dtype, device=kernels)
    lengths = torch.tensor([0, -1, 80, -1, 20, -1], dtype=torch.int32, device=kernels)[::2]
    mask = (torch.rand(3, 4, 50, 5, device=kernels) < 0.6).transpose(-1, -2)
    mask[..., 0] = True
    for row_mask in (None, mask):
        close(ops.attention(q, k, v, mask=row_mask, lengths=lengths),
              reference.attention(q, k, v, mask=row_mask, lengths=lengths), dtype, 2)
        decode_mask = None if row_mask is None else row_mask[:, :, :1]
        close(ops.decode_attention(q[:, :, :1], k, v, mask=decode_mask, lengths=lengths),
              reference.attention(q[:, :, :1], k, v, mask=decode_mask, lengths=lengths), dtype, 2)


@pytest.mark.parametrize(("rows", "n_in", "n_out"), [(37, 50, 70), (1, 16, 1), (65, 130, 33)])
@pytest.mark.parametrize("activation", sorted(reference.ACTIVATIONS))
def test_matmul_bias_act(kernels, close, dtype, rows, n_in, n_out, activation):
    x = randn(rows, n_in, dtype=dtype, device=kernels)
    weight = randn(n_out, n_in, dtype=dtype, device=kernels, scale=n_in**-0.5)
    bias = randn(n_out, dtype=dtype, device=kernels)
    close(ops.matmul_bias_act(x, weight, bias, activation),
          reference.matmul_bias_act(x, weight, bias, activation), dtype, 4)
    close(ops.matmul_bias_act(x, weight, None, activation),
          reference.matmul_bias_act(x, weight, None, activation), dtype, 4)


def test_matmul_on_strided_and_broadcast_operands(kernels, close, dtype):
    """Every operand through its strides: a transposed input, a transposed or sliced weight, and a bias
    that is a stride-2 slice or one scalar broadcast with ``expand`` (stride 0)."""
    x = randn(3, 40, 24, dtype=dtype, device=kernels).transpose(1, 2)
    weight_t = randn(40, 30, dtype=dtype, device=kernels, scale=40**-0.5)
    sliced_weight = randn(30, 80, dtype=dtype, device=kernels, scale=40**-0.5)[:, ::2]
    every_other = randn(60, dtype=dtype, device=kernels)[::2]
    scalar = randn(1, dtype=dtype, device=kernels).expand(30)
    for weight in (weight_t.T, sliced_weight):
        for bias in (every_other, scalar):
            close(ops.matmul_bias_act(x, weight, bias, "gelu"),
                  reference.matmul_bias_act(x, weight, bias.contiguous(), "gelu"), dtype, 4)


@pytest.mark.parametrize(("rows", "n_in", "hidden"), [(37, 50, 70), (1, 16, 1)])
def test_swiglu_matmul(kernels, close, dtype, rows, n_in, hidden):
    x = randn(2, rows, n_in, dtype=dtype, device=kernels)
    w_gate = randn(hidden, n_in, dtype=dtype, device=kernels, scale=n_in**-0.5)
    w_up = randn(hidden, n_in, dtype=dtype, device=kernels, scale=n_in**-0.5)
    close(ops.swiglu_matmul(x, w_gate, w_up), reference.swiglu_matmul(x, w_gate, w_up), dtype, 4)
    transposed_x = non_contiguous(x)
    sliced_up = randn(hidden, 2 * n_in, dtype=dtype, device=kernels, scale=n_in**-0.5)[:, 1::2]
    close(ops.swiglu_matmul(transposed_x, w_gate.T.contiguous().T, sliced_up),
          reference.swiglu_matmul(x, w_gate, sliced_up), dtype, 4)


def test_swiglu_linear_fuses_plain_linears(kernels, close, dtype):
    gate = nn.Linear(24, 40, bias=False, device=kernels, dtype=dtype)
    up = nn.Linear(24, 40, bias=False, device=kernels, dtype=dtype)
    x = randn(2, 9, 24, dtype=dtype, device=kernels)
    with torch.no_grad():
        close(ops.swiglu_linear(x, gate, up), reference.swiglu_matmul(x, gate.weight, up.weight), dtype, 4)


@pytest.mark.parametrize(("n_queries", "n_keys", "dim", "k"),
                         [(5, 1000, 24, 10), (37, 333, 100, 1), (3, 50, 16, 50), (1, 1, 3, 1), (2, 700, 8, 100)])
def test_similarity_topk(kernels, close, dtype, n_queries, n_keys, dim, k):
    queries = randn(n_queries, dim, dtype=dtype, device=kernels)
    keys = randn(n_keys, dim, dtype=dtype, device=kernels)
    scores, indices = ops.similarity_topk(queries, keys, k)
    expected_scores, _ = reference.similarity_topk(queries, keys, k)
    assert scores.dtype == torch.float32 and indices.dtype == torch.int64
    close(scores, expected_scores, dtype, 4)
    recomputed = (queries.float().unsqueeze(1) * keys.float()[indices]).sum(-1)
    close(scores, recomputed, dtype, 4)
    assert all(len(set(row)) == k for row in indices.tolist())


def test_similarity_topk_on_strided_and_broadcast_inputs(kernels, close):
    queries = randn(20, 9, dtype=torch.float32, device=kernels).T
    keys = randn(20, 400, dtype=torch.float32, device=kernels).T
    scores, indices = ops.similarity_topk(queries, keys, 7)
    expected_scores, expected_indices = reference.similarity_topk(queries, keys, 7)
    close(scores, expected_scores, torch.float32, 4)
    assert torch.equal(indices, expected_indices)
    one_query = queries[:1].expand(3, -1)
    scores, indices = ops.similarity_topk(one_query, keys, 7)
    assert torch.equal(indices, expected_indices[:1].expand(3, -1))
