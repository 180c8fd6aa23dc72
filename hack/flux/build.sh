#!/usr/bin/env bash
# Build Flux's source-controller and kustomize-controller (versions in go.mod here) from the Go module proxy,
# once, into ${MODELROLLOUT_CACHE:-$HOME/.cache/modelrollout}/bin/flux-v1.9.6-HASH/ (HASH names go.mod and
# go.sum, so every clone on a machine shares the build and a version change builds anew), with their CRDs
# (crds/*.yaml, from the same module versions). Idempotent; needs Go only to build.
# The last line printed on stdout is the bin dir.
set -euo pipefail

FLUX_VERSION=v1.9.6
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/../lib/cached-build.sh"
bindir="$(cache_bindir "flux-$FLUX_VERSION" "$here/go.mod" "$here/go.sum")"
bins=(source-controller kustomize-controller)

complete() {
    for b in "${bins[@]}"; do [[ -x "$bindir/$b" ]] || return 1; done
    compgen -G "$bindir/crds/*.yaml" >/dev/null
}

build() {
    (cd "$here" && go build -trimpath -o "$1/" github.com/fluxcd/source-controller \
        github.com/fluxcd/kustomize-controller)
    mkdir -p "$1/crds"
    for m in "${bins[@]}"; do
        cp "$(cd "$here" && go list -m -f '{{.Dir}}' "github.com/fluxcd/$m")"/config/crd/bases/*.yaml "$1/crds/"
    done
}

cached_build "Flux ${bins[*]} $FLUX_VERSION"
echo "$bindir"
