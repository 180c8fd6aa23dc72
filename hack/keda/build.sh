#!/usr/bin/env bash
# Build KEDA's operator (cmd/operator; version in go.mod here) from the Go module proxy, once, into
# ${MODELROLLOUT_CACHE:-$HOME/.cache/modelrollout}/bin/keda-v2.21.0-HASH/ (HASH names go.mod and go.sum, so every
# clone on a machine shares the build and a version change builds anew), with KEDA's CRDs (crds/*.yaml, from the
# same module zip's config/crd/bases). Idempotent; needs Go only to build. The largest build of the repo (KEDA
# links every scaler's SDK): run at nice 10; KEDA_BUILD_P=1 builds one package at a time (less memory, slower).
# The last line printed on stdout is the bin dir.
set -euo pipefail

KEDA_VERSION=v2.21.0
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/../lib/cached-build.sh"
bindir="$(cache_bindir "keda-$KEDA_VERSION" "$here/go.mod" "$here/go.sum")"

complete() { [[ -x "$bindir/keda-operator" ]] && compgen -G "$bindir/crds/*.yaml" >/dev/null; }

build() {
    (cd "$here" && nice -n 10 go build ${KEDA_BUILD_P:+-p "$KEDA_BUILD_P"} -trimpath -o "$1/keda-operator" \
        github.com/kedacore/keda/v2/cmd/operator)
    mkdir -p "$1/crds"
    cp "$(cd "$here" && go list -m -f '{{.Dir}}' github.com/kedacore/keda/v2)"/config/crd/bases/*.yaml "$1/crds/"
}

cached_build "KEDA's operator $KEDA_VERSION"
echo "$bindir"
