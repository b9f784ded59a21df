"""The README's Python blocks run as written, and its quick start is the seed README's, word for word."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).parents[2] / "README.md"
SEED_QUICK_START = '''from ai_system import architecture, deployment

# Initialize distributed system
system = architecture.DistributedAISystem(
    training_nodes=4,
    inference_nodes=8,
    gpu_per_node=4
)

# Deploy system
deployment = deployment.KubernetesDeployment(
    system=system,
    monitoring=True,
    autoscaling=True
)

# Launch services
deployment.deploy()
'''
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.S | re.M)


def test_the_quick_start_is_the_seeds():
    assert SEED_QUICK_START in BLOCKS


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{index}" for index in range(len(BLOCKS))])
def test_every_python_block_runs(block, tmp_path, monkeypatch, capsys):
    """Run in an empty folder with a kubeconfig that names no cluster, so nothing is ever applied."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "kubeconfig").write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n")
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    exec(compile(block, str(README), "exec"), {"__name__": "__readme__"})
    if "deploy()" in block:
        assert (tmp_path / "ai-system-deploy" / "ai-system" / "kubernetes" / "30-training.yaml").is_file()
        assert "kubectl apply -f ai-system-deploy/ai-system/kubernetes" in capsys.readouterr().out
