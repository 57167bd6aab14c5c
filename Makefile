# histoprompt: every target installs what it needs itself (see README).
SHELL := /bin/bash
.ONESHELL:
.SHELLFLAGS := -eu -o pipefail -c

UV_VERSION      ?= 0.13.9
HELM_VERSION    ?= v3.16.4
# MinIO tags no module releases: a pseudo-version the Go module proxy serves (2026-02-12).
MINIO_VERSION   ?= v0.0.0-20260212201848-7aac2a2c5b7c
# Outside the clone: a fresh clone (CI) reuses the built server instead of minutes of go build.
MINIO_PREFIX    ?= $(HOME)/.cache/histoprompt/minio
CACHE           ?= $(CURDIR)/.cache
export UV_LINK_MODE ?= hardlink
export PATH := $(HOME)/.local/bin:$(CACHE)/go/bin:$(PATH)
UV      := uv
PYTEST_ARGS ?=
DEMO_ARGS ?=
AUDIT_ARGS ?=

.PHONY: help install install-python install-kafka install-prometheus install-helm install-minio \
        test test-unit lint lint-check demo bench bench-models stack-up stack-down stack-status clean \
        fuzz gpu-check gpu-kit chaos soak audit

help:
	@echo "make demo    install everything, start the local stack, run the main job"
	@echo "make test    install everything and run the whole test suite"
	@echo "make lint    ruff + mypy"
	@echo "make bench   benchmarks (results in BENCHMARKS.md)"
	@echo "make chaos   faults on the local stack (results in RELIABILITY.md)"
	@echo "make soak    10-minute soak (RELIABILITY.md, Soak)"
	@echo "make fuzz    long fuzz run of the slide readers (FUZZ_CASES, FUZZ_SEED, FUZZ_SECONDS)"
	@echo "make audit   pip-audit of uv.lock (exit 3: advisory service unreachable)"

install: install-python install-kafka install-prometheus install-helm install-minio

install-python:
	@command -v uv >/dev/null 2>&1 || python3.11 -m pip install --user --quiet "uv==$(UV_VERSION)"
	$(UV) sync --all-packages --frozen --python 3.11 --extra h5ad

install-kafka:
	@bash deploy/install/kafka.sh "$(CACHE)/kafka"

install-prometheus:
	@bash deploy/install/prometheus.sh

install-helm:
	@bash deploy/install/helm.sh "$(HELM_VERSION)" "$(CACHE)/go"

install-minio:
	@bash deploy/install/minio.sh "$(MINIO_VERSION)" "$(MINIO_PREFIX)"

# Lint first: ruff on everything, strict mypy on core, wsi, serving and client.
test: install lint-check
	$(UV) run --frozen pytest $(PYTEST_ARGS)

test-unit: install-python
	$(UV) run --frozen pytest -m "not integration" $(PYTEST_ARGS)

lint: install-python lint-check

lint-check:
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen mypy core/src wsi/src serving/src client/src

# DEMO_ARGS=--once runs the demo steps and tears the stack down (for scripts and CI).
demo: install
	$(UV) run --frozen python -m histoprompt.stack.demo $(DEMO_ARGS)

# The same commands as `histoprompt stack up|down|status`; this entry point needs no CLI part.
stack-up: install
	$(UV) run --frozen python -m histoprompt.stack up

stack-down:
	$(UV) run --frozen python -m histoprompt.stack down

stack-status:
	$(UV) run --frozen python -m histoprompt.stack status

bench: install
	$(UV) run --frozen python -m tests.perf.run_all

# Opt-in long fuzz run of the slide readers: FUZZ_CASES mutated SYNTHETIC slides of run seed
# FUZZ_SEED (tests/unit/test_slide_fuzz.py; `make test` runs 3,000 of seed 17).
# Then atheris (coverage-guided, libFuzzer) for FUZZ_SECONDS where it installs; crashes are
# saved as $(CACHE)/fuzz/crash-*.
FUZZ_CASES ?= 100000
FUZZ_SEED ?= 1
FUZZ_SECONDS ?= 600
fuzz: install-python
	FUZZ_CASES=$(FUZZ_CASES) FUZZ_SEED=$(FUZZ_SEED) $(UV) run --frozen pytest \
		tests/unit/test_slide_fuzz.py -m fuzz -s $(PYTEST_ARGS)
	mkdir -p $(CACHE)/fuzz/corpus
	if $(UV) run --frozen --with atheris python -c "import atheris" 2>/dev/null; then \
		$(UV) run --frozen --with atheris python tests/fuzz/atheris_slides.py \
			$(CACHE)/fuzz/corpus -max_total_time=$(FUZZ_SECONDS) -timeout=10 \
			-rss_limit_mb=2048 -artifact_prefix=$(CACHE)/fuzz/; \
	else echo "atheris does not install here: the seeded run above is the fuzz run"; fi

bench-models: install
	$(UV) run --frozen python -m tests.perf.bench_models

# All six chaos faults on 20 SYNTHETIC slides each (tens of minutes), then RELIABILITY.md's
# table from the figures they wrote. `make test` runs only the bounded `chaos` subset.
CHAOS_SLIDES ?= 20
chaos: install
	rm -rf "$(CACHE)/chaos"
	status=0
	CHAOS_SLIDES=$(CHAOS_SLIDES) CHAOS_RESULTS_DIR="$(CACHE)/chaos" $(UV) run --frozen pytest -m chaos \
	  tests/integration/test_chaos.py tests/integration/test_stack_services.py -s $(PYTEST_ARGS) || status=$$?
	$(UV) run --frozen python -m tests.perf.reliability_report --results "$(CACHE)/chaos"
	exit $$status

# Opt-in soak, at most 10 minutes (SOAK_SECONDS=120 for a dry run); RELIABILITY.md's Soak section.
SOAK_SECONDS ?= 600
soak: install
	rm -rf "$(CACHE)/soak"
	SOAK_SECONDS=$(SOAK_SECONDS) CHAOS_RESULTS_DIR="$(CACHE)/soak" $(UV) run --frozen pytest -m soak \
	  tests/integration/test_soak.py -s $(PYTEST_ARGS)
	$(UV) run --frozen python -m tests.perf.reliability_report --results "$(CACHE)/soak"

# On a GPU machine (no network, no uv needed): GPU_PY is the Python with torch, timm and CuPy;
# what it lacks comes from .gpu-kit/ (`make gpu-kit` here). GPU_CHECK_ARGS=--cpu: dry mode.
# Then `python -m tests.perf.gpu_check_render` writes BENCHMARKS.md's GPU check section.
GPU_PY ?= python3
GPU_CHECK_ARGS ?=
gpu-check:
	GPU_PY=$(GPU_PY) bash deploy/gpu_check.sh $(GPU_CHECK_ARGS)

gpu-kit: install-python
	$(UV) run --frozen --with pip python -m tests.perf.gpu_kit

# pip-audit over the locked dependencies; exit 0 clean, 1 vulnerable, 2 failed, 3 the advisory
# service unreachable (checked first, with a timeout: offline it says so in a second).
audit: install-python
	$(UV) run --frozen python deploy/audit/audit.py $(AUDIT_ARGS)

clean:
	rm -rf .stack stack.env
