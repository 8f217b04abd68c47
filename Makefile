# TracedPipeline developer entry points. `make help` lists them.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
export MODELS_DIR ?= $(CURDIR)/models
CARGO ?= cargo

.PHONY: help models onnxruntime build test lint run-local bench

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

models: ## copy (or download) the ONNX models into $(MODELS_DIR), checking sha256
	hack/fetch-models.sh

onnxruntime: ## install the ONNX Runtime shared library (PyPI wheel) into ~/.cache/tracedpipeline
	hack/onnxruntime.sh

build: ## build every binary
	$(CARGO) build --workspace --bins --locked

test: models ## run every test: unit, handler, and the four services as processes with the real models
	export ORT_DYLIB_PATH="$$(hack/onnxruntime.sh)"; \
	$(CARGO) build --workspace --bins --locked; \
	$(CARGO) test --workspace --locked

lint: ## formatting and clippy, warnings are errors
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

run-local: models ## run the four services as local processes, wired like the operator's pods
	export ORT_DYLIB_PATH="$$(hack/onnxruntime.sh)"; \
	$(CARGO) build --workspace --bins --release --locked; \
	hack/run-local.sh

bench: models ## measure latency and throughput (see BENCHMARKS.md)
	export ORT_DYLIB_PATH="$$(hack/onnxruntime.sh)"; \
	$(CARGO) build --workspace --bins --release --locked; \
	hack/bench.sh
