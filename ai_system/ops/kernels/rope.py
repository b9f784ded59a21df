"""Rotary position embedding: rotate pairs (x[2i], x[2i+1]) of every head by a per-position angle.

The plain-torch reference splits, upcasts, multiplies, stacks and flattens, writing several intermediate
tensors the size of ``x``; this kernel reads ``x`` and the (seq, head_dim/2) angle tables once and
writes the result once. One program handles every head of one token, so the angles are loaded once
per token and reused across heads.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ai_system.ops.kernels import Kernel


def _rope_kernel(x_ptr, cos_ptr, sin_ptr, out_ptr, seq_len, n_heads, half,
                 x_stride_b, x_stride_s, x_stride_h, x_stride_d, cos_stride_b, cos_stride_s,
                 BLOCK_H: tl.constexpr, BLOCK_HALF: tl.constexpr):
    token = tl.program_id(0)
    batch = (token // seq_len).to(tl.int64)
    pos = (token % seq_len).to(tl.int64)
    heads = tl.arange(0, BLOCK_H)[:, None]
    pairs = tl.arange(0, BLOCK_HALF)[None, :]
    valid = (heads < n_heads) & (pairs < half)
    angle_offsets = batch * cos_stride_b + pos * cos_stride_s + pairs
    cos = tl.load(cos_ptr + angle_offsets, mask=pairs < half, other=0.0).to(tl.float32)
    sin = tl.load(sin_ptr + angle_offsets, mask=pairs < half, other=0.0).to(tl.float32)
    even_ptrs = x_ptr + batch * x_stride_b + pos * x_stride_s + heads * x_stride_h + 2 * pairs * x_stride_d
    even = tl.load(even_ptrs, mask=valid, other=0.0).to(tl.float32)
    odd = tl.load(even_ptrs + x_stride_d, mask=valid, other=0.0).to(tl.float32)
    out_even = out_ptr + token.to(tl.int64) * n_heads * 2 * half + heads * 2 * half + 2 * pairs
    tl.store(out_even, (even * cos - odd * sin).to(out_ptr.dtype.element_ty), mask=valid)
    tl.store(out_even + 1, (even * sin + odd * cos).to(out_ptr.dtype.element_ty), mask=valid)


rope_kernel = Kernel(_rope_kernel)


def rope_triton(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Launch on validated inputs: x any strides; cos/sin with unit stride on the last dim."""
    batch, seq_len, n_heads, head_dim = x.shape
    out = torch.empty((batch, seq_len, n_heads, head_dim), dtype=x.dtype, device=x.device)
    cos_stride_b = cos.stride(0) if cos.shape[0] > 1 else 0
    rope_kernel[(batch * seq_len,)](x, cos, sin, out, seq_len, n_heads, head_dim // 2,
                                    *x.stride(), cos_stride_b, cos.stride(1),
                                    BLOCK_H=triton.next_power_of_2(n_heads),
                                    BLOCK_HALF=triton.next_power_of_2(head_dim // 2), num_warps=4)
    return out
