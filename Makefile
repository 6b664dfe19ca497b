# The two commands of the README. Each installs what is missing first (scripts/setup.sh).
VENV ?= .venv
export MUJOCO_GL ?= egl
ARGS ?=

.PHONY: train test setup bench docs clean

setup:
	@bash scripts/setup.sh

## Train the embedded default: DrQ-v2 on dmc/cartpole-swingup (CPU: the cpu-fast preset, ~15 min; GPU: the paper preset).
train: setup
	$(VENV)/bin/pixelrl train $(ARGS)

## Run the test suite: test files spread over WORKERS processes (pytest-xdist; default: the CPU count, at most 4;
## WORKERS=0 runs them all in this process).
WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); [ $$n -gt 4 ] && n=4; echo $$n)
test: setup
	$(VENV)/bin/python -m pytest -q -n $(WORKERS) --dist loadfile $(ARGS)

## Run the CPU benchmarks (each prints its measurement and writes benchmarks/results/).
bench: setup
	$(VENV)/bin/python benchmarks/replay_memory.py
	$(VENV)/bin/python benchmarks/env_throughput.py
	$(VENV)/bin/python benchmarks/update_throughput.py

## Build the documentation site into site/ (API pages regenerated from the docstrings; --strict: a broken link,
## anchor or code reference fails the build).
docs: setup
	@test -x $(VENV)/bin/mkdocs || { echo "make docs: no mkdocs in $(VENV): the docs extra is not installed; add docs to PIXELRL_EXTRAS (or unset it) and run make docs again"; exit 1; }
	$(VENV)/bin/python scripts/docs_api.py
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

clean:
	rm -rf $(VENV) build dist site *.egg-info src/*.egg-info
