#!/usr/bin/env bash
# make e2e: create a kind cluster (needs a running Docker engine), run tests/e2e against it, delete it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
if ! docker info >/dev/null 2>&1; then
    echo "make e2e: no Docker engine here, so no kind cluster; run \`make e2e-existing\` with KUBECONFIG set" >&2
    python -m pytest -q -p no:cacheprovider tests/e2e   # skips and says why
    exit 0
fi
export PATH="$PATH:/usr/local/go/bin:$HOME/go/bin"
command -v kind >/dev/null || GOTOOLCHAIN=local go install sigs.k8s.io/kind@v0.29.0
name="modelrollout-e2e-$$"
kind create cluster --name "$name" --wait 120s
trap 'kind delete cluster --name "$name"' EXIT
export KUBECONFIG="$(mktemp)"
kind get kubeconfig --name "$name" > "$KUBECONFIG"
python -m pytest -q -p no:cacheprovider tests/e2e
