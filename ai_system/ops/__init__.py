"""The inference ops: one public function per op, each choosing a Triton kernel or its torch reference.

A call runs the Triton kernel when its tensors live on a CUDA device, or on the CPU with
``TRITON_INTERPRET=1`` (how the parity tests run here). It runs the plain-torch reference inside
``reference_only()``, when autograd needs a graph (kernels are forward-only), under
``torch.compile`` (so Inductor can fuse the reference itself), for tensor subclasses such as
DTensor, for bf16 under the interpreter (which cannot compute it), and otherwise on the CPU.
Arguments are checked first, whichever path runs, so a bad call fails the same way everywhere and
never reaches a kernel launch.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import torch

from ai_system.inference.kernels import interpreting
from ai_system.inference.kernels.attention import (
    attention_reference,
    attention_triton,
    decode_attention_triton,
)
from ai_system.inference.kernels.layernorm import layer_norm_reference, layer_norm_triton
from ai_system.inference.kernels.matmul import (
    ACTIVATIONS,
    matmul_bias_act_reference,
    matmul_bias_act_triton,
    swiglu_matmul_reference,
    swiglu_matmul_triton,
)
from ai_system.inference.kernels.rmsnorm import rms_norm_reference, rms_norm_triton
from ai_system.inference.kernels.rope import rope_reference, rope_triton
from ai_system.inference.kernels.similarity_topk import MAX_K, similarity_topk_reference, similarity_topk_triton
from ai_system.inference.kernels.softmax import softmax_reference, softmax_triton
from ai_system.inference.kernels.swiglu import swiglu_reference, swiglu_triton

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_HEAD_DIM = 256
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
    if devices == {"cuda"}:
        return True
    return devices == {"cpu"} and interpreting() and all(t.dtype != torch.bfloat16 for t in present)


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
    return softmax_triton(x) if use_triton(x) else softmax_reference(x)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """RMSNorm over the last dimension, as in the shared transformer."""
    _check_float("x", x)
    _check_float("weight", weight)
    _check_rank("x", x)
    _check_vector("weight", weight, x.shape[-1])
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    if use_triton(x, weight):
        return rms_norm_triton(x, weight.contiguous(), eps)
    return rms_norm_reference(x, weight, eps)


def layer_norm(x: torch.Tensor, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None,
               eps: float = 1e-5) -> torch.Tensor:
    """LayerNorm over the last dimension with optional affine weight and bias; output in ``x.dtype``."""
    _check_float("x", x)
    _check_rank("x", x)
    for name, tensor in (("weight", weight), ("bias", bias)):
        if tensor is not None:
            _check_float(name, tensor)
        _check_vector(name, tensor, x.shape[-1])
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    if use_triton(x, weight, bias):
        return layer_norm_triton(x, None if weight is None else weight.contiguous(),
                                 None if bias is None else bias.contiguous(), eps)
    return layer_norm_reference(x, weight, bias, eps)


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
        return rope_triton(x, cos.contiguous(), sin.contiguous())
    return rope_reference(x, cos, sin)


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


def _mask_with_lengths(mask: torch.Tensor | None, lengths: torch.Tensor | None, n_keys: int) -> torch.Tensor | None:
    """The reference path's view of ``lengths``: keys at or past a row's length are masked out."""
    if lengths is None:
        return mask
    filled = (torch.arange(n_keys, device=lengths.device) < lengths.view(-1, 1)).view(-1, 1, 1, n_keys)
    return filled if mask is None else mask & filled


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
              causal: bool = False, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Scaled dot-product attention, q (batch, q_heads, seq, dim), k/v (batch, kv_heads, keys, dim).

    ``mask`` (boolean, True = may attend) broadcasts to (batch, q_heads, seq, keys); ``causal`` lets
    query i see keys j <= i, aligned at the top-left like SDPA's ``is_causal``; ``lengths`` (batch,)
    limits row b to its first ``lengths[b]`` keys, which the kernel then never reads (a KV cache
    allocated longer than the row has filled). kv_heads may divide q_heads (grouped-query
    attention). Returns (batch, q_heads, seq, dim).
    """
    _check_attention(q, k, v, mask)
    _check_lengths(lengths, q.shape[0])
    if use_triton(q, k, v, mask, lengths):
        return attention_triton(q, k, v, mask, causal, None if lengths is None else lengths.contiguous())
    return attention_reference(q, k, v, _mask_with_lengths(mask, lengths, k.shape[2]), causal)


def decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
                     lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Attention of one new token per row, q (batch, q_heads, 1, dim), over a KV cache (batch, kv_heads, L, dim).

    ``lengths`` (batch,) says how many leading cache slots each row has filled: later slots are
    neither read nor attended, so a cache allocated for the longest request costs nothing for the
    shorter ones. ``mask`` (boolean, broadcastable to (batch, q_heads, 1, L)) hides slots within that.
    """
    _check_attention(q, k, v, mask)
    if q.shape[2] != 1:
        raise ValueError(f"decode_attention takes one query position per row, got q of shape {tuple(q.shape)}")
    _check_lengths(lengths, q.shape[0])
    if use_triton(q, k, v, mask, lengths):
        return decode_attention_triton(q, k, v, mask, None if lengths is None else lengths.contiguous())
    return attention_reference(q, k, v, _mask_with_lengths(mask, lengths, k.shape[2]))


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
    """``act(x @ weight.T + bias)`` with weight in nn.Linear layout; activation is none, gelu or silu."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    _check_matmul(x, {"weight": weight}, bias)
    if use_triton(x, weight, bias):
        return matmul_bias_act_triton(x, weight, bias, activation)
    return matmul_bias_act_reference(x, weight, bias, activation)


def swiglu_matmul(x: torch.Tensor, w_gate: torch.Tensor, w_up: torch.Tensor) -> torch.Tensor:
    """``silu(x @ w_gate.T) * (x @ w_up.T)``: both projections of a SwiGLU MLP in one kernel."""
    _check_matmul(x, {"w_gate": w_gate, "w_up": w_up}, None)
    if use_triton(x, w_gate, w_up):
        return swiglu_matmul_triton(x, w_gate, w_up)
    return swiglu_matmul_reference(x, w_gate, w_up)


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """``silu(gate) * up`` elementwise: the SwiGLU gate after the two projections."""
    _check_float("gate", gate)
    _check_float("up", up, gate.dtype)
    _check_rank("gate", gate)
    if gate.shape != up.shape:
        raise ValueError(f"gate and up must have the same shape, got {tuple(gate.shape)} and {tuple(up.shape)}")
    return swiglu_triton(gate, up) if use_triton(gate, up) else swiglu_reference(gate, up)


def similarity_topk(queries: torch.Tensor, keys: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` highest dot-product keys per query: (scores fp32 (queries, k), indices int64), best first."""
    _check_float("queries", queries)
    _check_float("keys", keys, queries.dtype)
    _check_rank("queries", queries, rank=2)
    _check_rank("keys", keys, rank=2)
    if queries.shape[1] != keys.shape[1]:
        raise ValueError(f"queries (n, {queries.shape[1]}) and keys (m, {keys.shape[1]}) must share the "
                         "vector dimension")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= min(MAX_K, keys.shape[0]):
        raise ValueError(f"k must be an int in [1, min({MAX_K}, number of keys = {keys.shape[0]})], got {k!r}")
    if keys.shape[0] >= 2**31:
        raise ValueError(f"at most 2**31 - 1 keys are supported (indices pack into 32 bits), got {keys.shape[0]}")
    if use_triton(queries, keys):
        return similarity_topk_triton(queries, keys, k)
    return similarity_topk_reference(queries, keys, k)
