#!/usr/bin/env bash
# Pinned developer/CI tools, built from their Go modules and cached outside the repo.
#
#   hack/tools.sh helm            # builds helm once, prints the path of the binary
#   "$(hack/tools.sh helm)" lint charts/tracedpipeline-operator
#   hack/tools.sh --list          # name, version and source of every tool
#   hack/tools.sh --all           # builds every tool (CI warms the cache with it), prints the paths
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
# name                     version   how          what
#   install  <pkg>          `go install pkg@version` (the tool's own go.mod and go.sum)
#   module   <dir> <pkg>    `go build pkg` inside hack/tools/<dir>, a small Go module whose go.mod
#                           requires the tool at this version (checked) with the replaces it needs
#                           and whose go.sum starts from the tool's own
#   ocb      <manifest>     the OpenTelemetry Collector builder (tool `ocb`, same version) on a
#                           manifest in hack/tools/
TOOLS=(
  "helm                    v3.22.0   install  helm.sh/helm/v3/cmd/helm"
  "kubeconform             v0.7.0    install  github.com/yannh/kubeconform/cmd/kubeconform"
  "ocb                     v0.139.0  install  go.opentelemetry.io/collector/cmd/builder"
  "otelcol                 v0.139.0  ocb      otelcol/builder-config.yaml"
  # Jaeger tags its Go module v1.x next to the v2 release: v1.76.0 is Jaeger v2.13.0.
  "jaeger                  v1.76.0   module   jaeger github.com/jaegertracing/jaeger/cmd/jaeger"
  "etcd                    v3.6.5    module   etcd go.etcd.io/etcd/server/v3"
  # Kubernetes 1.34: the last minor whose kubelet runs on cgroup v1 without opting in
  # (../shared/docs/sandbox.md); etcd 3.6.5 is the release it is tested with.
  "kube-apiserver          v1.34.4   module   kubernetes k8s.io/kubernetes/cmd/kube-apiserver"
  "kube-controller-manager v1.34.4   module   kubernetes k8s.io/kubernetes/cmd/kube-controller-manager"
  "kube-scheduler          v1.34.4   module   kubernetes k8s.io/kubernetes/cmd/kube-scheduler"
  "kubelet                 v1.34.4   module   kubernetes k8s.io/kubernetes/cmd/kubelet"
  "kube-proxy              v1.34.4   module   kubernetes k8s.io/kubernetes/cmd/kube-proxy"
)
# The Jaeger version the binary reports (`jaeger version`), as its release build sets it.
JAEGER_V2_VERSION=v2.13.0
# -------------------------------------------------------------------------------------------------

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${TRACEDPIPELINE_CACHE:-$HOME/.cache/tracedpipeline}/tools"

log() { echo "tools.sh: $*" >&2; }
die() { log "$*"; exit 1; }

names() { local t n; for t in "${TOOLS[@]}"; do read -r n _ <<<"$t"; printf '%s ' "$n"; done; }

usage() {
  echo "usage: hack/tools.sh <tool> | --list | --all" >&2
  echo "tools: $(names)" >&2
  exit 2
}

# lookup NAME -> sets version, how and args (the rest of the line); fails for an unknown tool
lookup() {
  local entry n v h a
  for entry in "${TOOLS[@]}"; do
    read -r n v h a <<<"$entry"
    if [[ "$n" == "$1" ]]; then version="$v" how="$h" args="$a"; return 0; fi
  done
  die "unknown tool '$1' (known: $(names))"
}

# Go builds are reproducible: -trimpath, no cgo, no workspace, no VCS stamping.
gobuild_env() { GOFLAGS=-trimpath CGO_ENABLED=0 GOWORK=off "$@"; }

# go.mod of a module version, read from the module cache (downloads it through GOPROXY).
module_gomod() { # module version
  GOFLAGS= GOWORK=off go mod download -json "$1@$2" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p'
}

