"""Transformer shapes and the arithmetic that follows from them (parameters, FLOPs).

One decoder-only architecture serves training, inference and model parallelism; these named
configs span it from a unit-test toy to an 8B-parameter Llama-3-like shape, and the 1T shape the
capacity planner plans (too large to build here, but the arithmetic is the same).
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 256
    dim: int = 64
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int | None = None
    ffn_dim: int | None = None
    max_seq_len: int = 256
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = False

    def __post_init__(self) -> None:
        for name in ("vocab_size", "dim", "n_layers", "n_heads", "max_seq_len"):
            if getattr(self, name) <= 0:
                raise ValueError(f"ModelConfig.{name} must be positive, got {getattr(self, name)}")
        for name in ("n_kv_heads", "ffn_dim"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ValueError(f"ModelConfig.{name} must be positive or None (the default), "
                                 f"got {getattr(self, name)}")
        if self.dim % self.n_heads:
            raise ValueError(f"ModelConfig.dim={self.dim} must be divisible by n_heads={self.n_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim={self.head_dim} must be even for rotary embeddings")
        if self.n_heads % self.kv_heads:
            raise ValueError(f"n_heads={self.n_heads} must be divisible by n_kv_heads={self.kv_heads}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def hidden_dim(self) -> int:
        """SwiGLU width: 8/3·dim rounded up to a multiple of 64 unless ``ffn_dim`` fixes it."""
        if self.ffn_dim is not None:
            return self.ffn_dim
        return 64 * -(-int(8 * self.dim / 3) // 64)

    def num_params(self, include_embedding: bool = True) -> int:
        kv_dim = self.kv_heads * self.head_dim
        attention = self.dim * (self.dim + 2 * kv_dim) + self.dim * self.dim
        mlp = 3 * self.dim * self.hidden_dim
        norms = 2 * self.dim
        per_layer = attention + mlp + norms
        output = 0 if self.tie_embeddings else self.vocab_size * self.dim
        body = self.n_layers * per_layer + self.dim + output
        return body + (self.vocab_size * self.dim if include_embedding else 0)

    def train_flops_per_token(self, seq_len: int) -> float:
        """Forward + backward FLOPs per token, no recomputation: 6·N + 12·L·d·T.

        N excludes the input embedding (a lookup, not a matmul) and includes the output
        projection; the second term is causal-agnostic attention scores and values
        (QKᵀ and AV: 2·2·T·d per layer forward, ×3 for backward), as in the PaLM paper's MFU.
        """
        return 6.0 * self.num_params(include_embedding=False) + 12.0 * self.n_layers * self.dim * seq_len


MODEL_CONFIGS: dict[str, ModelConfig] = {
    "debug": ModelConfig(vocab_size=256, dim=64, n_layers=2, n_heads=4, max_seq_len=128),
    "small": ModelConfig(vocab_size=256, dim=256, n_layers=4, n_heads=8, max_seq_len=256),
    "125M": ModelConfig(vocab_size=32000, dim=768, n_layers=12, n_heads=12, max_seq_len=2048),
    "1B": ModelConfig(vocab_size=32000, dim=2048, n_layers=16, n_heads=32, n_kv_heads=8, ffn_dim=8192,
                      max_seq_len=2048, rope_theta=500000.0),
    "8B": ModelConfig(vocab_size=128256, dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, ffn_dim=14336,
                      max_seq_len=8192, rope_theta=500000.0),
    # Megatron-LM's 1T GPT shape (Narayanan et al., 2021, Table 1: 128 layers, d=25600, 160 heads,
    # V=51200, s=2048) with a SwiGLU MLP of 8d/3 width, which keeps the 12·d² weights per block: 1.009T.
    "1T": ModelConfig(vocab_size=51200, dim=25600, n_layers=128, n_heads=160, max_seq_len=2048),
}


def get_config(name: str, **overrides: object) -> ModelConfig:
    """A named config, optionally with fields replaced (``get_config("small", n_layers=2)``)."""
    if name not in MODEL_CONFIGS:
        raise ValueError(f"unknown model config {name!r}; expected one of {sorted(MODEL_CONFIGS)}")
    return replace(MODEL_CONFIGS[name], **overrides)
