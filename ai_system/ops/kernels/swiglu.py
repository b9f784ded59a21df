"""SwiGLU gate: ``silu(gate) * up`` in one pass.

Eager torch writes ``silu(gate)`` to memory and reads it back for the product: three reads and two
writes of a (tokens × hidden) tensor where two reads and one write suffice. This is the piece of
the MLP the shared transformer fuses while keeping its ``w1``/``w3`` projections as ``nn.Linear``
modules (tensor parallelism hooks into them); ``matmul.py`` also fuses the projections.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from ai_system.inference.kernels import Kernel

BLOCK = 1024


def swiglu_reference(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """``F.silu(gate) * up``, the shared transformer's FeedForward gate."""
    return F.silu(gate) * up


def _swiglu_kernel(gate_ptr, up_ptr, out_ptr, n_cols, sg_row, sg_col, su_row, su_col, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    valid = cols < n_cols
    gate = tl.load(gate_ptr + row * sg_row + cols * sg_col, mask=valid, other=0.0).to(tl.float32)
    up = tl.load(up_ptr + row * su_row + cols * su_col, mask=valid, other=0.0).to(tl.float32)
    silu = (gate / (1.0 + tl.exp(-gate))).to(gate_ptr.dtype.element_ty).to(tl.float32)
    tl.store(out_ptr + row * n_cols + cols, (silu * up).to(out_ptr.dtype.element_ty), mask=valid)


swiglu_kernel = Kernel(_swiglu_kernel)


def swiglu_triton(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """Launch on validated same-shape ``gate`` and ``up`` (any strides)."""
    gate_rows = gate.reshape(-1, gate.shape[-1])
    up_rows = up.reshape(-1, up.shape[-1])
    n_rows, n_cols = gate_rows.shape
    out = torch.empty((n_rows, n_cols), dtype=gate.dtype, device=gate.device)
    block = min(BLOCK, triton.next_power_of_2(n_cols))
    swiglu_kernel[(n_rows, triton.cdiv(n_cols, block))](gate_rows, up_rows, out, n_cols, *gate_rows.stride(),
                                                        *up_rows.stride(), BLOCK=block, num_warps=4)
    return out.view(gate.shape)
