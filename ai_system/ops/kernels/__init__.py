"""Triton kernels, one file per op; ``ai_system/ops/reference.py`` holds the torch version each must equal.

Importing this package imports Triton: only the ops do, and only when a call launches a kernel.
Kernels are written as plain functions and compiled through ``Kernel`` on first launch, so the
choice between Triton's JIT (CUDA) and its CPU interpreter follows ``TRITON_INTERPRET`` at launch
time, not when this package was imported. Triton's own standard library (``tl.max``, ``tl.sum``)
is still fixed when ``triton`` is first imported: the interpreter works only if
``TRITON_INTERPRET=1`` was set by then (``tests/conftest.py`` arranges it).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import triton

from ai_system.ops.dispatch import interpreting


class Kernel:
    """A Triton kernel function compiled lazily for the current mode (interpreted or JIT).

    With ``Kernel.compile_only`` set, a launch compiles and returns the compiled kernel without
    running it: ``compile_check`` uses that to build every kernel for a GPU the machine lacks.
    """

    compile_only = False

    def __init__(self, fn: Callable[..., None]) -> None:
        self.fn = fn
        self._compiled: dict[bool, Any] = {}

    def __getitem__(self, grid: Any) -> Callable[..., Any]:
        mode = interpreting()
        if mode not in self._compiled:
            self._compiled[mode] = triton.jit(self.fn)
        if Kernel.compile_only:
            return functools.partial(self._compiled[mode].warmup, grid=grid)
        return self._compiled[mode][grid]


SINGLE_PASS_MAX = 16384
LOOP_BLOCK = 4096


@dataclass(frozen=True)
class RowLaunch:
    """How a one-row-per-program kernel runs over the last dimension of a tensor.

    Rows up to ``SINGLE_PASS_MAX`` wide fit one tile held in registers (one read); wider rows are
    swept in ``LOOP_BLOCK`` tiles. Warps grow with the tile so each thread holds a few elements.
    """

    rows: torch.Tensor
    out: torch.Tensor
    block: int
    single_pass: bool
    warps: int

    @classmethod
    def over(cls, x: torch.Tensor, out_dtype: torch.dtype) -> RowLaunch:
        rows = x.reshape(-1, x.shape[-1])
        n_cols = rows.shape[1]
        single_pass = n_cols <= SINGLE_PASS_MAX
        block = min(triton.next_power_of_2(n_cols), SINGLE_PASS_MAX if single_pass else LOOP_BLOCK)
        warps = 4 if block <= 2048 else 8 if block <= 8192 else 16
        out = torch.empty(rows.shape, dtype=out_dtype, device=x.device)
        return cls(rows=rows, out=out, block=block, single_pass=single_pass, warps=warps)


def parallel_programs() -> int:
    """How many programs a split-K launch aims for: two per SM on the GPU, a few under the interpreter."""
    if interpreting() or not torch.cuda.is_available():
        return 8
    return 2 * torch.cuda.get_device_properties(torch.cuda.current_device()).multi_processor_count
