# Two commands on a fresh machine: `make bench` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU machines get the CPU build from local disk; on a GPU, install a CUDA torch into .venv first.
TORCH_SPEC ?= torch==2.13.0
PROFILE ?= quick
INSTALLED := $(VENV)/.installed
PEERS := $(VENV)/.peers

.PHONY: install peers bench test gpu-check report docs docs-serve system-deps lint clean

$(INSTALLED): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

install: $(INSTALLED)

# The benchmarks' peers (TorchRec on FBGEMM), pinned per torch minor in benchmarks/peers/torch-X.Y.txt and
# installed without dependency resolution, so they never replace torch; a peer that does not import, or a
# torch with no pinned set, fails here, loudly.
$(PEERS): $(wildcard benchmarks/peers/*.txt) $(INSTALLED)
	@torch_before=$$($(BIN)/python -c "import torch; print(torch.__version__)"); \
	pins=benchmarks/peers/torch-$$(echo $$torch_before | cut -d. -f1,2).txt; \
	test -f $$pins || { echo "peers: no pinned peer set for torch $$torch_before: add $$pins"; exit 1; }; \
	$(BIN)/pip install -q --no-deps -r $$pins && \
	test "$$($(BIN)/python -c 'import torch; print(torch.__version__)')" = "$$torch_before" && \
	$(BIN)/python -c "import fbgemm_gpu, torchrec; print('peers: torchrec', torchrec.__version__, 'fbgemm_gpu', fbgemm_gpu.__version__)"
	@touch $@

peers: $(PEERS)

bench: install peers system-deps
	$(BIN)/pytest benchmarks/ --profile $(PROFILE)
	$(MAKE) docs

test: install system-deps
	$(BIN)/pytest tests/

# One CUDA GPU, under 8 minutes: every kernel, GPU benchmark and training/serving path once, stopping at the
# first broken one; writes results/<gpu>/<time>-gpu-check.json. Needs a CUDA torch in .venv.
gpu-check: install
	$(BIN)/python scripts/gpu_check.py

report: install
	$(BIN)/ai-system report

docs: report
	$(BIN)/mkdocs build --strict

docs-serve: report
	$(BIN)/mkdocs serve -a 127.0.0.1:8000

system-deps:
	@bash scripts/system-deps.sh

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf site .pytest_cache .ruff_cache artifacts
