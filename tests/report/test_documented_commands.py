"""Running the documented commands leaves ``results/`` as the report expects it.

``results/`` holds benchmark runs only: a command that wrote anything else there used to stop
``ai-system report`` (and so ``make bench``) with a traceback. This runs each documented command
that writes files, then the report step of ``make bench``, which must finish without a warning.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ai_system.bench.harness import REPO_ROOT

RESULTS = REPO_ROOT / "results"
DOCUMENTED = [
    ["bash", "case-studies/recommender/run.sh", "--steps", "20"],
    [sys.executable, "case-studies/llm-training/reproduce.py", "--plan-only"],
]


def _files(folder: Path) -> set[Path]:
    return {path for path in folder.rglob("*") if path.is_file()}


@pytest.mark.slow
def test_documented_commands_then_the_report_step(tmp_path):
    before = _files(RESULTS)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for command in DOCUMENTED:
        done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, (command, done.stderr[-2000:])
    assert _files(RESULTS) == before, "a documented command wrote into results/"
    report = subprocess.run([sys.executable, "-m", "ai_system.cli", "report", "--out", str(tmp_path / "pages")],
                            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert report.returncode == 0 and report.stderr == "", report.stderr
