# Two commands do all set-up on a fresh machine:
#   make demo   - create .venv, install everything, run a simulated agile-modeling session
#   make test   - create .venv, install everything, run the whole test suite
#   make up     - Label Studio + ML backend + worker on this machine, with a demo concept (make down stops them)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Label Studio pins its dependencies strictly: it gets a virtual environment of its own.
LS_VENV ?= .venv-label-studio
export AGILE_LABEL_STUDIO_VENV := $(abspath $(LS_VENV))

.PHONY: demo up down test test-fast lint bench clean label-studio redis browser

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $@

$(LS_VENV)/.installed:
	$(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/python -m pip install --quiet --disable-pip-version-check label-studio==1.23.2
	touch $@

label-studio: $(LS_VENV)/.installed

# Redis from Debian's packages: the tests start their own server on a free port (distributed workers)
redis:
	@command -v redis-server >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }

# Chromium and its driver from Debian's packages: a test rates in Label Studio's own UI (headless)
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }

demo: $(VENV)/.installed
	$(BIN)/agile simulate

up: $(VENV)/.installed $(LS_VENV)/.installed
	$(BIN)/agile up

down: $(VENV)/.installed
	$(BIN)/agile down

# static checks: ruff (lint + format) on everything, mypy (strict on the core engine agile_modeling/)
lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: $(VENV)/.installed $(LS_VENV)/.installed redis browser lint
	$(BIN)/python -m pytest -q

test-fast: $(VENV)/.installed
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/bench_pool.py

clean:
	rm -rf $(VENV) $(LS_VENV) agile-workspace
