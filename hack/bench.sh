#!/usr/bin/env bash
# Runs the benchmark harness (e2e/src/bin/bench.rs) on release binaries with the real models and
# prints Markdown tables for BENCHMARKS.md. Needs ORT_DYLIB_PATH, MODELS_DIR, JAEGER_BIN and
# OTELCOL_BIN (make bench sets them).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
cargo build --release --locked -p tp-e2e --bin bench
"${CARGO_TARGET_DIR:-$root/target}/release/bench"
