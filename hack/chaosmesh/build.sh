#!/usr/bin/env bash
# Build Chaos Mesh's controller-manager (cmd/chaos-controller-manager; version in go.mod here) from the Go module
# proxy, once, into ${MODELROLLOUT_CACHE:-$HOME/.cache/modelrollout}/bin/chaos-mesh-HASH/ (HASH names go.mod and
# go.sum, so every clone on a machine shares the build and a version change builds anew), with Chaos Mesh's CRDs
# (crds/crd.yaml, the module zip's manifests/crd.yaml). Idempotent; needs Go only to build.
# The last line printed on stdout is the bin dir.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/../lib/cached-build.sh"
bindir="$(cache_bindir "chaos-mesh" "$here/go.mod" "$here/go.sum")"

complete() { [[ -x "$bindir/chaos-controller-manager" && -f "$bindir/crds/crd.yaml" ]]; }

build() {
    (cd "$here" && nice -n 10 go build -trimpath -o "$1/chaos-controller-manager" \
        github.com/chaos-mesh/chaos-mesh/cmd/chaos-controller-manager)
    mkdir -p "$1/crds"
    cp "$(cd "$here" && go list -m -f '{{.Dir}}' github.com/chaos-mesh/chaos-mesh)"/manifests/crd.yaml "$1/crds/"
}

cached_build "Chaos Mesh's controller-manager"
echo "$bindir"
