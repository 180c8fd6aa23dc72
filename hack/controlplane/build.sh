#!/usr/bin/env bash
# Build the local test control plane binaries (idempotent).
#
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubectl  from k8s.io/kubernetes (go.mod here)
#   kubelet, kube-proxy (the real node: devenv.localenv.node)        from the same module and build
#   kwok                                                             sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION
#
# into ${MODELROLLOUT_CACHE:-$HOME/.cache/modelrollout}/bin/k8s-$K8S_VERSION-kwok-$KWOK_VERSION/, a cache
# outside the clone so every clone on one machine shares it. Binaries already present are not rebuilt.
# The last line printed on stdout is the bin dir.
set -euo pipefail

K8S_VERSION=v1.36.3
K8S_VERSION_MAJOR=1
K8S_VERSION_MINOR=36
KWOK_VERSION=v0.8.0
K8S_BINS=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy)

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${MODELROLLOUT_CACHE:-$HOME/.cache/modelrollout}"
legacy="$cache/bin"                                   # where the first builds went, unversioned
bindir="$legacy/k8s-$K8S_VERSION-kwok-$KWOK_VERSION"
mkdir -p "$bindir"

# Local Go only: kube-apiserver must not be built by a newer toolchain (see DESIGN.md §6).
export GOTOOLCHAIN=local

# One build at a time per cache (two clones running `make test` at once).
exec 9>"$cache/build.lock"
if command -v flock >/dev/null 2>&1; then
    flock 9
fi

log() { echo "build.sh: $*" >&2; }

tmp="$(mktemp -d "$bindir/.build.XXXXXX")"   # same filesystem: the final mv is atomic
trap 'rm -rf "$tmp"' EXIT

# Adopt binaries built earlier straight into $legacy, instead of rebuilding them.
for b in "${K8S_BINS[@]}" kwok; do
    if [[ ! -x "$bindir/$b" && -x "$legacy/$b" && -f "$legacy/$b" ]]; then
        log "adopting $legacy/$b"
        mv "$legacy/$b" "$bindir/$b"
    fi
done

# Stamp the release version in like the upstream build (hack/lib/version.sh); without it the binaries say
# v0.0.0-master+$Format:%H$ and `kubectl version` exits 1 failing to parse that.
ldflags=""
for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
    ldflags+=" -X '$pkg.gitVersion=$K8S_VERSION' -X '$pkg.gitMajor=${K8S_VERSION_MAJOR}'"
    ldflags+=" -X '$pkg.gitMinor=${K8S_VERSION_MINOR}' -X '$pkg.gitTreeState=clean'"
done

version_of() {
    case "$(basename "$1")" in
        kubectl) "$1" version --client -o json 2>/dev/null | sed -n 's/.*"gitVersion": *"\([^"]*\)".*/Kubernetes \1/p' ;;
        *) "$1" --version 2>/dev/null ;;
    esac
}

missing=()
for b in "${K8S_BINS[@]}"; do
    # Present and stamped with the pinned version (older builds here lacked the stamp: relink them).
    if [[ -x "$bindir/$b" ]] && version_of "$bindir/$b" | grep -qx "Kubernetes $K8S_VERSION"; then
        continue
    fi
    missing+=("$b")
done
if ((${#missing[@]})); then
    log "building ${missing[*]} ($K8S_VERSION) with $(go version)"
    pkgs=()
    for b in "${missing[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
    (cd "$here" && go build -ldflags "$ldflags" -o "$tmp/" "${pkgs[@]}")
    for b in "${missing[@]}"; do mv "$tmp/$b" "$bindir/$b"; done
fi

if [[ ! -x "$bindir/kwok" ]]; then
    log "building kwok $KWOK_VERSION with $(go version)"
    (cd "$tmp" && GOBIN="$tmp" go install "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION")
    mv "$tmp/kwok" "$bindir/kwok"
fi

for b in "${K8S_BINS[@]}" kwok; do
    [[ -x "$bindir/$b" ]] || { log "missing $bindir/$b after build"; exit 1; }
done
echo "$bindir"
