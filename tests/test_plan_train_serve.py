"""The README's end-to-end flow, as a user runs it: plan this machine → train the plan → serve the export.

``ai-system plan --gpu this-machine`` prints the ``ai-system train`` command of its best layout; the
test runs that command (briefly, exporting the model), starts ``ai-system serve --checkpoint`` on the
export, and asks it to complete a prompt from the corpus. The served completion must be the one the
exported weights give, and those weights must predict the corpus better than the untrained model.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch
import torch.nn.functional as F

from ai_system.data.sources import ByteCorpus
from ai_system.distributed.launch import free_port
from ai_system.inference.generate import SamplingParams, generate
from ai_system.models.pretrained import load_pretrained
from ai_system.models.transformer import Transformer

PROMPT_TOKENS = 64
COMPLETION_TOKENS = 24


def ai_system(*args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ai_system.cli", *args], capture_output=True, text=True,
                          timeout=timeout, check=True)


def next_token_loss(model: Transformer, tokens: torch.Tensor) -> float:
    with torch.no_grad():
        logits = model(tokens[None, :-1])
    return F.cross_entropy(logits[0], tokens[1:]).item()


@pytest.mark.slow
def test_plan_then_train_the_plan_then_serve_the_export(tmp_path: Path) -> None:
    plan = ai_system("plan", "--model", "small", "--gpu", "this-machine", "--gpus", "2", "--seq", "128",
                     "--global-batch", "8", "--precision", "fp32", "--top", "1", "--json", timeout=300)
    train_command = shlex.split(json.loads(plan.stdout)[0]["train_command"])
    assert train_command[:2] == ["ai-system", "train"] and "--layout" in train_command
    export = tmp_path / "model"
    ai_system(*train_command[1:], "--steps", "40", "--warmup-steps", "4", "--lr", "1e-2", "--export-dir", str(export),
              "--no-progress", timeout=900)

    model, tokenizer = load_pretrained(export)
    window = ByteCorpus.stdlib(seq_len=PROMPT_TOKENS + COMPLETION_TOKENS).sequence(1000)
    prompt = tokenizer.decode(window[:PROMPT_TOKENS].tolist())
    expected = tokenizer.decode(generate(model, [tokenizer.encode(prompt)],
                                         SamplingParams(max_new_tokens=COMPLETION_TOKENS))[0])
    untrained = Transformer(model.config)
    untrained.init_weights(seed=0)
    assert next_token_loss(model, window) < next_token_loss(untrained, window) - 1.0

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "ai_system.cli", "serve", "--checkpoint", str(export),
                               "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.stderr.read()
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server never became ready"
            time.sleep(0.2)
        response = httpx.post(f"{url}/v1/completions", timeout=60,
                              json={"prompt": prompt, "max_tokens": COMPLETION_TOKENS, "temperature": 0})
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["text"] == expected
    finally:
        server.terminate()
        server.wait(timeout=60)
