# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# Both create .venv on first use with torch's CPU build (torch==2.13.0; a bare `torch` pulls CUDA).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

BENCH_STAMP := $(VENV)/.bench-installed

.PHONY: demo test test-slow test-fuzz test-all bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m seats_fx demo

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

test-slow: $(STAMP)
	$(PY) -m pytest -q -m "slow and not fuzz"

test-fuzz: $(STAMP)
	$(PY) -m pytest -q -m fuzz

test-all: $(STAMP)
	$(PY) -m pytest -q

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[test,bench]'
	touch $(BENCH_STAMP)

# FLOPs, prefill timings, fidelity proxy -> bench/results/ (report.md, report.json, PNG plots)
bench: $(BENCH_STAMP)
	$(PY) -m bench.report
