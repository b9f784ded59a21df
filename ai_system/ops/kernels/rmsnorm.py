"""RMSNorm forward: ``x / rms(x) * weight`` with one read of ``x`` and one write.

The plain-torch reference upcasts, squares, reduces, takes rsqrt, multiplies and casts in separate
kernels, each a pass over the activations; here a program holds its row in registers for all of it. Rows
wider than one tile take two reads (sum of squares, then normalize).
"""

from __future__ import annotations

import torch
import triton.language as tl

from ai_system.ops.kernels import Kernel, RowLaunch


def _rms_norm_kernel(x_ptr, w_ptr, out_ptr, n_cols, x_row_stride, x_col_stride, out_row_stride, eps,
                     BLOCK: tl.constexpr, SINGLE_PASS: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * x_row_stride
    out_row = out_ptr + row * out_row_stride
    cols = tl.arange(0, BLOCK)
    if SINGLE_PASS:
        valid = cols < n_cols
        x = tl.load(x_row + cols * x_col_stride, mask=valid, other=0.0).to(tl.float32)
        rstd = tl.rsqrt(tl.sum(x * x, axis=0) / n_cols + eps)
        w = tl.load(w_ptr + cols, mask=valid, other=0.0).to(tl.float32)
        normed = (x * rstd).to(x_ptr.dtype.element_ty).to(tl.float32)
        tl.store(out_row + cols, (normed * w).to(out_ptr.dtype.element_ty), mask=valid)
    else:
        squares = tl.zeros([BLOCK], tl.float32)
        for start in range(0, n_cols, BLOCK):
            offs = start + cols
            x = tl.load(x_row + offs * x_col_stride, mask=offs < n_cols, other=0.0).to(tl.float32)
            squares += x * x
        rstd = tl.rsqrt(tl.sum(squares, axis=0) / n_cols + eps)
        for start in range(0, n_cols, BLOCK):
            offs = start + cols
            valid = offs < n_cols
            x = tl.load(x_row + offs * x_col_stride, mask=valid, other=0.0).to(tl.float32)
            w = tl.load(w_ptr + offs, mask=valid, other=0.0).to(tl.float32)
            normed = (x * rstd).to(x_ptr.dtype.element_ty).to(tl.float32)
            tl.store(out_row + offs, (normed * w).to(out_ptr.dtype.element_ty), mask=valid)


rms_norm_kernel = Kernel(_rms_norm_kernel)


def rms_norm_triton(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Launch on a validated ``x`` (any leading shape and strides) and contiguous ``weight``."""
    launch = RowLaunch.over(x, torch.promote_types(x.dtype, weight.dtype))
    rms_norm_kernel[(launch.rows.shape[0],)](launch.rows, weight, launch.out, launch.rows.shape[1],
                                             *launch.rows.stride(), launch.out.stride(0), eps, BLOCK=launch.block,
                                             SINGLE_PASS=launch.single_pass, num_warps=launch.warps)
    return launch.out.view(x.shape)
