#!/usr/bin/env bash
# Reproduce the search case study: bash case-studies/search/run.sh [--profile quick|full] [--threads N]
# Writes artifacts/search/{results.json,summary.md}; the benchmarks publish the same figures.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
export HF_HUB_OFFLINE=1
exec "$PYTHON" -m ai_system.cli search study --out artifacts/search "$@"
