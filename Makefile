# TracedPipeline developer entry points. `make help` lists them.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
export MODELS_DIR ?= $(CURDIR)/models
IMAGE_TAG ?= 0.1.0
IMAGES := preprocessing ensemble inference loadgen
CARGO ?= cargo

.PHONY: help models onnxruntime build test lint generate check-generated run-local bench images kind-load

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

CRD_FILE := crds/tracedpipelines.tracing.tracedpipeline.dev.yaml

generate: ## regenerate the CRD YAML and the operator's golden render files from the Rust types
	$(CARGO) run -q --locked -p tracedpipeline-operator -- crd > $(CRD_FILE)
	UPDATE_GOLDEN=1 $(CARGO) test -q --locked -p tracedpipeline-operator --test golden

check-generated: generate ## fail when generated files differ from what is committed
	@git diff --exit-code -- crds/ operator/tests/golden/ || { echo "generated files are stale: run 'make generate' and commit" >&2; exit 1; }

run-local: models ## run the four services as local processes, wired like the operator's pods
	export ORT_DYLIB_PATH="$$(hack/onnxruntime.sh)"; \
	$(CARGO) build --workspace --bins --release --locked; \
	hack/run-local.sh

bench: models ## measure latency and throughput (see BENCHMARKS.md)
	export ORT_DYLIB_PATH="$$(hack/onnxruntime.sh)"; \
	$(CARGO) build --workspace --bins --release --locked; \
	hack/bench.sh

images: ## build the service images tracedpipeline/<service>:$(IMAGE_TAG) (needs a Docker engine)
	@[[ "$(MODELS_DIR)" == "$(CURDIR)/models" ]] || { echo "the inference image copies ./models; unset MODELS_DIR" >&2; exit 1; }
	$(MAKE) models
	for image in $(IMAGES); do \
	  docker build -f workloads/docker/Dockerfile --target $$image -t tracedpipeline/$$image:$(IMAGE_TAG) .; \
	done

kind-load: images ## load the service images into the kind cluster
	for image in $(IMAGES); do kind load docker-image tracedpipeline/$$image:$(IMAGE_TAG); done
