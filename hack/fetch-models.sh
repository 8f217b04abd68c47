#!/usr/bin/env bash
# Puts the two ONNX classifiers into $MODELS_DIR (default ./models), checking their sha256.
# Source: a local directory when given (MODELS_SOURCE, or ../shared/models beside the checkout,
# which these machines and CI have), otherwise the pinned download URLs below.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="${MODELS_DIR:-$root/models}"
source_dir="${MODELS_SOURCE:-$root/../shared/models}"
# file  sha256  url (used only when no local source has the file)
models=(
  "mobilenetv2.onnx cff044f891927f4803c9aec673144315b2f0f9961c816bf2406ee87528ffb77a ${MOBILENETV2_URL:-}"
  "efficientnet_lite0.onnx f5cb22bf97f6b6e1bdf9e6967a0b59df608a015244eaedf9ef9b0eea29f667fd ${EFFICIENTNET_URL:-}"
)
mkdir -p "$dest"
for entry in "${models[@]}"; do
  read -r file sum url <<<"$entry"
  target="$dest/$file"
  if [[ -f "$target" ]] && echo "$sum  $target" | sha256sum --check --status; then
    continue
  fi
  if [[ -f "$source_dir/$file" ]]; then
    cp "$source_dir/$file" "$target.part" && chmod 0644 "$target.part"
  elif [[ -n "$url" ]]; then
    echo "downloading $file from $url" >&2
    curl --fail --location --silent --show-error --output "$target.part" "$url"
  else
    echo "no source for $file: set MODELS_SOURCE to a directory holding it, or the download URL" \
      "(MOBILENETV2_URL / EFFICIENTNET_URL); see README 'Models'" >&2
    exit 1
  fi
  if ! echo "$sum  $target.part" | sha256sum --check --status; then
    echo "checksum mismatch for $file (expected $sum)" >&2
    rm -f "$target.part"
    exit 1
  fi
  mv "$target.part" "$target"
  echo "model $file ready in $dest" >&2
done
