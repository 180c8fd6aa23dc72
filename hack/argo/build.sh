#!/usr/bin/env bash
# Build Argo Rollouts' controller (cmd/rollouts-controller; version in go.mod here) from the Go module proxy, once,
# into ${MODELROLLOUT_CACHE:-$HOME/.cache/modelrollout}/bin/argo-rollouts-v1.10.2-HASH/ (HASH names go.mod and
# go.sum, so every clone on a machine shares the build and a version change builds anew), with its CRDs
# (crds/*.yaml, from the same module zip's manifests/crds). The peer of the side-by-side benchmark
# (`make bench-peer`, bench/peer.py); bootstrap does not build it (no test needs it). Idempotent; needs Go only to
# build. The build module repeats argo-rollouts' replace lines (they apply only in the main module).
# Its metrics and healthz servers listen on 0.0.0.0 with no flag to choose the address (a constant, `listenAddr`
# in package controller): the build replaces the module with a copy whose constant is 127.0.0.1, so nothing on
# the machine listens beyond loopback. HASH names this script too.
# The last line printed on stdout is the bin dir.
set -euo pipefail

ARGO_VERSION=v1.10.2
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/../lib/cached-build.sh"
bindir="$(cache_bindir "argo-rollouts-$ARGO_VERSION" "$here/go.mod" "$here/go.sum" "$here/build.sh")"

complete() { [[ -x "$bindir/rollouts-controller" ]] && compgen -G "$bindir/crds/*.yaml" >/dev/null; }

build() {
    # argo-rollouts' go.mod needs Go >= 1.26.10: the module proxy serves that toolchain (the lib's default is the
    # local toolchain only).
    export GOTOOLCHAIN=go1.27.3
    local mod work="$1/.work"    # a dot dir: cached_build moves only the build's visible files into $bindir
    mod="$(cd "$here" && go list -m -f '{{.Dir}}' github.com/argoproj/argo-rollouts)"
    mkdir -p "$work"
    cp -r "$mod" "$work/argo-rollouts"
    chmod -R u+w "$work/argo-rollouts"
    sed -i 's|^\(\s*listenAddr\s*=\s*\)"0\.0\.0\.0:%d"|\1"127.0.0.1:%d"|' "$work/argo-rollouts/controller/controller.go"
    grep -q '^\s*listenAddr\s*=\s*"127\.0\.0\.1:%d"' "$work/argo-rollouts/controller/controller.go" || {
        echo "build.sh: listenAddr not found in argo-rollouts' controller/controller.go" >&2
        return 1
    }
    cp "$here/go.mod" "$here/go.sum" "$here/tools.go" "$work/"
    echo 'replace github.com/argoproj/argo-rollouts => ./argo-rollouts' >>"$work/go.mod"
    (cd "$work" && nice -n 10 go build -trimpath -o "$1/rollouts-controller" \
        github.com/argoproj/argo-rollouts/cmd/rollouts-controller)
    mkdir -p "$1/crds"
    cp "$mod"/manifests/crds/*-crd.yaml "$1/crds/"
}

cached_build "Argo Rollouts' controller $ARGO_VERSION"
echo "$bindir"
