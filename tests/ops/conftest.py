"""Where kernel tests run: the GPU when there is one, else the Triton interpreter on the CPU.

A test that takes the ``dtype`` argument runs once per dtype the kernels support here (fp32 and
fp16; bf16 only on a GPU, as the interpreter cannot compute it) and gets ``close``, an assertion
with that dtype's tolerance. ``launches`` counts the Triton kernels that ran, by name, so a test
can prove it did not compare the reference with itself; ``every_op_call_launches`` makes that
proof automatic for every op a test calls.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch

from ai_system import ops
from ai_system.ops.dispatch import OPS, triton_import_error

ON_GPU = torch.cuda.is_available()
KERNEL_DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if ON_GPU else [])
TOLERANCES = {torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}
KERNELS_OF_OP = {
    "softmax": {"_softmax_kernel"},
    "rms_norm": {"_rms_norm_kernel"},
    "rope": {"_rope_kernel"},
    "attention": {"_flash_attention_kernel"},
    "decode_attention": {"_decode_partial_kernel", "_decode_combine_kernel"},
    "matmul_bias_act": {"_matmul_kernel"},
    "swiglu_matmul": {"_matmul_kernel"},
    "swiglu_linear": {"_matmul_kernel"},
    "similarity_topk": {"_similarity_topk_kernel"},
}
assert set(KERNELS_OF_OP) == set(OPS), "every op needs the kernels that prove it ran"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "dtype" in metafunc.fixturenames:
        metafunc.parametrize("dtype", KERNEL_DTYPES, ids=[str(d).removeprefix("torch.") for d in KERNEL_DTYPES])


@pytest.fixture(scope="session")
def kernel_device() -> str:
    """Where the kernels run: the GPU if there is one, else the CPU (with ``kernels`` turning on the interpreter)."""
    return "cuda" if ON_GPU else "cpu"


@pytest.fixture
def kernels(monkeypatch: pytest.MonkeyPatch, kernel_device: str) -> str:
    """The device whose tensors the ops send to Triton kernels here; turns the interpreter on for the CPU.

    Only these tests see ``TRITON_INTERPRET=1``, so other test areas keep the fast torch path.
    """
    if triton_import_error() is not None:
        pytest.skip(f"no Triton here: {triton_import_error()}")
    if not ON_GPU:
        from triton.language import standard
        from triton.runtime.interpreter import InterpretedFunction

        if not isinstance(standard.max, InterpretedFunction):
            pytest.fail("triton was imported before TRITON_INTERPRET=1 was set, so its interpreter cannot run; "
                        "run the tests with TRITON_INTERPRET=1 in the environment")
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    return kernel_device


@pytest.fixture
def launches(kernels: str, monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Triton kernels launched during the test, counted by kernel function name."""
    from ai_system.ops.kernels import Kernel

    counts: Counter[str] = Counter()
    original = Kernel.__getitem__

    def counted(self: Kernel, grid: Any) -> Callable[..., Any]:
        counts[self.fn.__name__] += 1
        return original(self, grid)

    monkeypatch.setattr(Kernel, "__getitem__", counted)
    return counts


@pytest.fixture
def every_op_call_launches(launches: Counter[str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    """Fail any call of a public op that does not launch its Triton kernels, and a test that calls no op.

    A parity test whose op quietly fell back to the reference would compare the reference with itself.
    Yields the op calls made, by name.
    """
    calls: Counter[str] = Counter()
    for name in OPS:
        original = getattr(ops, name)

        def checked(*args: Any, _name: str = name, _original: Callable[..., Any] = original, **kwargs: Any) -> Any:
            before = launches.copy()
            result = _original(*args, **kwargs)
            missing = KERNELS_OF_OP[_name] - set(launches - before)
            if missing:
                pytest.fail(f"ops.{_name} ran without launching {sorted(missing)}: the reference ran instead")
            calls[_name] += 1
            return result

        monkeypatch.setattr(ops, name, checked)
    yield calls
    assert calls, "the test called no op, so it proves nothing about the kernels"


@pytest.fixture
def close() -> Callable[..., None]:
    """``close(actual, expected, dtype, scale=1)``: agreement within the dtype's tolerance times ``scale``."""

    def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, scale: float = 1.0) -> None:
        tolerance = TOLERANCES[dtype] * scale
        torch.testing.assert_close(actual.float(), expected.float(), atol=tolerance, rtol=tolerance)

    return assert_close
