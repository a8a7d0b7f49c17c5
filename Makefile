# Two entry points (see README): `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
# The known-good pair for open_clip (torchvision is required by it). Installed first and alone so
# that resolving the package never pulls a second multi-GB torch build. Override for other platforms,
# e.g. `make test TORCH_SPEC="torch torchvision"`.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PIP := $(PY) -m pip install --disable-pip-version-check --progress-bar off

.PHONY: demo test lint docs bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.torch: | $(PY)
	$(PY) -c "import torch, torchvision" 2>/dev/null || $(PIP) $(TORCH_SPEC)
	touch $@

$(VENV)/.omiclip: pyproject.toml $(VENV)/.torch
	$(PIP) -e ".[test]"
	touch $@

$(VENV)/.doc: pyproject.toml $(VENV)/.omiclip
	$(PIP) -e ".[test,doc]"
	touch $@

demo: $(VENV)/.omiclip
	$(PY) -m omiclip demo

test: $(VENV)/.omiclip
	$(PY) -m pytest

lint: $(VENV)/.omiclip
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

docs: $(VENV)/.doc
	$(VENV)/bin/sphinx-build -W -b html docs docs/_build/html

bench: $(VENV)/.omiclip
	$(PY) benchmarks/gene_sentences.py

clean:
	rm -rf $(VENV) docs/_build docs/generated benchmarks/results omiclip_demo
