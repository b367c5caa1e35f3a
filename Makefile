# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# Both create .venv on first use with torch's CPU build (torch==2.13.0; a bare `torch` pulls CUDA).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

BENCH_STAMP := $(VENV)/.bench-installed

# The ends of the supported range (README "Supported versions"), each in a venv of its own, built from the
# registry (CUDA builds of torch, which run on a CPU): the lowest torch with the lowest transformers, and
# the highest torch with the highest transformers.
COMPAT_LOW := .venv-torch2.11
COMPAT_LOW_PINS := torch==2.11.0 transformers==5.17.0
COMPAT_HIGH := .venv-torch2.14
COMPAT_HIGH_PINS := torch==2.14.1 transformers==5.23.0

# extra pytest arguments, e.g. PYTEST_ARGS=--durations=20 (CI) or PYTEST_ARGS=-x
PYTEST_ARGS ?=
# the suites run in TEST_JOBS processes (pytest-xdist; one torch thread each), a test file per process at a time
# so that module-scoped compiled models are compiled once: most of a test's time is Dynamo tracing, which is
# single-threaded, so two processes on two cores take about half the time of one
TEST_JOBS ?= 2
PYTEST = -m pytest -q -n $(TEST_JOBS) --dist loadfile $(PYTEST_ARGS)

.PHONY: demo test test-slow test-fuzz test-all test-compat compat-venvs venv bench gpu-check

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m seats_fx demo

test: $(STAMP)
	$(PY) $(PYTEST) -m "not slow"

# slow cases are long one by one (a 200-example search is one test): spread them test by test
test-slow: $(STAMP)
	$(PY) $(PYTEST) --dist load -m "slow and not fuzz"

# one hypothesis test per shard of model shapes: spread over the processes test by test, not file by file
test-fuzz: $(STAMP)
	$(PY) $(PYTEST) --dist load -m fuzz

test-all: $(STAMP)
	$(PY) $(PYTEST)

$(COMPAT_LOW)/.installed: pyproject.toml
	$(PYTHON) -m venv $(COMPAT_LOW)
	$(COMPAT_LOW)/bin/python -m pip install -q $(COMPAT_LOW_PINS)
	$(COMPAT_LOW)/bin/python -m pip install -q -e '.[smoke]'
	touch $@

$(COMPAT_HIGH)/.installed: pyproject.toml
	$(PYTHON) -m venv $(COMPAT_HIGH)
	$(COMPAT_HIGH)/bin/python -m pip install -q $(COMPAT_HIGH_PINS)
	$(COMPAT_HIGH)/bin/python -m pip install -q -e '.[smoke]'
	touch $@

compat-venvs: $(COMPAT_LOW)/.installed $(COMPAT_HIGH)/.installed

# the smoke subset (tests marked `compat`: locate, the backend with and without Inductor, generate, batch,
# Qwen3-Omni, a reliability case) under both ends of the range
test-compat: compat-venvs
	$(COMPAT_LOW)/bin/python $(PYTEST) -m compat
	$(COMPAT_HIGH)/bin/python $(PYTEST) -m compat

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[test,bench]'
	touch $(BENCH_STAMP)

# FLOPs, prefill timings, fidelity proxy -> bench/results/ (report.md, report.json, PNG plots)
bench: $(BENCH_STAMP)
	$(PY) -m bench.report

# On a lent GPU machine (the stock CUDA image: its own python with torch 2.11 and transformers), not .venv:
# a 7B-shaped thinker, 60 s clip, eager / Inductor / seats / reference -> bench/results/gpu_check.json
gpu-check:
	$(PYTHON) -m bench.gpu_check --json bench/results/gpu_check.json
