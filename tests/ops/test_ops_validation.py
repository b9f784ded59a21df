"""Bad calls fail before any launch with an error naming the argument, the value and what is supported;
the dispatch rule picks the torch path exactly where the kernels must not run, and says why; and
the reference path honours the same contracts as the kernels."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ai_system import ops
from ai_system.ops import dispatch, reference


def t(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(*shape).to(dtype)


@pytest.mark.parametrize(("call", "error", "message"), [
    (lambda: ops.softmax(torch.arange(6)), TypeError, "x has dtype torch.int64"),
    (lambda: ops.softmax(torch.tensor(1.0)), ValueError, "at least 1 dimension"),
    (lambda: ops.softmax([1.0, 2.0]), TypeError, "x must be a torch.Tensor, got list"),
    (lambda: ops.rms_norm(t(2, 8), t(7)), ValueError, r"weight must have shape \(8,\)"),
    (lambda: ops.rms_norm(t(2, 8), t(8), eps=-1.0), ValueError, "eps must be >= 0"),
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
    (lambda: ops.similarity_topk(t(3, 8), t(10, 8), 11), ValueError, r"k must be an int in \[1, number of keys = 10\]"),
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


def test_dispatch_table_says_which_path_runs_and_why(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    on_cpu = ops.dispatch_table("cpu", torch.float32)
    assert set(on_cpu) == set(dispatch.OPS)
    assert all(path.startswith("torch reference: CPU tensors") for path in on_cpu.values())
    assert all(path.startswith("torch reference: meta tensors")
               for path in ops.dispatch_table("meta", torch.float32).values())
    if dispatch.triton_import_error() is None:
        on_gpu = ops.dispatch_table("cuda", torch.bfloat16)
        assert all(path.startswith("triton kernel: CUDA tensors") for path in on_gpu.values())
        assert "k <= 1024" in on_gpu["similarity_topk"] and "tensor parallelism" in on_gpu["swiglu_linear"]
        monkeypatch.setenv("TRITON_INTERPRET", "1")
        assert all(path.startswith("triton kernel: the Triton interpreter")
                   for path in ops.dispatch_table("cpu", torch.float16).values())
        assert all("interpreter cannot compute it" in path
                   for path in ops.dispatch_table("cpu", torch.bfloat16).values())


def test_swiglu_linear_runs_the_modules_where_it_does_not_fuse(kernels, launches):
    """Off the kernel path, for modules with hooks (tensor parallelism's DTensor plans are hooks) or a
    bias, and under autocast, ``swiglu_linear`` calls the modules, so whatever they do still happens."""
    torch.manual_seed(0)
    gate, up = nn.Linear(8, 12, bias=False).to(kernels), nn.Linear(8, 12, bias=False).to(kernels)
    x = t(3, 8).to(kernels)
    expected = F.silu(gate(x)) * up(x)
    seen = []
    hook = gate.register_forward_hook(lambda module, args, out: seen.append(out.shape))
    with torch.no_grad():
        torch.testing.assert_close(ops.swiglu_linear(x, gate, up), expected)
    hook.remove()
    biased = nn.Linear(8, 12).to(kernels)
    with torch.no_grad():
        torch.testing.assert_close(ops.swiglu_linear(x, gate, biased), F.silu(gate(x)) * biased(x))
    torch.testing.assert_close(ops.swiglu_linear(x, gate, up), expected)
    with torch.no_grad(), torch.autocast(kernels, dtype=torch.bfloat16):
        assert ops.swiglu_linear(x, gate, up).dtype == torch.bfloat16
    assert seen == [(3, 12)] and not launches
    with torch.no_grad():
        ops.swiglu_linear(x, gate, up)
    assert launches["_matmul_kernel"] == 1


def test_similarity_topk_past_the_kernels_k_takes_the_reference(kernels, launches):
    queries, keys = t(2, 4).to(kernels), t(1500, 4).to(kernels)
    scores, indices = ops.similarity_topk(queries, keys, dispatch.MAX_TOPK_KERNEL_K + 1)
    expected_scores, expected_indices = reference.similarity_topk(queries, keys, dispatch.MAX_TOPK_KERNEL_K + 1)
    assert torch.equal(scores, expected_scores) and torch.equal(indices, expected_indices)
    assert not launches
