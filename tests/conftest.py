"""Before any test imports Triton: on a machine without a GPU, import it for the interpreter.

Triton compiles its standard library for the interpreter only if ``TRITON_INTERPRET=1`` is set when
``triton.language`` is first imported; the root conftest is loaded before every test module, so
the kernel tests under ``tests/ops`` can run on CPU tensors whatever is collected first.
The variable is restored afterwards: each kernel launch reads it again (see
``ai_system/ops/kernels``). Where Triton is not installed nothing is imported, the ops run their
torch references, and the kernel tests skip.
"""

import importlib.util
import os
import sys

import torch

if not torch.cuda.is_available() and "triton" not in sys.modules and importlib.util.find_spec("triton"):
    previous = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    import triton.language  # noqa: F401

    if previous is None:
        del os.environ["TRITON_INTERPRET"]
    else:
        os.environ["TRITON_INTERPRET"] = previous
