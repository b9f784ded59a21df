"""The decoder-only transformer shared by training, inference and model parallelism.

Llama-shaped: RMSNorm, rotary position embeddings, grouped-query attention, SwiGLU MLP. Layers
live in a ``ModuleDict`` keyed by index so a pipeline stage can drop the ones it does not own, and
the forward tolerates a missing embedding, final norm or output head for the same reason. Head
counts are inferred from tensor shapes (``view(..., -1, head_dim)``) so tensor parallelism can
shard the projections without the module knowing.

The math runs through ``ai_system.ops``: Triton kernels for inference on CUDA, the
plain-torch references whenever autograd is recording (training) or on the CPU. With a cache, the
caller says how many leading cache slots each row has filled (``lengths``), so the kernels skip
the unfilled rest of the cache.
"""

from __future__ import annotations

import zlib

import torch
from torch import nn

from ai_system import ops
from ai_system.models.config import ModelConfig


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.rms_norm(x, self.weight, self.eps)

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)


def rope_tables(head_dim: int, max_seq_len: int, theta: float, device: torch.device | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of shape (max_seq_len, head_dim // 2) for rotating pairs (x[2i], x[2i+1])."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(max_seq_len, device=device, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (batch, seq, heads, head_dim) by per-position angles; cos/sin are (batch or 1, seq, head_dim/2)."""
    return ops.rope(x, cos, sin)


class KVCache(nn.Module):
    """Preallocated keys and values for incremental decoding, one per attention layer."""

    def __init__(self, batch_size: int, max_seq_len: int, n_kv_heads: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> None:
        super().__init__()
        shape = (batch_size, n_kv_heads, max_seq_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    def update(self, positions: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v (batch, heads, seq, head_dim) at ``positions`` and return the cache rows in use.

        ``positions`` is (seq,) when every row writes at the same place, or (batch, seq) when rows
        are at different points of their sequences (continuous batching, ragged prompts). A batch
        smaller than the cache uses its first rows, so a server with few requests in flight computes
        only those.
        """
        if int(positions.max()) >= self.k.shape[2]:
            raise ValueError(f"position {int(positions.max())} is beyond the cache length {self.k.shape[2]}")
        batch = k.shape[0]
        if batch > self.k.shape[0]:
            raise ValueError(f"batch of {batch} rows does not fit a KV cache of {self.k.shape[0]} rows")
        keys, values = self.k[:batch], self.v[:batch]
        if positions.dim() == 1:
            keys[:, :, positions] = k.to(keys.dtype)
            values[:, :, positions] = v.to(values.dtype)
        else:
            index = positions[:, None, :, None].expand(k.shape)
            keys.scatter_(2, index, k.to(keys.dtype))
            values.scatter_(2, index, v.to(values.dtype))
        return keys, values


class Attention(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.head_dim = config.head_dim
        kv_dim = config.kv_heads * config.head_dim
        self.wq = nn.Linear(config.dim, config.dim, bias=False)
        self.wk = nn.Linear(config.dim, kv_dim, bias=False)
        self.wv = nn.Linear(config.dim, kv_dim, bias=False)
        self.wo = nn.Linear(config.dim, config.dim, bias=False)
        self.cache: KVCache | None = None

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                positions: torch.Tensor | None, mask: torch.Tensor | None,
                lengths: torch.Tensor | None = None) -> torch.Tensor:
        """With a cache, row b attends to (and the kernels read) only its first ``lengths[b]`` cache slots."""
        batch, seq, _ = x.shape
        q = apply_rope(self.wq(x).view(batch, seq, -1, self.head_dim), cos, sin).transpose(1, 2)
        k = apply_rope(self.wk(x).view(batch, seq, -1, self.head_dim), cos, sin).transpose(1, 2)
        v = self.wv(x).view(batch, seq, -1, self.head_dim).transpose(1, 2)
        if self.cache is not None:
            if positions is None or lengths is None:
                raise ValueError("a model with a KV cache needs input positions and per-row lengths (batch,): "
                                 "how many leading cache slots each row has filled after this forward")
            k, v = self.cache.update(positions, k, v)
        if self.cache is None:
            out = ops.attention(q, k, v, mask=mask, causal=mask is None and seq > 1)
        else:
            if seq == 1:
                out = ops.decode_attention(q, k, v, mask=mask, lengths=lengths)
            else:
                out = ops.attention(q, k, v, mask=mask, causal=mask is None, lengths=lengths)
        return self.wo(out.transpose(1, 2).reshape(batch, seq, -1))


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x), w1 and w3 fused into one kernel where ``ops.swiglu_linear`` can."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden_dim, bias=False)
        self.w3 = nn.Linear(dim, hidden_dim, bias=False)
        self.w2 = nn.Linear(hidden_dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(ops.swiglu_linear(x, self.w1, self.w3))


class TransformerBlock(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.attention_norm = RMSNorm(config.dim, config.norm_eps)
        self.attention = Attention(config)
        self.ffn_norm = RMSNorm(config.dim, config.norm_eps)
        self.feed_forward = FeedForward(config.dim, config.hidden_dim)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                positions: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                lengths: torch.Tensor | None = None) -> torch.Tensor:
        h = x + self.attention(self.attention_norm(x), cos, sin, positions, mask, lengths)
        return h + self.feed_forward(self.ffn_norm(h))


class Transformer(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_embeddings: nn.Embedding | None = nn.Embedding(config.vocab_size, config.dim)
        self.layers = nn.ModuleDict({str(i): TransformerBlock(config) for i in range(config.n_layers)})
        self.norm: RMSNorm | None = RMSNorm(config.dim, config.norm_eps)
        self.output: nn.Linear | None = nn.Linear(config.dim, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight
        cos, sin = rope_tables(config.head_dim, config.max_seq_len, config.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.init_weights()

    def init_weights(self, seed: int | None = None) -> None:
        """(Re)initialize parameters and rope tables, e.g. after building on the meta device.

        With a ``seed``, each weight draws from its own generator seeded by the seed and the weight's
        name, so a pipeline stage (which holds only some layers) initializes its layers exactly as
        the whole model would: every layout of a run starts from the same weights. Output-side
        projections get std/√(2·n_layers) so the residual stream's variance does not grow with
        depth (GPT-2's scaled init).
        """
        cos, sin = rope_tables(self.config.head_dim, self.config.max_seq_len, self.config.rope_theta,
                               device=self.rope_cos.device)
        with torch.no_grad():
            self.rope_cos.copy_(cos)
            self.rope_sin.copy_(sin)
        residual_std = 0.02 / (2 * self.config.n_layers) ** 0.5
        for name, module in self.named_modules():
            generator = None
            if seed is not None and isinstance(module, nn.Linear | nn.Embedding):
                generator = torch.Generator(device=module.weight.device)
                generator.manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
            if isinstance(module, nn.Linear):
                std = residual_std if name.endswith(("wo", "w2")) else 0.02
                nn.init.normal_(module.weight, std=std, generator=generator)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=0.02, generator=generator)
            elif isinstance(module, RMSNorm):
                module.reset_parameters()

    def setup_cache(self, batch_size: int, max_seq_len: int | None = None, dtype: torch.dtype | None = None) -> None:
        """Attach a KV cache to every attention layer; ``clear_cache`` removes them."""
        length = max_seq_len or self.config.max_seq_len
        if length > self.config.max_seq_len:
            raise ValueError(f"cache length {length} exceeds the model's max_seq_len {self.config.max_seq_len}")
        param = next(self.parameters())
        for block in self.layers.values():
            block.attention.cache = KVCache(batch_size, length, self.config.kv_heads, self.config.head_dim,
                                            dtype=dtype or param.dtype, device=param.device)

    def clear_cache(self) -> None:
        for block in self.layers.values():
            block.attention.cache = None

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor | None = None,
                mask: torch.Tensor | None = None, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Logits for ``tokens`` (batch, seq), or the hidden state if this stage has no output head.

        Without a cache, attention is causal over ``tokens``. With a cache, ``positions`` ((seq,) or
        (batch, seq)) says where the tokens go, the boolean ``mask`` (broadcastable to batch, heads,
        seq, cache_len) says which cache entries each may attend to, and ``lengths`` (int, (batch,))
        says how many leading cache slots row b has filled once this forward has written its tokens:
        the attention kernels read no slot past it. The caller knows which of its tokens are real
        and which are padding, so the caller says; a padded row's length stops at its real tokens.
        """
        h = self.tok_embeddings(tokens) if self.tok_embeddings is not None else tokens
        seq = h.shape[1]
        if seq > self.config.max_seq_len:
            raise ValueError(f"sequence length {seq} exceeds max_seq_len {self.config.max_seq_len}")
        index = positions if positions is not None else torch.arange(seq, device=h.device)
        cos, sin = self.rope_cos[index], self.rope_sin[index]
        if index.dim() == 1:
            cos, sin = cos.unsqueeze(0), sin.unsqueeze(0)
        for block in self.layers.values():
            h = block(h, cos, sin, positions, mask, lengths)
        if self.norm is not None:
            h = self.norm(h)
        return self.output(h) if self.output is not None else h
