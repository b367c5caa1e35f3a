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

.PHONY: demo test test-slow test-fuzz test-all test-compat test-compat-low test-compat-high compat-venvs venv bench \
	gpu-check kernel-check

# An editable install writes the source tree's egg-info: under flock (where there is one), so that the venvs
# can be built at the same time (CI builds the compat venvs beside .venv). The lock is pyproject.toml, the file
# each install reads and a clean clone already has (flock only opens it)
EDITABLE_LOCK := $(shell command -v flock >/dev/null 2>&1 && echo flock pyproject.toml)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(EDITABLE_LOCK) $(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m seats_fx demo

test: $(STAMP)
	$(PY) $(PYTEST) -m "not slow"

# slow cases are long one by one (a 200-example search is one test): spread them test by test, but the cases
# of one xdist_group (they share compiled models) in one process. CI passes SLOW_MARKS="slow and not fuzz and
# not compat and not extended": its compat tier runs the slow cases of the smoke subset under the ends of the
# range instead, and the extended cases (EXTENDED in tests/conftest.py) only vary a case CI runs
SLOW_MARKS ?= slow and not fuzz
test-slow: $(STAMP)
	$(PY) $(PYTEST) --dist loadgroup -m "$(SLOW_MARKS)"

# one hypothesis test per shard of model shapes: spread over the processes test by test, not file by file
test-fuzz: $(STAMP)
	$(PY) $(PYTEST) --dist load -m fuzz

test-all: $(STAMP)
	$(PY) $(PYTEST)

# --no-compile: CI builds these beside .venv and make test, and byte-compiling every module of a CUDA build
# takes CPU from them; the few modules the smoke subset imports are compiled on first import
$(COMPAT_LOW)/.installed: pyproject.toml
	$(PYTHON) -m venv $(COMPAT_LOW)
	$(COMPAT_LOW)/bin/python -m pip install -q --no-compile $(COMPAT_LOW_PINS)
	$(EDITABLE_LOCK) $(COMPAT_LOW)/bin/python -m pip install -q -e '.[smoke]'
	touch $@

$(COMPAT_HIGH)/.installed: pyproject.toml
	$(PYTHON) -m venv $(COMPAT_HIGH)
	$(COMPAT_HIGH)/bin/python -m pip install -q --no-compile $(COMPAT_HIGH_PINS)
	$(EDITABLE_LOCK) $(COMPAT_HIGH)/bin/python -m pip install -q -e '.[smoke]'
	touch $@

compat-venvs: $(COMPAT_LOW)/.installed $(COMPAT_HIGH)/.installed

# Under both ends of the range, side by side (make -j2; each venv's output printed whole when it ends), one
# pytest process each: the smoke subset (tests marked `compat`: locate, the backend with and without Inductor,
# generate, batch, Qwen3-Omni, the missing-metadata refusal) and one shard of the 200-example pipeline fuzz, so the
# fuzz's 200 cases run under the lowest and the highest supported torch (make test-fuzz: both shards under
# .venv). The headline Inductor case runs under the lowest end (the stock CUDA image's torch), a cheaper
# Inductor case (one option set, one clip structure) under the highest. Qwen3-Omni's generate() with Inductor
# (about 3.5 min in CI) runs under the lowest end only: the C++ code-generation bug it guards is torch 2.11's.
COMPAT_PYTEST = -m pytest -q -p no:xdist $(PYTEST_ARGS) -m "compat or fuzz"
HEADLINE_INDUCTOR := tests/e2e/test_headline_usage.py::test_bare_torch_compile_with_inductor_prunes_like_the_reference
BACKEND_INDUCTOR := tests/e2e/test_backend.py::test_kept_indices_and_logits_match_reference_with_inductor[no-stage3]
QWEN3_GENERATE_INDUCTOR := tests/e2e/test_layer_graphs.py::test_model_compile_then_generate_prunes_qwen3_like_the_reference[inductor]
FUZZ_SHARD = tests/e2e/test_reliability.py::test_pipeline_fuzz[$(1)]

test-compat: compat-venvs
	$(MAKE) -j2 --output-sync=target test-compat-low test-compat-high

test-compat-low: $(COMPAT_LOW)/.installed
	$(COMPAT_LOW)/bin/python $(COMPAT_PYTEST) --deselect '$(BACKEND_INDUCTOR)' --deselect '$(call FUZZ_SHARD,4)'

test-compat-high: $(COMPAT_HIGH)/.installed
	$(COMPAT_HIGH)/bin/python $(COMPAT_PYTEST) --deselect '$(HEADLINE_INDUCTOR)' --deselect '$(QWEN3_GENERATE_INDUCTOR)' \
		--deselect '$(call FUZZ_SHARD,2)'

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[test,bench]'
	touch $(BENCH_STAMP)

# FLOPs, prefill timings, fidelity proxy -> bench/results/ (report.md, report.json, PNG plots)
bench: $(BENCH_STAMP)
	$(PY) -m bench.report

# On a lent GPU machine (the stock CUDA image: its own python with torch 2.11 and transformers), not .venv:
# a 7B-shaped thinker, 60 s clip, eager / Inductor / seats / reference -> bench/results/gpu_check.json, on the
# GPU image's own python and packages, from a checkout that is not installed: seats_fx.passes lives in passes/
# (pyproject's package-dir), so a link (git-ignored) stands in for the install there
gpu-check:
	test -e seats_fx/passes || ln -s ../passes seats_fx/passes
	$(PYTHON) -m bench.gpu_check --json bench/results/gpu_check.json

# the Triton kernels compiled for the GPU against their torch implementations, and their times (~1 minute)
kernel-check:
	test -e seats_fx/passes || ln -s ../passes seats_fx/passes
	$(PYTHON) -m bench.kernel_check --json bench/results/kernel_check.json
