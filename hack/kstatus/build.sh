#!/usr/bin/env bash
# Build the kstatus checker (main.go here: the kstatus library of Flux and its upstream, versions in go.mod)
# once into ${MODELROLLOUT_CACHE:-$HOME/.cache/modelrollout}/bin/kstatus-HASH/kstatus, HASH naming the sources,
# so every clone on one machine shares it and an edit here builds anew. Idempotent; needs Go only to build.
# The last line printed on stdout is the binary.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/../lib/cached-build.sh"
bindir="$(cache_bindir kstatus "$here/go.mod" "$here/go.sum" "$here/main.go")"

complete() { [[ -x "$bindir/kstatus" ]]; }
build() { (cd "$here" && go build -trimpath -o "$1/kstatus" .); }

cached_build kstatus
echo "$bindir/kstatus"
