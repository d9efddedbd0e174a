# dflbench: the README's commands. `make demo` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.dflbench-installed
PACKAGES := topology mixing aggregation pruning vision
PYPROJECTS := pyproject.toml $(foreach p,$(PACKAGES),packages/$(p)/pyproject.toml)
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
BENCH_ARGS ?=

.PHONY: setup test lint demo bench bench-compare clean

setup: $(STAMP)

$(STAMP): $(PYPROJECTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install $(TORCH_PINS)
	$(PY) -m pip install $(TORCH_PINS) $(foreach p,$(PACKAGES),-e packages/$(p)) -e ".[dev]"
	touch $(STAMP)

test: setup
	$(PY) -m pytest tests -q

lint: setup
	$(VENV)/bin/ruff check .

demo: setup
	$(VENV)/bin/dflbench demo

bench: setup
	mkdir -p .benchmarks
	$(PY) -m pytest bench -q --benchmark-json=.benchmarks/bench.json $(BENCH_ARGS)

bench-compare: setup
	$(PY) bench/compare.py .benchmarks

clean:
	rm -rf $(VENV) .benchmarks .pytest_cache
