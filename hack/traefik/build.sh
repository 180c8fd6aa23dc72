#!/usr/bin/env bash
# Build Traefik v3 (version in go.mod here) from the Go module proxy, once, into
# ${MODELROLLOUT_CACHE:-$HOME/.cache/modelrollout}/bin/traefik-v3.7.13-HASH/traefik (HASH names this directory's
# inputs, so every clone on a machine shares the build and a change builds anew). Idempotent; needs Go only to
# build. Traefik is the e2e scenarios' real L7 router (its Kubernetes Gateway API and Kubernetes Ingress NGINX
# providers). With it, in crds/, the Gateway API CRDs (standard channel) of the version Traefik is built with.
# Built from this wrapper module: Traefik's own replace lines repeated (a dependency's are ignored), its
# unserved nested module github.com/traefik/traefik/dynamic/ext supplied by ./ext, and lego v5 trimmed by
# trim-lego.sh (the one source change: six ACME DNS providers whose SDKs the module proxy refuses).
# Cold: ~7 min wall on 2 shared cores (6 min user CPU), 3.3 GB peak (the link): run at nice 10;
# TRAEFIK_BUILD_P=1 builds one package at a time.
# The last line printed on stdout is the bin dir.
set -euo pipefail

TRAEFIK_VERSION=v3.7.13
LEGO_VERSION=v5.4.1
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/../lib/cached-build.sh"
bindir="$(cache_bindir "traefik-$TRAEFIK_VERSION" "$here/go.mod" "$here/go.sum" "$here/trim-lego.sh" \
    "$here/ext/go.mod" "$here/ext/ext.go")"

complete() { [[ -x "$bindir/traefik" ]] && compgen -G "$bindir/crds/*.yaml" >/dev/null; }

build() {
    local work="$1/.src" lego    # inside the build dir: removed with it on failure, never moved into the cache
    mkdir "$work"
    cp -r "$here/go.mod" "$here/go.sum" "$here/tools.go" "$here/ext" "$work/"
    mkdir "$work/dl"    # outside any module: lego as its own module version, checked against the checksum database
    lego="$(cd "$work/dl" && GOFLAGS= go mod download -json "github.com/go-acme/lego/v5@$LEGO_VERSION" \
        | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
    bash "$here/trim-lego.sh" "$lego" "$work/lego"
    (cd "$work" && nice -n 10 go build ${TRAEFIK_BUILD_P:+-p "$TRAEFIK_BUILD_P"} -trimpath \
        -ldflags "-s -w -X github.com/traefik/traefik/v3/pkg/version.Version=$TRAEFIK_VERSION" \
        -o "$1/traefik" github.com/traefik/traefik/v3/cmd/traefik)
    # The Gateway API CRDs (standard channel) of the version Traefik is built with.
    mkdir -p "$1/crds"
    cp "$(cd "$work" && go list -m -f '{{.Dir}}' sigs.k8s.io/gateway-api)"/config/crd/standard/gateway.networking.k8s.io_*.yaml \
        "$1/crds/"
    rm -rf "$work"
}

cached_build "Traefik $TRAEFIK_VERSION"
echo "$bindir"
