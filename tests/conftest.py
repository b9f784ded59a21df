"""Before any test imports Triton: on a machine without a GPU, import it for the interpreter.

Triton compiles its standard library for the interpreter only if ``TRITON_INTERPRET=1`` is set when
``triton.language`` is first imported; the root conftest is loaded before every test module, so
the kernel tests under ``tests/inference`` can run on CPU tensors whatever is collected first.
The variable is restored afterwards: each kernel launch reads it again (see
``ai_system/inference/kernels``).
"""

import os
import sys

import torch

if not torch.cuda.is_available() and "triton" not in sys.modules:
    previous = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    import triton.language  # noqa: F401

    if previous is None:
        del os.environ["TRITON_INTERPRET"]
    else:
        os.environ["TRITON_INTERPRET"] = previous
