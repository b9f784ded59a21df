"""Which path an op call takes, the Triton kernel or the torch reference, and why.

The kernels run on CUDA tensors. On the CPU the torch reference runs: Triton compiles for GPUs, and
its interpreter (``TRITON_INTERPRET=1``) runs a kernel on CPU tensors orders of magnitude slower
than torch, which is only worth it to check a kernel against its reference (the parity tests do).
Whatever the device, the reference also runs inside ``reference_only()``, when autograd records a
graph (kernels are forward-only), under ``torch.compile`` (Inductor fuses the reference itself),
for tensor subclasses such as DTensor, and for empty tensors.

Triton is imported only when a call would launch a kernel, so every op, and every model built on
them, imports and runs on the reference where Triton is absent (macOS, aarch64). Imported that
late, Triton also sees ``TRITON_INTERPRET`` as set when the first kernel is launched.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
import os
from collections.abc import Iterator

import torch

OPS = ("softmax", "rms_norm", "rope", "attention", "decode_attention", "matmul_bias_act", "swiglu_matmul",
       "swiglu_linear", "similarity_topk")
MAX_TOPK_KERNEL_K = 1024
"""The longest best-list the similarity top-k kernel's sorting network keeps; larger ``k`` takes the reference."""

PLAIN_TENSOR_TYPES = (torch.Tensor, torch.nn.Parameter)
_REFERENCE_ONLY = contextvars.ContextVar("reference_only", default=False)


@contextlib.contextmanager
def reference_only() -> Iterator[None]:
    """Run every op on its torch reference inside this block: the baseline a kernel is measured against."""
    token = _REFERENCE_ONLY.set(True)
    try:
        yield
    finally:
        _REFERENCE_ONLY.reset(token)


def interpreting() -> bool:
    """Whether Triton kernels run on CPU tensors through the interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@functools.cache
def triton_import_error() -> str | None:
    """Why ``import triton`` fails here, or None when it works (tried once, on the first kernel call).

    Any exception counts, not only ImportError: a Triton whose driver cannot load leaves the ops on
    the reference instead of failing every call.
    """
    try:
        importlib.import_module("triton")
    except Exception as error:
        return f"{type(error).__name__}: {error}"
    return None


def kernel_unavailable(device_type: str, dtypes: set[torch.dtype]) -> str | None:
    """Why no Triton kernel runs for plain tensors of these dtypes on this device; None when one does."""
    if device_type == "cpu":
        if not interpreting():
            return ("CPU tensors: Triton kernels run on CUDA GPUs, and its CPU interpreter "
                    "(TRITON_INTERPRET=1) is for parity tests only")
        if torch.bfloat16 in dtypes:
            return "bf16 on the CPU: the Triton interpreter cannot compute it"
    elif device_type != "cuda":
        return f"{device_type} tensors: the kernels are written for CUDA"
    failure = triton_import_error()
    return None if failure is None else f"triton cannot be imported ({failure})"


def use_triton(*tensors: torch.Tensor | None) -> bool:
    """Whether this call should launch the Triton kernel (see the module docstring for the rules)."""
    present = [t for t in tensors if t is not None]
    devices = {t.device.type for t in present}
    if len(devices) > 1:
        raise ValueError(f"all tensors must be on one device, got {sorted(devices)}")
    if _REFERENCE_ONLY.get() or torch.compiler.is_compiling():
        return False
    if any(type(t) not in PLAIN_TENSOR_TYPES for t in present):
        return False
    if torch.is_grad_enabled() and any(t.requires_grad for t in present):
        return False
    if any(t.numel() == 0 for t in present):
        return False
    return kernel_unavailable(devices.pop(), {t.dtype for t in present}) is None


OP_CONDITIONS = {
    "similarity_topk": f"for k <= {MAX_TOPK_KERNEL_K}; larger k takes the reference",
    "swiglu_linear": "when both projections are plain bias-free nn.Linear modules without hooks (so not under "
                     "tensor parallelism); otherwise the modules themselves run",
}


def dispatch_table(device: torch.device | str, dtype: torch.dtype) -> dict[str, str]:
    """Per op, the path a call on plain tensors of ``dtype`` on ``device`` takes outside autograd, and why.

    Every op also takes the reference under autograd, ``torch.compile``, ``reference_only()`` and for
    DTensors, whatever this table says. Meant for a server to log at start, so its figures say what ran.
    """
    unavailable = kernel_unavailable(torch.device(device).type, {dtype})
    if unavailable is not None:
        return dict.fromkeys(OPS, f"torch reference: {unavailable}")
    where = "the Triton interpreter on CPU tensors" if torch.device(device).type == "cpu" else "CUDA tensors"
    return {op: f"triton kernel: {where}" + (f", {OP_CONDITIONS[op]}" if op in OP_CONDITIONS else "")
            for op in OPS}
