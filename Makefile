# minimost: two commands for a new user (README "Quick start").
#   make demo   set everything up, then run the tiny pipeline end to end
#   make test   set everything up, then run the test suite (what CI runs)
# Uses the active virtual environment (venv or conda) if there is one; otherwise creates .venv here.
# The install is redone only when pyproject.toml changes (a stamp file in the environment).

SHELL := /bin/bash

ifdef VIRTUAL_ENV
  ENV_DIR := $(VIRTUAL_ENV)
else ifneq ($(and $(CONDA_PREFIX),$(filter-out base,$(CONDA_DEFAULT_ENV))),)
  ENV_DIR := $(CONDA_PREFIX)
else
  ENV_DIR := $(CURDIR)/.venv
endif

# First interpreter on PATH in the supported range (3.10-3.12); override with `make PYTHON=python3.11`.
PYTHON ?= $(shell for p in python3 python3.12 python3.11 python3.10; do \
	$$p -c 'import sys; sys.exit(not (3, 10) <= sys.version_info[:2] <= (3, 12))' >/dev/null 2>&1 && { echo $$p; break; }; done)
PY := $(ENV_DIR)/bin/python
STAMP := $(ENV_DIR)/.minimost-installed
PRESET ?= tiny
# The stage settings of the README's published run: MoST's mixtures plus a speech-only LM task, text-LM
# in stage 2, and a longer stage 1 (docs/evaluation.md, "What the tiny run reaches").
# `make demo RUN_SETS=` runs MoST's own mixtures and the preset's steps.
RUN_SETS ?= --set posttrain.steps=1000 --set posttrain.mixture=asr=0.35,tts=0.3,text_lm=0.15,speech_lm=0.2 \
            --set instruct.mixture=speech_instruct=0.3,text_instruct=0.3,asr=0.1,tts=0.1,text_lm=0.1,speech_lm=0.1
PYTEST_ARGS ?=

.PHONY: demo test setup check-env lint bench clean-env help

help:
	@echo "make demo       set up, then: python -m minimost run --preset $(PRESET) (+ RUN_SETS)"
	@echo "make test       set up, then run the tests and the notebooks (CI runs this)"
	@echo "make check-env  set up, then check dependencies, device and espeak-ng"
	@echo "make lint       ruff"
	@echo "environment: $(ENV_DIR)"

$(PY):
	@if [ -z "$(PYTHON)" ]; then echo "error: no Python 3.10-3.12 found on PATH; install one or pass PYTHON=/path/to/python3.11"; exit 1; fi
	@echo "creating a virtual environment in $(ENV_DIR) with $(PYTHON)"
	$(PYTHON) -m venv $(ENV_DIR)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[dev]"
	@touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(PY) -m minimost run --preset $(PRESET) $(RUN_SETS)

# pytest exits 5 when it collects nothing: that is a broken suite, so it fails loudly here.
test: $(STAMP)
	@set +e; $(PY) -m pytest --nbval-lax --nbval-current-env tests $(wildcard notebooks/*.ipynb) $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests (exit 5): the suite is broken"; fi; exit $$rc

check-env: $(STAMP)
	$(PY) -m minimost check-env

lint: $(STAMP)
	$(PY) -m ruff check .

bench: $(STAMP)
	$(PY) -m minimost bench

clean-env:
	rm -rf $(CURDIR)/.venv
