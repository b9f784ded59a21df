"""LayerNorm forward: mean, variance, normalize, scale and shift in one read and one write.

Same shape as the RMSNorm kernel, plus the mean: the variance is taken around the mean in a
second sweep over registers (not E[x²]−E[x]², which cancels catastrophically for large means).
Rows wider than one tile take three reads (mean, variance, normalize).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton.language as tl

from ai_system.inference.kernels import Kernel, RowLaunch


def layer_norm_reference(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                         eps: float) -> torch.Tensor:
    """``F.layer_norm`` over the last dimension, computed in fp32, returned in ``x.dtype``."""
    return F.layer_norm(x.float(), x.shape[-1:], None if weight is None else weight.float(),
                        None if bias is None else bias.float(), eps).to(x.dtype)


def _layer_norm_kernel(x_ptr, w_ptr, b_ptr, out_ptr, n_cols, x_row_stride, x_col_stride, out_row_stride, eps,
                       BLOCK: tl.constexpr, SINGLE_PASS: tl.constexpr, HAS_WEIGHT: tl.constexpr,
                       HAS_BIAS: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * x_row_stride
    out_row = out_ptr + row * out_row_stride
    cols = tl.arange(0, BLOCK)
    if SINGLE_PASS:
        valid = cols < n_cols
        x = tl.load(x_row + cols * x_col_stride, mask=valid, other=0.0).to(tl.float32)
        mean = tl.sum(x, axis=0) / n_cols
        centered = tl.where(valid, x - mean, 0.0)
        rstd = tl.rsqrt(tl.sum(centered * centered, axis=0) / n_cols + eps)
        y = centered * rstd
        if HAS_WEIGHT:
            y = y * tl.load(w_ptr + cols, mask=valid, other=0.0).to(tl.float32)
        if HAS_BIAS:
            y = y + tl.load(b_ptr + cols, mask=valid, other=0.0).to(tl.float32)
        tl.store(out_row + cols, y.to(out_ptr.dtype.element_ty), mask=valid)
    else:
        sums = tl.zeros([BLOCK], tl.float32)
        for start in range(0, n_cols, BLOCK):
            offs = start + cols
            sums += tl.load(x_row + offs * x_col_stride, mask=offs < n_cols, other=0.0).to(tl.float32)
        mean = tl.sum(sums, axis=0) / n_cols
        squares = tl.zeros([BLOCK], tl.float32)
        for start in range(0, n_cols, BLOCK):
            offs = start + cols
            valid = offs < n_cols
            x = tl.load(x_row + offs * x_col_stride, mask=valid, other=0.0).to(tl.float32)
            centered = tl.where(valid, x - mean, 0.0)
            squares += centered * centered
        rstd = tl.rsqrt(tl.sum(squares, axis=0) / n_cols + eps)
        for start in range(0, n_cols, BLOCK):
            offs = start + cols
            valid = offs < n_cols
            x = tl.load(x_row + offs * x_col_stride, mask=valid, other=0.0).to(tl.float32)
            y = (x - mean) * rstd
            if HAS_WEIGHT:
                y = y * tl.load(w_ptr + offs, mask=valid, other=0.0).to(tl.float32)
            if HAS_BIAS:
                y = y + tl.load(b_ptr + offs, mask=valid, other=0.0).to(tl.float32)
            tl.store(out_row + offs, y.to(out_ptr.dtype.element_ty), mask=valid)


layer_norm_kernel = Kernel(_layer_norm_kernel)


def layer_norm_triton(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                      eps: float) -> torch.Tensor:
    """Launch on a validated ``x`` (any leading shape and strides); weight and bias contiguous or None."""
    launch = RowLaunch.over(x, x.dtype)
    layer_norm_kernel[(launch.rows.shape[0],)](launch.rows, weight, bias, launch.out, launch.rows.shape[1],
                                               *launch.rows.stride(), launch.out.stride(0), eps, BLOCK=launch.block,
                                               SINGLE_PASS=launch.single_pass, HAS_WEIGHT=weight is not None,
                                               HAS_BIAS=bias is not None, num_warps=launch.warps)
    return launch.out.view(x.shape)