# Release ldflags, per tool, so that the binaries report (and behave as) the version they are.
ldflags_for() { # name version
  case "$1" in
    helm)
      # Without these `helm version` says "v3.22" and `.Capabilities.KubeVersion` / the lint
      # deprecation check default to Kubernetes 1.20; the release sets both to 1.<minor of the
      # k8s.io/client-go it is built with> (helm's Makefile).
      local gomod k8s minor flags p
      gomod="$(module_gomod helm.sh/helm/v3 "$2")"
      k8s="$(awk '$1 == "k8s.io/client-go" { print $2; exit }' "$gomod")"   # v0.MINOR.PATCH
      [[ "$k8s" =~ ^v0\.([0-9]+)\. ]] || die "cannot find k8s.io/client-go in $gomod"
      minor="${BASH_REMATCH[1]}"
      flags="-s -w -X helm.sh/helm/v3/internal/version.version=$2"
      for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
        flags+=" -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$minor"
      done
      echo "$flags" ;;
    kube-*|kubelet)
      # Kubernetes' hack/lib/version.sh: the apiserver's /version and its emulation version
      # derive from these; unset, the binary calls itself v0.0.0-master.
      [[ "$2" =~ ^v1\.([0-9]+)\. ]] || die "unexpected Kubernetes version $2"
      local p flags="-s -w"
      for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        flags+=" -X $p.gitVersion=$2 -X $p.gitMajor=1 -X $p.gitMinor=${BASH_REMATCH[1]}"
        flags+=" -X $p.gitTreeState=clean"
      done
      echo "$flags" ;;
    jaeger) echo "-s -w -X github.com/jaegertracing/jaeger/internal/version.latestVersion=$JAEGER_V2_VERSION" ;;
    *) echo "-s -w" ;;
  esac
}

build_install() { # name version gobin pkg
  gobuild_env env GOBIN="$3" go install -ldflags "$(ldflags_for "$1" "$2")" "$4@$2" >&2
  # `go install` names the binary after the package path (e.g. "builder"); name it after the tool.
  local built="${4##*/}"
  [[ -e "$3/$1" || ! -e "$3/$built" ]] || mv "$3/$built" "$3/$1"
}

build_module() { # name version gobin dir pkg
  local dir="$here/tools/$4" mod
  mod="$(cd "$dir" && GOFLAGS= GOWORK=off go list -f '{{.Module.Path}} {{.Module.Version}}' "$5")"
  [[ "$mod" == *" $2" ]] || die "$dir/go.mod pins '$mod' for $5, but TOOLS says $2: make them agree"
  (cd "$dir" && gobuild_env go build -ldflags "$(ldflags_for "$1" "$2")" -o "$3/$1" "$5") >&2
}

build_ocb() { # name version gobin manifest
  local ocb src
  ocb="$("$0" ocb)"
  [[ "$("$0" --version-of ocb)" == "$2" ]] || die "ocb and $1 must have the same version in TOOLS"
  src="$3/src"
  mkdir -p "$src"
  # ocb writes its sources to dist.output_path relative to the working directory.
  (cd "$src" && GOWORK=off "$ocb" --config "$here/tools/$4" --skip-compilation) >&2
  (cd "$src/_build" && gobuild_env go build -ldflags "$(ldflags_for "$1" "$2")" -o "$3/$1" .) >&2
  rm -rf "$src"
}

# path NAME: build NAME once (cached), print the binary's path
path() {
  local name="$1" version how args dir bin tmp started
  lookup "$name"
  dir="$cache/$name-$version"
  bin="$dir/$name"
  if [[ -x "$bin" ]]; then
    echo "$bin"
    return 0
  fi
  command -v go >/dev/null || die "go is not installed; it is needed to build $name $version"
  mkdir -p "$cache"
  # Build into a temporary directory next to the final one (same filesystem), then rename it into
  # place: a concurrent or interrupted build never leaves a half-written binary at $bin.
  tmp="$(mktemp -d "$cache/.$name-$version.XXXXXX")"
  chmod 755 "$tmp"
  trap 'rm -rf "$tmp"' EXIT
  log "building $name $version ($how $args; first time only, cached in $dir)"
  started=$SECONDS
  # shellcheck disable=SC2086 # args is a list of words
  "build_$how" "$name" "$version" "$tmp" $args
  [[ -x "$tmp/$name" ]] || die "build of $name $version produced no $tmp/$name"
  log "built $name $version in $((SECONDS - started))s"
  if ! mv -T "$tmp" "$dir" 2>/dev/null; then
    # Another process won the race (the directory exists now): use its binary.
    [[ -x "$bin" ]] || die "cannot move $tmp to $dir"
    rm -rf "$tmp"
  fi
  trap - EXIT
  echo "$bin"
}

[[ $# -ge 1 ]] || usage
case "$1" in
  -h|--help) usage ;;
  --list)
    for entry in "${TOOLS[@]}"; do
      read -r n v h a <<<"$entry"; printf '%-24s %-9s %-8s %s\n' "$n" "$v" "$h" "$a"
    done ;;
  --version-of) lookup "${2:?}"; echo "$version" ;;
  --all) for n in $(names); do path "$n"; done ;;
  *) [[ $# -eq 1 ]] || usage; path "$1" ;;
esac
