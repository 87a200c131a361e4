# Set-up and common commands. Every target creates .venv (Python 3.11) on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: train test test-fast lint format bench clean-runs

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --no-cache-dir --upgrade-strategy only-if-needed -r requirements.txt
	$(PY) -m pip install --quiet --no-cache-dir --no-deps --no-build-isolation -e .
	@touch $(STAMP)

## train: the default experiment (GM-SOP / iSQRT-COV on digits); ARGS="key=value ..." to override
train: $(STAMP)
	$(PY) -m gmsop.train experiment=default $(ARGS)

## test: the whole test suite (what CI runs), one test process per core, at most 4 (pytest-xdist; each
##       CLI run it starts peaks at about 1.1 GB resident)
test: $(STAMP)
	$(PY) -m pytest -q -n auto --maxprocesses 4 --dist worksteal $(ARGS)

## lint: ruff's lint rules and format check (configured in pyproject.toml; CI runs it first)
lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m ruff format --check src tests benchmarks

## format: apply ruff's fixes and formatting
format: $(STAMP)
	$(PY) -m ruff check --fix src tests benchmarks
	$(PY) -m ruff format src tests benchmarks

## test-fast: skip the end-to-end CLI runs
test-fast: $(STAMP)
	$(PY) -m pytest -q -n auto --maxprocesses 4 --dist worksteal -m "not slow" $(ARGS)

## bench: the benchmark suite: timings, memory and ratios (a)-(g) (JSON under benchmarks/results/)
bench: $(STAMP)
	$(PY) benchmarks/suite.py $(ARGS)

clean-runs:
	rm -rf runs
