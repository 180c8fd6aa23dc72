# Sourced by hack/{kstatus,flux,keda}/build.sh: build once into a cache dir shared by every clone on the machine.
# The caller sets bindir="$(cache_bindir NAME FILE...)", defines `complete` (true when "$bindir" holds the whole
# build) and `build TMP` (builds into TMP: the binaries, and a crds/ dir if any), then calls `cached_build WHAT`.
# Unless complete, it takes the machine-wide build lock ($cache/build.lock; one Go build at a time), checks again
# (another clone may have built it meanwhile), builds in a temp dir beside "$bindir" and moves the result in,
# crds/ first and the binaries last, so `complete` never sees half a build. Go: the local toolchain only, go.sum
# as it is.

cache="${MODELROLLOUT_CACHE:-$HOME/.cache/modelrollout}"

# cache_bindir NAME FILE...: $cache/bin/NAME-HASH, HASH naming the FILEs, so a change of them builds anew.
cache_bindir() {
    local name="$1"
    shift
    echo "$cache/bin/$name-$(cat "$@" | sha256sum | cut -c1-12)"
}

cached_build() {
    local what="$1" start f
    complete && return 0
    export PATH="$PATH:/usr/local/go/bin" GOTOOLCHAIN=local GOFLAGS=-mod=readonly
    mkdir -p "$bindir"
    exec 9>"$cache/build.lock"
    command -v flock >/dev/null 2>&1 && flock 9
    complete && return 0
    echo "build.sh: building $what with $(go version)" >&2
    _cached_build_tmp="$(mktemp -d "$bindir/.build.XXXXXX")"    # same filesystem: the moves are atomic
    trap 'rm -rf "$_cached_build_tmp"' EXIT
    start=$SECONDS
    build "$_cached_build_tmp"
    if [[ -d "$_cached_build_tmp/crds" ]]; then
        chmod u+w "$_cached_build_tmp/crds"/*.yaml
        rm -rf "$bindir/crds"
        mv "$_cached_build_tmp/crds" "$bindir/crds"
    fi
    for f in "$_cached_build_tmp"/*; do
        mv "$f" "$bindir/"
    done
    echo "build.sh: $what built in $((SECONDS - start)) s" >&2
}
