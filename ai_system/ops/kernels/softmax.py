"""Row softmax: one program per row, one read and one write of every element.

Written as separate ops (max, subtract, exp, sum, divide), softmax makes five passes over memory;
this kernel keeps a row in registers and does all of it between one load and one store, the
minimum traffic, which torch's own fused softmax kernel also reaches: it is the baseline to match.
Rows wider than one tile use an online (running max, rescaled sum) first pass, then a second pass
that writes.
"""

from __future__ import annotations

import torch
import triton.language as tl

from ai_system.ops.kernels import Kernel, RowLaunch


def _softmax_kernel(x_ptr, out_ptr, n_cols, x_row_stride, x_col_stride, out_row_stride,
                    BLOCK: tl.constexpr, SINGLE_PASS: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * x_row_stride
    out_row = out_ptr + row * out_row_stride
    cols = tl.arange(0, BLOCK)
    if SINGLE_PASS:
        valid = cols < n_cols
        x = tl.load(x_row + cols * x_col_stride, mask=valid, other=-float("inf")).to(tl.float32)
        e = tl.exp(x - tl.max(x, axis=0))
        tl.store(out_row + cols, (e / tl.sum(e, axis=0)).to(out_ptr.dtype.element_ty), mask=valid)
    else:
        running_max = tl.full([BLOCK], -float("inf"), tl.float32)
        running_sum = tl.zeros([BLOCK], tl.float32)
        for start in range(0, n_cols, BLOCK):
            offs = start + cols
            x = tl.load(x_row + offs * x_col_stride, mask=offs < n_cols, other=-float("inf")).to(tl.float32)
            new_max = tl.maximum(running_max, x)
            safe_max = tl.where(new_max == -float("inf"), 0.0, new_max)
            running_sum = running_sum * tl.exp(running_max - safe_max) + tl.exp(x - safe_max)
            running_max = new_max
        row_max = tl.max(running_max, axis=0)
        total = tl.sum(running_sum * tl.exp(running_max - row_max), axis=0)
        for start in range(0, n_cols, BLOCK):
            offs = start + cols
            valid = offs < n_cols
            x = tl.load(x_row + offs * x_col_stride, mask=valid, other=-float("inf")).to(tl.float32)
            tl.store(out_row + offs, (tl.exp(x - row_max) / total).to(out_ptr.dtype.element_ty), mask=valid)


softmax_kernel = Kernel(_softmax_kernel)


def softmax_triton(x: torch.Tensor) -> torch.Tensor:
    """Launch the kernel on a validated tensor; any leading shape, any strides."""
    launch = RowLaunch.over(x, x.dtype)
    softmax_kernel[(launch.rows.shape[0],)](launch.rows, launch.out, launch.rows.shape[1], *launch.rows.stride(),
                                            launch.out.stride(0), BLOCK=launch.block,
                                            SINGLE_PASS=launch.single_pass, num_warps=launch.warps)
    return launch.out.view(x.shape)
