"""Bad calls fail before any launch with an error naming the argument, the value and what is supported;
and the dispatch rule picks the torch path exactly where the kernels must not run."""

from __future__ import annotations

import pytest
import torch

from ai_system.inference import ops


def t(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(*shape).to(dtype)


@pytest.mark.parametrize(("call", "error", "message"), [
    (lambda: ops.softmax(torch.arange(6)), TypeError, "x has dtype torch.int64"),
    (lambda: ops.softmax(torch.tensor(1.0)), ValueError, "at least 1 dimension"),
    (lambda: ops.softmax([1.0, 2.0]), TypeError, "x must be a torch.Tensor, got list"),
    (lambda: ops.rms_norm(t(2, 8), t(7)), ValueError, r"weight must have shape \(8,\)"),
    (lambda: ops.rms_norm(t(2, 8), t(8), eps=-1.0), ValueError, "eps must be >= 0"),
    (lambda: ops.layer_norm(t(2, 8), t(8), t(3)), ValueError, r"bias must have shape \(8,\)"),
    (lambda: ops.rope(t(2, 3, 4), t(1, 3, 2), t(1, 3, 2)), ValueError, "x must have 4 dimensions"),
    (lambda: ops.rope(t(2, 3, 4, 5), t(1, 3, 2), t(1, 3, 2)), ValueError, "head_dim must be even"),
    (lambda: ops.rope(t(2, 3, 4, 6), t(1, 4, 3), t(1, 3, 3)), ValueError, r"cos must have shape \(1 or 2, 3, 3\)"),
    (lambda: ops.attention(t(1, 4, 5, 8), t(1, 3, 5, 8), t(1, 3, 5, 8)), ValueError, "multiple of k's 3 heads"),
    (lambda: ops.attention(t(1, 2, 5, 8), t(1, 2, 5, 8), t(1, 2, 6, 8)), ValueError, "same shape"),
    (lambda: ops.attention(t(1, 2, 5, 8), t(1, 2, 5, 8, dtype=torch.float16), t(1, 2, 5, 8)), TypeError,
     "k has dtype torch.float16 but must match"),
    (lambda: ops.attention(t(1, 2, 5, 8), t(1, 2, 5, 8), t(1, 2, 5, 8), mask=torch.ones(5, 5)), TypeError,
     "mask must be boolean"),
    (lambda: ops.attention(t(1, 2, 5, 8), t(1, 2, 5, 8), t(1, 2, 5, 8), mask=torch.ones(3, 5, dtype=torch.bool)),
     ValueError, "does not broadcast"),
    (lambda: ops.attention(t(1, 1, 2, 512), t(1, 1, 2, 512), t(1, 1, 2, 512)), ValueError, "head dim 512"),
    (lambda: ops.decode_attention(t(1, 2, 3, 8), t(1, 2, 5, 8), t(1, 2, 5, 8)), ValueError, "one query position"),
    (lambda: ops.decode_attention(t(2, 2, 1, 8), t(2, 2, 5, 8), t(2, 2, 5, 8), lengths=torch.ones(2)), ValueError,
     "lengths must be an int32/int64"),
    (lambda: ops.matmul_bias_act(t(3, 8), t(4, 8), activation="tanh"), ValueError, "activation must be one of"),
    (lambda: ops.matmul_bias_act(t(3, 8), t(8, 4)), ValueError, r"weight must be \(out_features, 8\)"),
    (lambda: ops.matmul_bias_act(t(3, 8), t(4, 8), t(5)), ValueError, r"bias must have shape \(4,\)"),
    (lambda: ops.swiglu_matmul(t(3, 8), t(4, 8), t(5, 8)), ValueError, "w_up must be"),
    (lambda: ops.swiglu(t(3, 8), t(3, 7)), ValueError, "same shape"),
    (lambda: ops.similarity_topk(t(3, 8), t(10, 8), 11), ValueError, "k must be an int in"),
    (lambda: ops.similarity_topk(t(3, 8), t(10, 8), 0), ValueError, "got 0"),
    (lambda: ops.similarity_topk(t(3, 8), t(10, 7), 2), ValueError, "share the vector dimension"),
    (lambda: ops.similarity_topk(t(3, 8), t(10, 8, dtype=torch.float16), 2), TypeError, "keys has dtype"),
])
def test_bad_arguments_are_named(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_cpu_without_the_interpreter_uses_torch(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert not ops.use_triton(t(2, 3))


def test_torch_path_whenever_the_kernels_must_not_run(kernels):
    x = t(2, 3).to(kernels)
    assert ops.use_triton(x)
    assert not ops.use_triton(x.clone().requires_grad_())
    with torch.no_grad():
        assert ops.use_triton(x.clone().requires_grad_())
    assert not ops.use_triton(x[:0])
    with ops.reference_only():
        assert not ops.use_triton(x)
    assert ops.use_triton(x)
    if kernels == "cpu":
        assert not ops.use_triton(x.to(torch.bfloat16))


def test_mixed_devices_are_refused():
    meta = torch.empty(2, 3, device="meta")
    with pytest.raises(ValueError, match="one device"):
        ops.use_triton(t(2, 3), meta)
