#!/usr/bin/env bash
# Build Flux's source-controller and kustomize-controller (versions in go.mod here) from the Go module proxy,
# once, into ${MODELROLLOUT_CACHE:-$HOME/.cache/modelrollout}/bin/flux-v1.9.6-HASH/ (HASH names go.mod and
# go.sum, so every clone on a machine shares the build and a version change builds anew), with their CRDs
# (crds/*.yaml, from the same module versions). Idempotent; needs Go only to build.
# The last line printed on stdout is the bin dir.
set -euo pipefail

FLUX_VERSION=v1.9.6
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${MODELROLLOUT_CACHE:-$HOME/.cache/modelrollout}"
hash="$(cat "$here/go.mod" "$here/go.sum" | sha256sum | cut -c1-12)"
bindir="$cache/bin/flux-$FLUX_VERSION-$hash"
bins=(source-controller kustomize-controller)

complete() {
    for b in "${bins[@]}"; do [[ -x "$bindir/$b" ]] || return 1; done
    compgen -G "$bindir/crds/*.yaml" >/dev/null
}

if ! complete; then
    export PATH="$PATH:/usr/local/go/bin" GOTOOLCHAIN=local GOFLAGS=-mod=readonly
    mkdir -p "$bindir"
    exec 9>"$cache/build.lock"
    command -v flock >/dev/null 2>&1 && flock 9
    if ! complete; then
        echo "build.sh: building Flux ${bins[*]} $FLUX_VERSION with $(go version)" >&2
        tmp="$(mktemp -d "$bindir/.build.XXXXXX")"
        trap 'rm -rf "$tmp"' EXIT
        start=$SECONDS
        (cd "$here" && go build -trimpath -o "$tmp/" github.com/fluxcd/source-controller \
            github.com/fluxcd/kustomize-controller)
        mkdir -p "$tmp/crds"
        for m in source-controller kustomize-controller; do
            dir="$(cd "$here" && go list -m -f '{{.Dir}}' "github.com/fluxcd/$m")"
            cp "$dir"/config/crd/bases/*.yaml "$tmp/crds/"
        done
        chmod u+w "$tmp/crds"/*.yaml
        rm -rf "$bindir/crds"
        mv "$tmp/crds" "$bindir/crds"
        for b in "${bins[@]}"; do mv "$tmp/$b" "$bindir/$b"; done
        echo "build.sh: Flux built in $((SECONDS - start)) s" >&2
    fi
fi
echo "$bindir"
