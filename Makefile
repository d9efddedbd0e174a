# dflbench: the README's commands. `make demo` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.dflbench-installed
PACKAGES := topology mixing aggregation pruning vision
PYPROJECTS := pyproject.toml $(foreach p,$(PACKAGES),packages/$(p)/pyproject.toml)
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
BENCH_ARGS ?=
# bench-peers: issue 17's comparison with Flower, pfl and FLGo in their own venv (bench/peers/README.md)
PEERS_VENV := bench/peers/.venv
PEERS_STAMP := $(PEERS_VENV)/.peers-installed
PEERS_PINS := "flwr[simulation]==1.42.0" pfl==0.6.0 flgo==0.4.4
PEERS_ARGS ?= --clients 100 --clients-per-round 10 --rounds 30 --repeats 3

.PHONY: setup test lint demo bench bench-compare bench-inject bench-calibrate bench-peers clean

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

# issue 29: each method's own code slowed 1.5x must fail a named benchmark (bench/inject.py, a few minutes)
bench-inject: setup
	$(PY) bench/inject.py

# CI's bench step run 3 times idle, beside a CPU-heavy and beside a memory-heavy process (about half an hour)
bench-calibrate: setup
	$(PY) bench/calibrate.py

bench-peers: setup $(PEERS_STAMP)
	$(PY) bench/peers/harness.py $(PEERS_ARGS)

$(PEERS_STAMP): Makefile
	test -x $(PEERS_VENV)/bin/python || $(PY) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install -q $(TORCH_PINS)
	$(PEERS_VENV)/bin/python -m pip install -q $(TORCH_PINS) $(PEERS_PINS)
	touch $(PEERS_STAMP)

clean:
	rm -rf $(VENV) $(PEERS_VENV) bench/peers/work .benchmarks .pytest_cache
