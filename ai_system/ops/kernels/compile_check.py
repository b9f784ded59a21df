"""Compile every Triton kernel for a CUDA GPU this machine may not have.

Triton's front end (Python AST → TTIR → TTGIR) and its back end (LLVM → PTX → cubin with the
bundled ``ptxas``) need no GPU, only a target. Compiling each launch variant (dtype, head size,
mask, length and loop branches) for, say, sm_90 catches what the CPU interpreter cannot: the
compiler's constexpr and layout rules, and shared memory beyond what one block may use. It does
not check results; the parity tests do that, on a GPU or in the interpreter.

    python -m ai_system.ops.kernels.compile_check --arch 90 --dtypes bfloat16 float16 float32

Run it in a process without ``TRITON_INTERPRET=1``: the interpreter replaces Triton's standard
library at import, and the compiler cannot use that.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

import torch
import triton
from triton.backends.compiler import GPUTarget

from ai_system.ops.kernels import Kernel, attention, interpreting, matmul, rmsnorm, rope, similarity_topk, softmax
from ai_system.ops.kernels.attention import attention_triton, decode_attention_triton
from ai_system.ops.kernels.matmul import matmul_bias_act_triton, swiglu_matmul_triton
from ai_system.ops.kernels.rmsnorm import rms_norm_triton
from ai_system.ops.kernels.rope import rope_triton
from ai_system.ops.kernels.similarity_topk import similarity_topk_triton
from ai_system.ops.kernels.softmax import softmax_triton

KERNEL_MODULES: tuple[ModuleType, ...] = (attention, matmul, rmsnorm, rope, similarity_topk, softmax)

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
SHARED_MEMORY_LIMIT = {80: 166912, 86: 101376, 89: 101376, 90: 232448}


class TargetOnlyDriver:
    """Just enough of a Triton driver to compile for ``target``; nothing here can launch."""

    def __init__(self, target: GPUTarget) -> None:
        self.target = target

    def get_current_target(self) -> GPUTarget:
        return self.target

    def get_current_device(self) -> int:
        return 0

    def get_current_stream(self, device: int | None = None) -> int:
        return 0

    def get_active_torch_device(self) -> torch.device:
        return torch.device("cpu")

    def is_active(self) -> bool:
        return True


def launches(dtype: torch.dtype) -> dict[str, Callable[[], Any]]:
    """One call per kernel variant, on small CPU tensors (only their dtypes and strides matter here)."""

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape).to(dtype)

    def mask(*shape: int) -> torch.Tensor:
        return torch.ones(*shape, dtype=torch.bool)

    cases: dict[str, Callable[[], Any]] = {
        "softmax": lambda: softmax_triton(r(4, 4096)),
        "softmax (looped, long rows)": lambda: softmax_triton(r(2, 40000)),
        "rms_norm": lambda: rms_norm_triton(r(4, 4096), r(4096), 1e-5),
        "rms_norm (looped)": lambda: rms_norm_triton(r(2, 40000), r(40000), 1e-5),
        "rope": lambda: rope_triton(r(2, 8, 32, 128), torch.randn(1, 8, 64), torch.randn(1, 8, 64)),
        "matmul + bias + gelu": lambda: matmul_bias_act_triton(r(300, 512), r(256, 512), r(256), "gelu"),
        "matmul + silu, no bias": lambda: matmul_bias_act_triton(r(300, 512), r(256, 512), None, "silu"),
        "matmul + broadcast bias + relu": lambda: matmul_bias_act_triton(r(300, 512), r(256, 512),
                                                                         r(1).expand(256), "relu"),
        "swiglu dual matmul": lambda: swiglu_matmul_triton(r(300, 512), r(256, 512), r(256, 512)),
        "similarity top-k (k=10)": lambda: similarity_topk_triton(r(100, 128), r(5000, 128), 10),
        "similarity top-k (k=200)": lambda: similarity_topk_triton(r(100, 96), r(5000, 96), 200),
    }
    for head_dim in (64, 128):
        q, k, v = r(2, 8, 100, head_dim), r(2, 2, 100, head_dim), r(2, 2, 100, head_dim)
        cache = r(2, 2, 1000, head_dim)
        cases[f"attention causal d={head_dim}"] = lambda q=q, k=k, v=v: attention_triton(q, k, v, None, True)
        cases[f"attention masked d={head_dim}"] = (
            lambda q=q, k=k, v=v: attention_triton(q, k, v, mask(2, 1, 100, 100), False))
        cases[f"attention causal, masked, lengths d={head_dim}"] = (
            lambda q=q, k=k, v=v: attention_triton(q, k, v, mask(2, 1, 100, 100), True, torch.tensor([7, 100])))
        cases[f"decode, lengths d={head_dim}"] = (
            lambda q=q, c=cache: decode_attention_triton(q[:, :, :1], c, c, None, torch.tensor([5, 1000])))
        cases[f"decode, mask d={head_dim}"] = (
            lambda q=q, c=cache: decode_attention_triton(q[:, :, :1], c, c, mask(2, 1, 1, 1000), None))
    return cases


def compile_all(arch: int, dtypes: list[str], report: Callable[[str], None] = print) -> int:
    """Compile every variant for ``sm_<arch>``; returns how many failed or exceed shared memory."""
    if interpreting():
        raise RuntimeError("TRITON_INTERPRET=1 is set: run compile_check in a process without it")
    compiled: list[Any] = []
    covered: set[str] = set()
    failures = 0
    driver = triton.runtime.driver
    previous_driver = getattr(driver, "_active", None)
    driver.set_active(TargetOnlyDriver(GPUTarget("cuda", arch, 32)))
    Kernel.compile_only = True
    original_warmup = triton.runtime.jit.JITFunction.warmup

    def keep(self: Any, *args: Any, **kwargs: Any) -> Any:
        kernel = original_warmup(self, *args, **kwargs)
        compiled.append(kernel)
        covered.add(self.fn.__name__)
        return kernel

    triton.runtime.jit.JITFunction.warmup = keep
    limit = SHARED_MEMORY_LIMIT.get(arch, min(SHARED_MEMORY_LIMIT.values()))
    try:
        for dtype_name in dtypes:
            for name, launch in launches(DTYPES[dtype_name]).items():
                compiled.clear()
                try:
                    launch()
                except Exception as error:  # noqa: BLE001 (every failure is reported, then counted)
                    failures += 1
                    report(f"FAIL {dtype_name} {name}: {type(error).__name__}: {str(error).strip()[-600:]}")
                    continue
                shared = max(kernel.metadata.shared for kernel in compiled)
                if shared > limit:
                    failures += 1
                    report(f"FAIL {dtype_name} {name}: {shared} bytes of shared memory > sm_{arch}'s {limit}")
                else:
                    report(f"ok   {dtype_name} {name}: {len(compiled)} kernel(s), {shared} bytes shared memory")
        every_kernel = {value.fn.__name__ for module in KERNEL_MODULES for value in vars(module).values()
                        if isinstance(value, Kernel)}
        for name in sorted(every_kernel - covered):
            failures += 1
            report(f"FAIL {name}: no launch in compile_check covers this kernel; add one to launches()")
    finally:
        triton.runtime.jit.JITFunction.warmup = original_warmup
        Kernel.compile_only = False
        driver._active = previous_driver
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90, help="CUDA compute capability as an integer (90 = H100)")
    parser.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=["bfloat16", "float16", "float32"])
    args = parser.parse_args(argv)
    failures = compile_all(args.arch, args.dtypes)
    print(f"{failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
