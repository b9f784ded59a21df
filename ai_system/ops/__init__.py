"""The ops: one public function per op that checks its arguments, then runs a Triton kernel or the torch reference.

``dispatch`` holds the rule that picks the path (a kernel on CUDA tensors; the reference on the
CPU, under autograd, ``torch.compile`` or ``reference_only()``) and ``dispatch_table`` states it per
op. ``reference`` holds the plain-torch version of every op; ``kernels/`` the Triton kernels, one
file per op, imported only when a call launches one, so this package imports without Triton.
Arguments are checked first, whichever path runs, so a bad call fails the same way everywhere and
never reaches a kernel launch. This package imports nothing else from ``ai_system``: models,
inference, recommender and search code build on it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ai_system.ops import reference
from ai_system.ops.dispatch import MAX_TOPK_KERNEL_K, dispatch_table, reference_only, use_triton

__all__ = ["attention", "decode_attention", "dispatch_table", "matmul_bias_act", "reference_only", "rms_norm",
           "rope", "similarity_topk", "softmax", "swiglu_linear", "swiglu_matmul", "use_triton"]

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_HEAD_DIM = 256


def _check_float(name: str, tensor: torch.Tensor, dtype: torch.dtype | None = None) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} has dtype {tensor.dtype}; supported: float32, float16, bfloat16")
    if dtype is not None and tensor.dtype != dtype:
        raise TypeError(f"{name} has dtype {tensor.dtype} but must match the input's {dtype}")


def _check_rank(name: str, tensor: torch.Tensor, rank: int | None = None, min_rank: int = 1) -> None:
    if rank is not None and tensor.dim() != rank:
        raise ValueError(f"{name} must have {rank} dimensions, got shape {tuple(tensor.shape)}")
    if tensor.dim() < min_rank:
        raise ValueError(f"{name} must have at least {min_rank} dimension(s), got shape {tuple(tensor.shape)}")


def _check_vector(name: str, tensor: torch.Tensor | None, size: int) -> None:
    if tensor is not None and tuple(tensor.shape) != (size,):
        raise ValueError(f"{name} must have shape ({size},) to match the last input dimension, "
                         f"got {tuple(tensor.shape)}")


def softmax(x: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dimension; fp32 accumulation, output in ``x.dtype``."""
    _check_float("x", x)
    _check_rank("x", x)
    if use_triton(x):
        from ai_system.ops.kernels.softmax import softmax_triton

        return softmax_triton(x)
    return reference.softmax(x)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """RMSNorm over the last dimension, as in the shared transformer."""
    _check_float("x", x)
    _check_float("weight", weight)
    _check_rank("x", x)
    _check_vector("weight", weight, x.shape[-1])
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    if use_triton(x, weight):
        from ai_system.ops.kernels.rmsnorm import rms_norm_triton

        return rms_norm_triton(x, weight.contiguous(), eps)
    return reference.rms_norm(x, weight, eps)


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding of x (batch, seq, heads, head_dim) by cos/sin tables (batch or 1, seq, head_dim/2)."""
    _check_float("x", x)
    _check_rank("x", x, rank=4)
    batch, seq_len, _, head_dim = x.shape
    if head_dim % 2:
        raise ValueError(f"x's head_dim must be even to rotate pairs, got {head_dim}")
    for name, table in (("cos", cos), ("sin", sin)):
        _check_float(name, table)
        if table.dim() != 3 or table.shape[0] not in (1, batch) or tuple(table.shape[1:]) != (seq_len, head_dim // 2):
            raise ValueError(f"{name} must have shape (1 or {batch}, {seq_len}, {head_dim // 2}), "
                             f"got {tuple(table.shape)}")
    if use_triton(x, cos, sin):
        from ai_system.ops.kernels.rope import rope_triton

        return rope_triton(x, cos.contiguous(), sin.contiguous())
    return reference.rope(x, cos, sin)


def _check_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> None:
    _check_float("q", q)
    _check_float("k", k, q.dtype)
    _check_float("v", v, q.dtype)
    for name, tensor in (("q", q), ("k", k), ("v", v)):
        _check_rank(name, tensor, rank=4)
    if k.shape != v.shape:
        raise ValueError(f"k and v must have the same shape, got {tuple(k.shape)} and {tuple(v.shape)}")
    if q.shape[0] != k.shape[0] or q.shape[3] != k.shape[3]:
        raise ValueError(f"q (batch, heads, seq, dim) = {tuple(q.shape)} and k = {tuple(k.shape)} must agree "
                         "on batch and dim")
    if q.shape[1] % k.shape[1]:
        raise ValueError(f"q's {q.shape[1]} heads must be a multiple of k's {k.shape[1]} heads")
    if q.shape[3] > MAX_HEAD_DIM:
        raise ValueError(f"head dim {q.shape[3]} exceeds the supported maximum {MAX_HEAD_DIM}")
    if mask is not None:
        if mask.dtype != torch.bool:
            raise TypeError(f"mask must be boolean (True = may attend), got {mask.dtype}")
        target = (q.shape[0], q.shape[1], q.shape[2], k.shape[2])
        try:
            torch.broadcast_shapes(mask.shape, target)
        except RuntimeError as error:
            raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to {target}") from error
        if mask.dim() > 4 or torch.broadcast_shapes(mask.shape, target) != target:
            raise ValueError(f"mask of shape {tuple(mask.shape)} must broadcast to {target} without growing it")


def _check_lengths(lengths: torch.Tensor | None, batch: int) -> None:
    if lengths is not None and (lengths.dtype not in (torch.int32, torch.int64) or tuple(lengths.shape) != (batch,)):
        raise ValueError(f"lengths must be an int32/int64 tensor of shape ({batch},), got "
                         f"{lengths.dtype} {tuple(lengths.shape)}")


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
              causal: bool = False, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Scaled dot-product attention, q (batch, q_heads, seq, dim), k/v (batch, kv_heads, keys, dim).

    ``mask`` (boolean, True = may attend) broadcasts to (batch, q_heads, seq, keys); ``causal`` lets
    query i see keys j <= i, aligned at the top-left like SDPA's ``is_causal``; ``lengths`` (batch,)
    limits row b to its first ``lengths[b]`` keys (a KV cache allocated longer than the row has
    filled), which the kernel then never reads (the reference masks them; see
    ``reference.attention``). kv_heads may divide q_heads (grouped-query attention). Returns
    (batch, q_heads, seq, dim).
    """
    _check_attention(q, k, v, mask)
    _check_lengths(lengths, q.shape[0])
    if use_triton(q, k, v, mask, lengths):
        from ai_system.ops.kernels.attention import attention_triton

        return attention_triton(q, k, v, mask, causal, None if lengths is None else lengths.contiguous())
    return reference.attention(q, k, v, mask, causal, lengths)


def decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
                     lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Attention of one new token per row, q (batch, q_heads, 1, dim), over a KV cache (batch, kv_heads, L, dim).

    ``lengths`` (batch,) says how many leading cache slots each row has filled: the kernel neither
    reads nor attends later slots, so a cache allocated for the longest request costs nothing for
    the shorter ones. ``mask`` (boolean, broadcastable to (batch, q_heads, 1, L)) hides slots within that.
    """
    _check_attention(q, k, v, mask)
    if q.shape[2] != 1:
        raise ValueError(f"decode_attention takes one query position per row, got q of shape {tuple(q.shape)}")
    _check_lengths(lengths, q.shape[0])
    if use_triton(q, k, v, mask, lengths):
        from ai_system.ops.kernels.attention import decode_attention_triton

        return decode_attention_triton(q, k, v, mask, None if lengths is None else lengths.contiguous())
    return reference.attention(q, k, v, mask, lengths=lengths)


def _check_matmul(x: torch.Tensor, weights: dict[str, torch.Tensor], bias: torch.Tensor | None) -> None:
    _check_float("x", x)
    _check_rank("x", x)
    first = next(iter(weights.values()))
    for name, weight in weights.items():
        _check_float(name, weight, x.dtype)
        _check_rank(name, weight, rank=2)
        if weight.shape[1] != x.shape[-1] or weight.shape != first.shape:
            raise ValueError(f"{name} must be (out_features, {x.shape[-1]}) in nn.Linear layout, "
                             f"got {tuple(weight.shape)}")
    if bias is not None:
        _check_float("bias", bias, x.dtype)
        _check_vector("bias", bias, first.shape[0])


def matmul_bias_act(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                    activation: str = "none") -> torch.Tensor:
    """``act(x @ weight.T + bias)`` with weight in nn.Linear layout; activation is none, relu, gelu or silu.

    Any strides work, the bias's too (a slice, or a scalar broadcast with ``expand``).
    """
    if activation not in reference.ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(reference.ACTIVATIONS)}, got {activation!r}")
    _check_matmul(x, {"weight": weight}, bias)
    if use_triton(x, weight, bias):
        from ai_system.ops.kernels.matmul import matmul_bias_act_triton

        return matmul_bias_act_triton(x, weight, bias, activation)
    return reference.matmul_bias_act(x, weight, bias, activation)


def swiglu_matmul(x: torch.Tensor, w_gate: torch.Tensor, w_up: torch.Tensor) -> torch.Tensor:
    """``silu(x @ w_gate.T) * (x @ w_up.T)``: both projections of a SwiGLU MLP in one kernel."""
    _check_matmul(x, {"w_gate": w_gate, "w_up": w_up}, None)
    if use_triton(x, w_gate, w_up):
        from ai_system.ops.kernels.matmul import swiglu_matmul_triton

        return swiglu_matmul_triton(x, w_gate, w_up)
    return reference.swiglu_matmul(x, w_gate, w_up)


def _fusable(linear: nn.Module, x: torch.Tensor) -> bool:
    """A bias-free ``nn.Linear`` whose forward is exactly ``x @ weight.T``: no hooks (tensor parallelism
    and FSDP add them), no subclass, weights in ``x``'s dtype and no autocast (which would cast them).
    Any other module must run itself."""
    return (type(linear) is nn.Linear and linear.bias is None and not linear._forward_pre_hooks
            and not linear._forward_hooks and linear.weight.dtype == x.dtype
            and not torch.is_autocast_enabled(x.device.type))


def swiglu_linear(x: torch.Tensor, gate: nn.Module, up: nn.Module) -> torch.Tensor:
    """``silu(gate(x)) * up(x)``, the SwiGLU MLP's two projections, in one fused kernel where it applies.

    The fused dual GEMM runs where ``swiglu_matmul``'s kernel would and both modules are plain
    bias-free ``nn.Linear``s in ``x``'s dtype. Everywhere else, training, tensor parallelism (whose
    DTensor plans are hooks on these modules), autocast or the CPU, the modules themselves run, so
    their hooks, sharded parameters, casts and autograd work unchanged.
    """
    if _fusable(gate, x) and _fusable(up, x) and use_triton(x, gate.weight, up.weight):
        return swiglu_matmul(x, gate.weight, up.weight)
    return F.silu(gate(x)) * up(x)


def similarity_topk(queries: torch.Tensor, keys: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` highest dot-product keys per query: (scores fp32 (queries, k), indices int64), best first.

    The kernel keeps at most ``MAX_TOPK_KERNEL_K`` (1024) candidates per query; a larger ``k`` takes the
    reference on any device.
    """
    _check_float("queries", queries)
    _check_float("keys", keys, queries.dtype)
    _check_rank("queries", queries, rank=2)
    _check_rank("keys", keys, rank=2)
    if queries.shape[1] != keys.shape[1]:
        raise ValueError(f"queries (n, {queries.shape[1]}) and keys (m, {keys.shape[1]}) must share the "
                         "vector dimension")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= keys.shape[0]:
        raise ValueError(f"k must be an int in [1, number of keys = {keys.shape[0]}], got {k!r}")
    if keys.shape[0] >= 2**31:
        raise ValueError(f"at most 2**31 - 1 keys are supported (indices pack into 32 bits), got {keys.shape[0]}")
    if k <= MAX_TOPK_KERNEL_K and use_triton(queries, keys):
        from ai_system.ops.kernels.similarity_topk import similarity_topk_triton

        return similarity_topk_triton(queries, keys, k)
    return reference.similarity_topk(queries, keys, k)
