#!/usr/bin/env bash
# Pinned developer/CI tools, built from their Go modules and cached outside the repo.
#
#   hack/tools.sh helm            # builds helm once, prints the path of the binary
#   "$(hack/tools.sh helm)" lint charts/tracedpipeline-operator
#   hack/tools.sh --list          # name, version and Go package of every tool
#
# Binaries live in ${TRACEDPIPELINE_CACHE:-~/.cache/tracedpipeline}/tools/<name>-<version>/<name>,
# keyed by name and version, so CI and later sessions on the same machine reuse them and a version
# bump builds a new one next to the old. Nothing is downloaded but Go modules (through GOPROXY);
# builds are reproducible: -trimpath, CGO_ENABLED=0, the module's own go.sum.
# Progress goes to stderr; stdout is only the binary path, so `$(hack/tools.sh NAME)` works.
# The cache key is name+version only: after changing how a tool is built (its build_<name> flags)
# without a version bump, delete its cache directory so it is rebuilt.
set -euo pipefail

# --- Pinned versions: the one place to change them -----------------------------------------------
# name     version    Go package to `go install` (the module version is the one on the left)
# To add a tool: one line here. Tools that need more than `go install pkg@version` (e.g. an
# OpenTelemetry Collector from an ocb manifest, Kubernetes components from a module with replaces)
# get a `build_<name>` function below, called instead of the generic build.
TOOLS=(
  "helm      v3.22.0    helm.sh/helm/v3/cmd/helm"
  # Shape of the next ones (pick and check the versions when adding them):
  # "kubeconform vX.Y.Z  github.com/yannh/kubeconform/cmd/kubeconform"
  # "jaeger      vX.Y.Z  github.com/jaegertracing/jaeger/cmd/jaeger"
)
# -------------------------------------------------------------------------------------------------

cache="${TRACEDPIPELINE_CACHE:-$HOME/.cache/tracedpipeline}/tools"

log() { echo "tools.sh: $*" >&2; }
die() { log "$*"; exit 1; }

usage() {
  echo "usage: hack/tools.sh <tool> | --list" >&2
  echo "tools: $(for t in "${TOOLS[@]}"; do read -r n _ <<<"$t"; printf '%s ' "$n"; done)" >&2
  exit 2
}

# lookup NAME -> sets version and pkg; fails for an unknown tool
lookup() {
  local entry n v p
  for entry in "${TOOLS[@]}"; do
    read -r n v p <<<"$entry"
    if [[ "$n" == "$1" ]]; then version="$v" pkg="$p"; return 0; fi
  done
  die "unknown tool '$1' (known: $(for t in "${TOOLS[@]}"; do read -r n _ <<<"$t"; printf '%s ' "$n"; done))"
}

# Generic build: `go install pkg@version` into an empty GOBIN; $5 (optional) is -ldflags.
build_generic() { # name version pkg gobin [ldflags]
  GOBIN="$4" GOFLAGS=-trimpath CGO_ENABLED=0 GOWORK=off \
    go install -ldflags "${5:-}" "$3@$2" >&2
}

# go.mod of a module version, read from the module cache (downloads it through GOPROXY).
module_gomod() { # module version
  GOFLAGS= GOWORK=off go mod download -json "$1@$2" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p'
}

# helm: the release's ldflags (helm's Makefile). Without them `helm version` says "v3.22" and
# `.Capabilities.KubeVersion` / the lint deprecation check default to Kubernetes 1.20; the release
# sets both to 1.<minor of the k8s.io/client-go it is built with>.
build_helm() { # name version pkg gobin
  local gomod k8s minor flags
  gomod="$(module_gomod helm.sh/helm/v3 "$2")"
  k8s="$(awk '$1 == "k8s.io/client-go" { print $2; exit }' "$gomod")"   # v0.MINOR.PATCH
  [[ "$k8s" =~ ^v0\.([0-9]+)\. ]] || die "cannot find k8s.io/client-go in $gomod"
  minor="${BASH_REMATCH[1]}"
  flags="-s -w -X helm.sh/helm/v3/internal/version.version=$2"
  for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    flags+=" -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$minor"
  done
  build_generic "$@" "$flags"
}

[[ $# -eq 1 ]] || usage
case "$1" in
  -h|--help) usage ;;
  --list)
    for entry in "${TOOLS[@]}"; do read -r n v p <<<"$entry"; printf '%-12s %-10s %s\n' "$n" "$v" "$p"; done
    exit 0 ;;
esac

name="$1"
lookup "$name"
dir="$cache/$name-$version"
bin="$dir/$name"

if [[ -x "$bin" ]]; then
  echo "$bin"
  exit 0
fi

command -v go >/dev/null || die "go is not installed; it is needed to build $name $version"
mkdir -p "$cache"
# Build into a temporary directory next to the final one (same filesystem), then rename it into
# place: a concurrent or interrupted build never leaves a half-written binary at $bin.
tmp="$(mktemp -d "$cache/.$name-$version.XXXXXX")"
chmod 755 "$tmp"
trap 'rm -rf "$tmp"' EXIT
log "building $name $version from $pkg (first time only; cached in $dir)"
started=$SECONDS
if declare -F "build_$name" >/dev/null; then
  "build_$name" "$name" "$version" "$pkg" "$tmp"
else
  build_generic "$name" "$version" "$pkg" "$tmp"
fi
[[ -x "$tmp/$name" ]] || die "build of $name $version produced no $tmp/$name"
log "built $name $version in $((SECONDS - started))s"
if ! mv -T "$tmp" "$dir" 2>/dev/null; then
  # Another process won the race (the directory exists now): use its binary.
  [[ -x "$bin" ]] || die "cannot move $tmp to $dir"
fi
echo "$bin"
