# The few targets people expect. `make demo` and `make test` each work on a fresh machine.
PYTHON ?= python3
PIP = $(PYTHON) -m pip
TORCH_VERSION ?= 2.13.0

.PHONY: install demo test test-fast lint format bench clean

# torch first, at a pinned version (a CPU wheel exists), so pip never pulls CUDA packages on a CPU
# machine; an already installed torch (e.g. a user's CUDA build) is kept.
install:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install -q "torch==$(TORCH_VERSION)"
	$(PIP) install -q -e ".[dev]"

demo: install
	$(PYTHON) -m lmforge pipeline recipes/demo.yaml

test: install
	$(PYTHON) -m pytest -q -ra

test-fast: install
	$(PYTHON) -m pytest -q -ra -m "not slow"

lint:
	ruff check lmforge tests bench
	ruff format --check lmforge tests bench

format:
	ruff check --fix lmforge tests bench
	ruff format lmforge tests bench

bench: install
	$(PYTHON) bench/pretrain.py

clean:
	rm -rf out build *.egg-info .pytest_cache
