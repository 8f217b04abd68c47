#!/usr/bin/env bash
# Provides the ONNX Runtime shared library the inference service loads (ort's load-dynamic mode)
# and prints its path. It comes from the official PyPI wheel, installed into a cache outside the
# repository keyed by version, so CI and later runs on the same machine reuse it.
set -euo pipefail
version="${ONNXRUNTIME_VERSION:-1.32.0}"
cache="${TRACEDPIPELINE_CACHE:-$HOME/.cache/tracedpipeline}/onnxruntime-$version"
lib="$(find "$cache" -name 'libonnxruntime.so*' -type f 2>/dev/null | head -n1 || true)"
if [[ -z "$lib" ]]; then
  echo "installing onnxruntime $version (PyPI wheel) into $cache" >&2
  rm -rf "$cache.tmp"
  python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$cache.tmp" "onnxruntime==$version" >&2
  rm -rf "$cache" && mv "$cache.tmp" "$cache"
  lib="$(find "$cache" -name 'libonnxruntime.so*' -type f | head -n1)"
fi
[[ -n "$lib" ]] || { echo "libonnxruntime.so not found in $cache" >&2; exit 1; }
echo "$lib"
