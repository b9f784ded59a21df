"""Matmul with a fused epilogue: ``act(x @ W.T + bias)``, and the SwiGLU dual GEMM.

Unfused, ``F.gelu(F.linear(x, W, b))`` writes the (tokens × features) product to memory and reads it
back for the activation. Here the bias and activation run on the fp32 accumulator while the tile is
still in registers, so the output is written once. The SwiGLU variant runs the gate and up
projections against the same loaded tile of ``x`` and writes only ``silu(x·W_gate) * (x·W_up)``,
skipping two intermediate (tokens × hidden) tensors and one read of ``x``. ``W`` is taken in
``nn.Linear`` layout (out_features, in_features) through strides, never transposed in memory; the
bias through its stride too, so a broadcast scalar (stride 0) or a strided slice is read correctly.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ai_system.ops.kernels import Kernel, interpreting

ACTIVATION_CODES = {"none": 0, "gelu": 1, "silu": 2, "relu": 3}
SWIGLU = 4


def _matmul_kernel(a_ptr, b_ptr, b2_ptr, bias_ptr, out_ptr, M, N, K,
                   sa_m, sa_k, sb_k, sb_n, sb2_k, sb2_n, s_bias, so_m, so_n,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
                   ACTIVATION: tl.constexpr, HAS_BIAS: tl.constexpr, PRECISION: tl.constexpr):
    pid = tl.program_id(0)
    tiles_m = tl.cdiv(M, BLOCK_M)
    tiles_n = tl.cdiv(N, BLOCK_N)
    group_size = GROUP_M * tiles_n
    first_m = (pid // group_size) * GROUP_M
    rows_in_group = tl.minimum(tiles_m - first_m, GROUP_M)
    tile_m = first_m + (pid % group_size) % rows_in_group
    tile_n = (pid % group_size) // rows_in_group
    offs_m = (tile_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    offs_n = (tile_n * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    offs_k = tl.arange(0, BLOCK_K)
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    acc_up = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for start_k in range(0, K, BLOCK_K):
        ks = start_k + offs_k
        a = tl.load(a_ptr + offs_m[:, None] * sa_m + ks[None, :] * sa_k,
                    mask=(offs_m[:, None] < M) & (ks[None, :] < K), other=0.0)
        b_mask = (ks[:, None] < K) & (offs_n[None, :] < N)
        b = tl.load(b_ptr + ks[:, None] * sb_k + offs_n[None, :] * sb_n, mask=b_mask, other=0.0)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
        if ACTIVATION == 4:
            b_up = tl.load(b2_ptr + ks[:, None] * sb2_k + offs_n[None, :] * sb2_n, mask=b_mask, other=0.0)
            acc_up = tl.dot(a, b_up, acc_up, input_precision=PRECISION)
    if HAS_BIAS:
        acc = acc + tl.load(bias_ptr + offs_n * s_bias, mask=offs_n < N, other=0.0).to(tl.float32)[None, :]
    if ACTIVATION == 1:
        acc = 0.5 * acc * (1.0 + tl.erf(acc * 0.7071067811865476))
    elif ACTIVATION == 2:
        acc = acc / (1.0 + tl.exp(-acc))
    elif ACTIVATION == 3:
        acc = tl.maximum(acc, 0.0)
    elif ACTIVATION == 4:
        acc = acc / (1.0 + tl.exp(-acc)) * acc_up
    tl.store(out_ptr + offs_m[:, None] * so_m + offs_n[None, :] * so_n, acc.to(out_ptr.dtype.element_ty),
             mask=(offs_m[:, None] < M) & (offs_n[None, :] < N))


matmul_kernel = Kernel(_matmul_kernel)


def _launch(x: torch.Tensor, weight: torch.Tensor, weight_up: torch.Tensor | None, bias: torch.Tensor | None,
            activation: int) -> torch.Tensor:
    a = x.reshape(-1, x.shape[-1])
    n_rows, n_in = a.shape
    n_out = weight.shape[0]
    out = torch.empty((n_rows, n_out), dtype=x.dtype, device=x.device)
    if interpreting():
        block_m, block_n, block_k, warps, stages = 32, 32, 32, 4, 1
    elif x.dtype == torch.float32:
        block_m, block_n, block_k, warps, stages = 128, 64, 32, 4, 3
    else:
        block_m, block_n, block_k, warps, stages = 128, 128 if weight_up is None else 64, 64, 8, 3
    grid = (triton.cdiv(n_rows, block_m) * triton.cdiv(n_out, block_n),)
    up = weight if weight_up is None else weight_up
    matmul_kernel[grid](a, weight, up, bias, out, n_rows, n_out, n_in, a.stride(0), a.stride(1),
                        weight.stride(1), weight.stride(0), up.stride(1), up.stride(0),
                        0 if bias is None else bias.stride(0), out.stride(0), out.stride(1),
                        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, GROUP_M=8, ACTIVATION=activation,
                        HAS_BIAS=bias is not None, PRECISION="ieee" if x.dtype == torch.float32 else "tf32",
                        num_warps=warps, num_stages=stages)
    return out.view(*x.shape[:-1], n_out)


def matmul_bias_act_triton(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                           activation: str) -> torch.Tensor:
    """Launch on validated inputs: x (..., in), weight (out, in), bias (out,) or None."""
    return _launch(x, weight, None, bias, ACTIVATION_CODES[activation])


def swiglu_matmul_triton(x: torch.Tensor, w_gate: torch.Tensor, w_up: torch.Tensor) -> torch.Tensor:
    """Launch the dual GEMM on validated inputs: x (..., in), w_gate and w_up (hidden, in)."""
    return _launch(x, w_gate, w_up, None, SWIGLU)
