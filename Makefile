# Two commands on a fresh machine (see README): `make demo` and `make test`.
# Every target installs what it needs first and is safe to run again.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
# The CPU build of torch comes from a local wheel; an unpinned torch would pull the CUDA build.
TORCH := torch==2.13.0

.PHONY: install install-dev demo figures test test-slow study

install:
	$(PIP) install -e .

## Tests need the trainer's dependencies (torch first, see TORCH).
install-dev:
	$(PIP) install $(TORCH)
	$(PIP) install -e ".[dev,trainer]"

## The main job: the claims check on embedded defaults, then the figures from its record.
demo: install
	$(PYTHON) -m simulators
	$(PYTHON) -m figures

figures:
	$(PYTHON) -m figures

## The default test suite (what CI runs).
test: install-dev
	$(PYTHON) -m pytest -n auto

## Long Monte-Carlo checks (`--full` grids), kept out of the default suite.
test-slow: install-dev
	$(PYTHON) -m pytest -n auto -m slow

## The small-scale RL study at full size (about 45 minutes on 2 cores; resumable), then its figures.
study: install-dev
	$(PYTHON) -m rl_study --out records
	$(PYTHON) -m figures --records records --out records/figures
