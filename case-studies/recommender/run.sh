#!/usr/bin/env bash
# Reproduce the recommender case study end to end: bash case-studies/recommender/run.sh [--redis]
# Writes artifacts/recommender/recommender-<backend>.json; the benchmarks publish the same figures.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
exec "$PYTHON" -m ai_system.cli recommender --out artifacts/recommender "$@"
