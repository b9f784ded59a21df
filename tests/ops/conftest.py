"""Where kernel tests run: the GPU when there is one, else the Triton interpreter on the CPU.

A test that takes the ``dtype`` argument runs once per dtype the kernels support here (fp32 and
fp16; bf16 only on a GPU, as the interpreter cannot compute it) and gets ``close``, an assertion
with that dtype's tolerance.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

ON_GPU = torch.cuda.is_available()
KERNEL_DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if ON_GPU else [])
TOLERANCES = {torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}


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
    if not ON_GPU:
        from triton.language import standard
        from triton.runtime.interpreter import InterpretedFunction

        if not isinstance(standard.max, InterpretedFunction):
            pytest.fail("triton was imported before TRITON_INTERPRET=1 was set, so its interpreter cannot run; "
                        "run the tests with TRITON_INTERPRET=1 in the environment")
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    return kernel_device


@pytest.fixture
def close() -> Callable[..., None]:
    """``close(actual, expected, dtype, scale=1)``: agreement within the dtype's tolerance times ``scale``."""

    def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, scale: float = 1.0) -> None:
        tolerance = TOLERANCES[dtype] * scale
        torch.testing.assert_close(actual.float(), expected.float(), atol=tolerance, rtol=tolerance)

    return assert_close
