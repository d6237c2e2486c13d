# The study in two commands:  `make all` (the full study -> reports/)  and  `make test`.
# Every target builds its own virtual environment from requirements.txt first.

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
# FORCE=1: recompute everything (notebooks, cached features and embeddings, fine-tuning folds);
# add KEEP_FOLDS=1 to keep finished fine-tuning folds (the expensive part).
FORCE_FLAG := $(if $(FORCE),--force,) $(if $(KEEP_FOLDS),--keep-folds,)

.PHONY: all smoke test lint lab bench clean $(VENV)

## .venv: the virtual environment (rebuilt when requirements.txt or pyproject.toml change)
$(VENV): $(INSTALLED)

# A connection cut in the middle of a wheel is not always mended by pip's own resumes (CI once saw a 94 MB weight
# wheel stop at 41 MB, and later a 55 MB pyarrow wheel stop at 33.6 MB three times in a minute, every resume getting
# nothing more): each download step is tried again from the start, waiting longer each time (15, 30, 60, 120 s: about
# four minutes in all, so that an outage of a few minutes passes). Wheels already fetched come from pip's cache.
INSTALL_WAITS ?= 15 30 60 120
define retried
@for wait in $(INSTALL_WAITS) last; do \
	echo '$(1)'; $(1) && exit 0; \
	test $$wait = last || { echo "install step failed: trying again in $$wait s" >&2; sleep $$wait; }; \
done; echo "install step failed $(words $(INSTALL_WAITS) last) times: is the package index reachable?" >&2; exit 1
endef
PIP_INSTALL := $(PY) -m pip install --quiet --retries 10 --timeout 60

$(INSTALLED): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(call retried,$(PIP_INSTALL) pip==26.3)
	$(call retried,$(PIP_INSTALL) --resume-retries 10 -r requirements.txt)
	$(PIP_INSTALL) --no-deps -e .
	@touch $@

## all: run the full study (download or RAVDESS_DIR, every notebook, HTML into reports/)
all: $(INSTALLED)
	$(PY) -m ser_utils pipeline --profile full $(FORCE_FLAG)

## smoke: the same pipeline on generated data and a tiny model, offline (build/smoke-reports/)
smoke: $(INSTALLED)
	$(PY) -m ser_utils pipeline --profile smoke $(FORCE_FLAG)

## test: ruff, the unit tests, and every notebook on the smoke profile through nbval, on one pytest-xdist
## worker per core (the notebooks in order on one of them: conftest.py); one torch/OpenMP thread per
## worker: the tests' models are tiny, and on a busy machine spinning threads made the torch tests 10x slower
test: $(INSTALLED) lint
	SER_PROFILE=smoke OMP_NUM_THREADS=1 $(PY) -m pytest notebooks tests --nbval-lax -p no:cacheprovider \
		-n auto

lint: $(INSTALLED)
	$(PY) -m ruff check ser_utils tests benchmarks notebooks conftest.py

## lab: open the notebooks in JupyterLab
lab: $(INSTALLED)
	$(PY) -m jupyter lab notebooks/

## bench: the speed benchmarks (ratios against a baseline measured in the same run)
bench: $(INSTALLED)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

## clean: remove caches, smoke output and executed notebooks (keeps .venv and reports/)
clean:
	rm -rf .cache build .pytest_cache .ruff_cache
