#!/usr/bin/env bash
# Build etcd 3.6 (main.go here: etcd's own main, calling go.etcd.io/etcd/server/v3/etcdmain; version in go.mod)
# once into ${MODELROLLOUT_CACHE:-$HOME/.cache/modelrollout}/bin/etcd-VERSION-HASH/etcd, HASH naming go.mod,
# go.sum and main.go, so every clone on a machine shares the build and a version change builds anew. The local
# control plane (devenv.localenv.controlplane) runs it when present, in place of Debian's etcd 3.4, with the
# apiserver's watch cache on. Idempotent; needs Go only to build. The last line printed on stdout is the binary.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ETCD_VERSION="$(sed -n 's#^require go.etcd.io/etcd/server/v3 \(v[^ ]*\)$#\1#p' "$here/go.mod")"
[[ -n "$ETCD_VERSION" ]] || { echo "build.sh: no go.etcd.io/etcd/server/v3 require in $here/go.mod" >&2; exit 1; }
source "$here/../lib/cached-build.sh"
bindir="$(cache_bindir "etcd-$ETCD_VERSION" "$here/go.mod" "$here/go.sum" "$here/main.go")"

complete() { [[ -x "$bindir/etcd" ]]; }
build() { (cd "$here" && go build -trimpath -o "$1/etcd" .); }

cached_build "etcd $ETCD_VERSION"
echo "$bindir/etcd"
