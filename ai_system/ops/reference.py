"""Every op in plain torch: what runs on the CPU and under autograd, and what each kernel must equal.

Each function here is the specification of the kernel of the same name in ``kernels/`` (the
parity tests in ``tests/ops`` compare them) and takes the same validated arguments. Nothing here
imports Triton.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "none": lambda x: x,
    "relu": F.relu,
    "gelu": F.gelu,
    "silu": F.silu,
}
"""The epilogues ``matmul_bias_act`` fuses; GELU is the exact (erf) form."""


def softmax(x: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dimension, accumulated in fp32, returned in ``x.dtype``."""
    return torch.softmax(x.float(), dim=-1).to(x.dtype)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """The shared transformer's RMSNorm: normalize in fp32, cast back to ``x.dtype``, then scale."""
    normed = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + eps)
    return normed.type_as(x) * weight


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (batch, seq, heads, head_dim) by per-position angles; cos/sin are (batch or 1, seq, head_dim/2)."""
    pairs = x.float().unflatten(-1, (-1, 2))
    even, odd = pairs[..., 0], pairs[..., 1]
    cos, sin = cos.float().unsqueeze(2), sin.float().unsqueeze(2)
    rotated = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1)
    return rotated.flatten(-2).type_as(x)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
              causal: bool = False, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """SDPA on q (batch, q_heads, seq, dim) and k, v (batch, kv_heads, keys, dim), KV heads repeated.

    ``mask`` is boolean, True where a query may attend, broadcastable to (batch, q_heads, seq, keys);
    ``causal`` lets query i see keys j <= i (aligned at the top-left, as SDPA's ``is_causal``).
    ``lengths`` (batch,) limits row b to its first ``lengths[b]`` keys by masking the rest. Unlike the
    kernels, which never load those slots, SDPA still reads them: a NaN or inf there reaches the
    output through ``0 * v``. Zeroing them first would copy the whole cache on every call, several
    times the cost of the attention itself on the CPU; the KV cache starts zeroed, so only a row
    that overflowed before can leave one behind. On the CPU the keys are first cut (a view, no copy)
    at the longest row's length, so a cache allocated for the model's whole context costs a short
    batch nothing (on a GPU that cut would wait for the device, and the kernels skip those slots anyway).
    """
    if lengths is not None and k.device.type == "cpu" and not torch.compiler.is_compiling():
        longest = max(int(lengths.max()), 1)
        k, v = k[:, :, :longest], v[:, :, :longest]
        if mask is not None and mask.shape[-1] > 1:
            mask = mask[..., :longest]
    if lengths is not None:
        filled = (torch.arange(k.shape[2], device=k.device) < lengths.view(-1, 1))[:, None, None, :]
        mask = filled if mask is None else mask & filled
    groups = q.shape[1] // k.shape[1]
    if groups > 1:
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    if causal and mask is not None:
        mask = mask & torch.ones(q.shape[2], k.shape[2], dtype=torch.bool, device=q.device).tril()
        causal = False
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)


def matmul_bias_act(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                    activation: str) -> torch.Tensor:
    """``act(x @ weight.T + bias)`` in fp32, returned in ``x.dtype``; weight in nn.Linear layout."""
    out = F.linear(x.float(), weight.float(), None if bias is None else bias.float())
    return ACTIVATIONS[activation](out).to(x.dtype)


def swiglu_matmul(x: torch.Tensor, w_gate: torch.Tensor, w_up: torch.Tensor) -> torch.Tensor:
    """``silu(x @ w_gate.T) * (x @ w_up.T)`` in fp32, returned in ``x.dtype``."""
    return (F.silu(F.linear(x.float(), w_gate.float())) * F.linear(x.float(), w_up.float())).to(x.dtype)


def similarity_topk(queries: torch.Tensor, keys: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 scores ``queries @ keys.T`` and their top ``k`` per row: (scores, indices), best first."""
    scores, indices = (queries.float() @ keys.float().T).topk(k, dim=1)
    return scores, indices
