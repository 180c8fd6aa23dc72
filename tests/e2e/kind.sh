#!/usr/bin/env bash
# make e2e: where a Docker engine runs, create a kind cluster, build the operator and compat-probe images,
# load them into the cluster, install the Helm chart, run tests/e2e against the installed operator, delete
# the cluster. Without Docker, the real-request scenarios on a real node instead: the local control plane, a
# node of containerd + runc + kubelet + kube-proxy (devenv.localenv.node), Traefik as the L7 router
# (devenv.localenv.traefik), the operator as a local process and as installed by its chart from images built
# without Docker (tests/integration/test_realnode*.py; they fail, not skip, when the node cannot start). It says which it uses.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
PYTHON="${PYTHON:-python}"
if ! docker info >/dev/null 2>&1; then
    echo "make e2e: no Docker engine here: the real node (local control plane + kubelet/containerd + Traefik)" >&2
    bash hack/traefik/build.sh >/dev/null
    MODELROLLOUT_REQUIRE_CLUSTER=1 "$PYTHON" -m pytest -q -p no:cacheprovider tests/integration/test_realnode*.py
    exit
fi
echo "make e2e: Docker engine found: a kind cluster" >&2
export PATH="$PATH:/usr/local/go/bin:$HOME/go/bin"
command -v kind >/dev/null || GOTOOLCHAIN=local go install sigs.k8s.io/kind@v0.29.0
name="modelrollout-e2e-$$"
tag="e2e-$(git rev-parse --short HEAD 2>/dev/null || echo dev)"
operator_image="modelrollout/modelrollout:$tag"
probe_image="modelrollout/compat-probe:$tag"

docker build -f operator/Dockerfile -t "$operator_image" .
docker build -f operator/compat_probe/Dockerfile -t "$probe_image" .

kind create cluster --name "$name" --wait 120s
trap 'kind delete cluster --name "$name"' EXIT
export KUBECONFIG="$(mktemp)"
kind get kubeconfig --name "$name" > "$KUBECONFIG"
kind load docker-image --name "$name" "$operator_image" "$probe_image"

helm="$(python hack/render_chart.py --helm)"
"$helm" install modelrollout charts/modelrollout --namespace modelrollout-system --create-namespace \
    --set image.repository="${operator_image%:*}" --set image.tag="$tag" --set image.pullPolicy=Never \
    --wait --timeout 180s
kubectl -n modelrollout-system rollout status deployment --timeout=120s

# the tests use the operator the chart installed instead of starting one
export MODELROLLOUT_E2E_OPERATOR=installed MODELROLLOUT_E2E_PROBE_IMAGE="$probe_image"
python -m pytest -q -p no:cacheprovider tests/e2e
