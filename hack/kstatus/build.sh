#!/usr/bin/env bash
# Build the kstatus checker (main.go here: the kstatus library of Flux and its upstream, versions in go.mod)
# once into ${MODELROLLOUT_CACHE:-$HOME/.cache/modelrollout}/bin/kstatus-HASH/kstatus, HASH naming the sources,
# so every clone on one machine shares it and an edit here builds anew. Idempotent; needs Go only to build.
# The last line printed on stdout is the binary.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${MODELROLLOUT_CACHE:-$HOME/.cache/modelrollout}"
hash="$(cat "$here/go.mod" "$here/go.sum" "$here/main.go" | sha256sum | cut -c1-12)"
bindir="$cache/bin/kstatus-$hash"
if [[ ! -x "$bindir/kstatus" ]]; then
    export PATH="$PATH:/usr/local/go/bin" GOTOOLCHAIN=local
    mkdir -p "$bindir"
    exec 9>"$cache/build.lock"
    command -v flock >/dev/null 2>&1 && flock 9
    if [[ ! -x "$bindir/kstatus" ]]; then
        echo "build.sh: building kstatus with $(go version)" >&2
        tmp="$(mktemp -d "$bindir/.build.XXXXXX")"
        trap 'rm -rf "$tmp"' EXIT
        (cd "$here" && go build -trimpath -o "$tmp/kstatus" .)
        mv "$tmp/kstatus" "$bindir/kstatus"
    fi
fi
echo "$bindir/kstatus"
