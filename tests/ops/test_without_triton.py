"""Everything imports and runs where Triton cannot be imported (macOS, aarch64): the ops take their
torch references, so the model trains and generates, and the recommender retrieves.

Runs in a fresh process with ``import triton`` blocked, once with the interpreter off and once
with ``TRITON_INTERPRET=1`` (where the ops would otherwise reach for a kernel).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

WITHOUT_TRITON = textwrap.dedent("""
    import os
    import sys

    sys.modules["triton"] = None  # any "import triton" now raises ModuleNotFoundError

    import torch
    from ai_system import ops

    outside = sorted(m for m in sys.modules if m.startswith("ai_system.") and not m.startswith("ai_system.ops"))
    assert not outside, f"ai_system.ops imported {outside}"

    from ai_system.inference.generate import SamplingParams, generate
    from ai_system.models.config import get_config
    from ai_system.models.transformer import Transformer
    from ai_system.recsys.models import TwoTower

    for interpret in ("0", "1"):
        os.environ["TRITON_INTERPRET"] = interpret
        table = ops.dispatch_table("cpu", torch.float32)
        assert all(path.startswith("torch reference") for path in table.values()), table
        torch.manual_seed(0)
        model = Transformer(get_config("debug", n_layers=1))
        tokens = torch.randint(0, model.config.vocab_size, (2, 9))
        model(tokens).logsumexp(-1).mean().backward()
        assert model.layers["0"].feed_forward.w1.weight.grad.abs().sum() > 0
        new_tokens = generate(model.eval(), [[1, 2, 3], [4, 5]], SamplingParams(max_new_tokens=3, temperature=0.8,
                                                                                seed=0))
        assert [len(row) for row in new_tokens] == [3, 3], new_tokens
        towers = TwoTower(dim=8, hidden=16)
        with torch.no_grad():
            _, top = ops.similarity_topk(towers.user_tower(torch.randn(2, 8)), towers.item_tower(torch.randn(30, 8)), 5)
        assert top.shape == (2, 5)
    print(table["softmax"])
""")


def test_the_system_runs_where_triton_cannot_be_imported():
    result = subprocess.run([sys.executable, "-c", WITHOUT_TRITON], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "triton cannot be imported (ModuleNotFoundError" in result.stdout
