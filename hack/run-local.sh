#!/usr/bin/env bash
# Runs the four services as local processes, each configured by environment exactly as the
# operator configures its pod (only the host names differ: loopback instead of Services).
# Ctrl-C stops them all. Logs go to .run/<service>.log.
#
#   OTEL_EXPORTER_OTLP_ENDPOINT  where spans go (default http://127.0.0.1:4317, e.g. a local Jaeger)
#   OTEL_EXPORTER_OTLP_PROTOCOL  grpc (default) or http/protobuf
#   TARGET_DIR                   where the binaries are (default target/release)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${TARGET_DIR:-${CARGO_TARGET_DIR:-$root/target}/release}"
: "${ORT_DYLIB_PATH:?set ORT_DYLIB_PATH (make run-local does)}"
: "${MODELS_DIR:=$root/models}"
export OTEL_EXPORTER_OTLP_ENDPOINT="${OTEL_EXPORTER_OTLP_ENDPOINT:-http://127.0.0.1:4317}"
export OTEL_EXPORTER_OTLP_PROTOCOL="${OTEL_EXPORTER_OTLP_PROTOCOL:-grpc}"
export NODE_NAME="${NODE_NAME:-$(hostname)}" POD_NAMESPACE="${POD_NAMESPACE:-local}"
logs="$root/.run"
mkdir -p "$logs"
pids=()
stop() { kill -TERM "${pids[@]}" 2>/dev/null || true; wait; }
trap stop EXIT INT TERM

launch() { # name binary env...
  local name=$1 binary=$2; shift 2
  env POD_NAME="$name-local" "$@" "$bin/$binary" >"$logs/$name.log" 2>&1 &
  pids+=($!)
  echo "started $name (pid $!, log $logs/$name.log)"
}
launch mobilenetv2 inference MODEL=mobilenetv2 PORT=5012 MODELS_DIR="$MODELS_DIR" INTRA_OP_THREADS="${INTRA_OP_THREADS:-1}"
launch efficientnetb0 inference MODEL=efficientnetb0 PORT=5013 MODELS_DIR="$MODELS_DIR" INTRA_OP_THREADS="${INTRA_OP_THREADS:-1}"
launch ensemble ensemble PORT=5011 \
  ENSEMBLE_MODELS="mobilenetv2=http://127.0.0.1:5012/inference,efficientnetb0=http://127.0.0.1:5013/inference"
launch preprocessing preprocessing PORT=5010 ENSEMBLE_URL="http://127.0.0.1:5011/ensemble_service"

for port in 5012 5013 5011 5010; do
  for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$port/readyz" >/dev/null && break
    sleep 0.2
  done
  curl -fs "http://127.0.0.1:$port/readyz" >/dev/null || { echo "service on :$port is not ready; see $logs" >&2; exit 1; }
done
echo "pipeline ready: curl -F file=@../shared/images/parrot.jpg http://localhost:5010/preprocessing"
echo "spans go to $OTEL_EXPORTER_OTLP_ENDPOINT ($OTEL_EXPORTER_OTLP_PROTOCOL); Ctrl-C stops everything"
wait
