# The few targets people expect. `make demo` and `make test` each work on a fresh machine.
#
# Everything runs in a virtual environment: the active one ($VIRTUAL_ENV) if there is one, else
# ./.venv, created on first use (a system Python managed by Debian/Ubuntu refuses `pip install`,
# PEP 668). `make install PY=/path/to/python` uses that interpreter as it is.
PYTHON ?= python3
VENV ?= .venv
ifdef VIRTUAL_ENV
PY ?= $(VIRTUAL_ENV)/bin/python
else
PY ?= $(VENV)/bin/python
endif
PIP = $(PY) -m pip
TORCH_VERSION ?= 2.13.0
# On Linux without an NVIDIA driver, torch comes from PyTorch's CPU index: plain PyPI serves a CUDA
# build with about 17 nvidia-* packages (several GB). Set TORCH_INDEX= (empty) to use PyPI as is.
TORCH_INDEX ?= $(shell [ "$$(uname -s)" = Linux ] && ! command -v nvidia-smi >/dev/null 2>&1 && echo https://download.pytorch.org/whl/cpu)
# The dependency set the suite was last run with (see docs/install.md); CONSTRAINTS= to skip it.
CONSTRAINTS ?= constraints.txt
# Extras installed with lmforge. `make test` adds llamacpp: llama.cpp built from its sdist (minutes of
# C++ on a first install; pip caches the wheel) for tests/test_gguf_llamacpp.py. `make demo` skips it.
EXTRAS ?= dev
test: EXTRAS = dev,llamacpp

.PHONY: install demo test test-fast lint format docs bench constraints clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# torch first, at a pinned version, so pip never pulls CUDA packages on a CPU machine; an already
# installed torch (e.g. a user's CUDA build) is kept.
install: $(filter $(VENV)/bin/python,$(PY))
	@$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "torch==$(TORCH_VERSION)" \
		$(if $(TORCH_INDEX),--index-url $(TORCH_INDEX) --extra-index-url https://pypi.org/simple)
	$(PIP) install -q $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e ".[$(EXTRAS)]"

demo: install
	$(PY) -m lmforge pipeline recipes/demo.yaml

test: install
	$(PY) -m pytest -q -ra --durations=15

test-fast: install
	$(PY) -m pytest -q -ra -m "not slow"

lint:
	$(PY) -m ruff check lmforge tests bench
	$(PY) -m ruff format --check lmforge tests bench

format:
	$(PY) -m ruff check --fix lmforge tests bench
	$(PY) -m ruff format lmforge tests bench

# docs/options.md from the config fields' help (tests/test_docs.py checks it is current).
docs:
	$(PY) scripts/gen_options.py
	$(PY) scripts/gen_modules.py

bench: install
	$(PY) bench/pretrain.py

# Record the installed set as the tested one (after a green `make test` with newer packages).
constraints:
	{ echo "# The dependency set the suite passed with; written by make constraints."; \
	  $(PIP) freeze --exclude-editable | grep -viE '^(torch|pip|setuptools|wheel)=='; } > $(CONSTRAINTS)

clean:
	rm -rf out build *.egg-info .pytest_cache
