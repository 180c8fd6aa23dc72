#!/usr/bin/env bash
# Install what the tests and the demo need on a fresh machine (idempotent, quick when already done):
# Debian's etcd-server, prometheus, and chromium + chromium-driver (the dashboard's browser tests), the Python
# package with its test extras, and the Go binaries the tests run, built from Go modules into the cache: the local
# control plane (hack/controlplane/build.sh) and its etcd 3.6 (hack/etcd/build.sh; Debian's etcd 3.4 is the
# fallback), the kstatus checker (hack/kstatus/build.sh), Flux's source-controller and kustomize-controller
# (hack/flux/build.sh; Debian's git serves their test repository), KEDA's operator (hack/keda/build.sh), Chaos
# Mesh's controller-manager (hack/chaosmesh/build.sh), Traefik v3, the real-node scenarios' L7 router
# (hack/traefik/build.sh), and, as root, the operator, compat-probe and reference model server images for the real
# node without Docker (devenv.localenv.images).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export DEBIAN_FRONTEND=noninteractive
SUDO=""
[[ "$(id -u)" -eq 0 ]] || SUDO="sudo"

# The real node (devenv.localenv.node): containerd + runc, the CNI plugins, nftables/iptables for its
# firewall table and kube-proxy, the OCI tools + busybox that build its test images without Docker or a registry,
# and mmdebstrap for the product images' Debian root filesystem (devenv.localenv.images).
NODE_PKGS=(runc containerd containernetworking-plugins nftables iptables umoci skopeo busybox-static gcc libc6-dev
           mmdebstrap)
need_apt=""
for bin in etcd prometheus openssl make chromium chromedriver git; do
    command -v "$bin" >/dev/null 2>&1 || need_apt=1
done
for pkg in "${NODE_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || need_apt=1
done
if [[ -n "$need_apt" || -n "${CI:-}" ]]; then
    # Debian would start etcd (:2379) and prometheus (:9090) as services on install; the tests start their
    # own on random 127.0.0.1 ports, so forbid service starts while installing (policy-rc.d exit 101).
    policy=/usr/sbin/policy-rc.d
    added_policy=""
    if [[ ! -e "$policy" ]]; then
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
        $SUDO chmod +x "$policy"
        added_policy=1
    fi
    $SUDO apt-get update
    $SUDO apt-get install -y --no-install-recommends etcd-server prometheus openssl ca-certificates make \
        chromium chromium-driver git "${NODE_PKGS[@]}"
    [[ -z "$added_policy" ]] || $SUDO rm -f "$policy"
    for svc in etcd prometheus prometheus-node-exporter containerd; do     # nothing left listening
        $SUDO service "$svc" stop >/dev/null 2>&1 || true
    done
fi

if ! python -c "import modelrollout, kopf, hypothesis, ruff, selenium, wheel" >/dev/null 2>&1 || [[ -n "${CI:-}" ]]; then
    python -m pip install -q -e '.[test]'
fi

# Real model servers for the compat-probe's tests and `make demo MODEL=mlserver`: MLServer and KServe's model
# server, each in its own venv under ~/.cache/modelrollout/venvs (their pins must not constrain the
# operator's environment); skipped when the requirement files are unchanged.
bash hack/modelservers/install.sh

# Go (1.26, local toolchain only) builds kube-apiserver & co. once into ~/.cache/modelrollout.
export PATH="$PATH:/usr/local/go/bin:$HOME/go/bin"
export GOTOOLCHAIN=local
command -v go >/dev/null || { echo "bootstrap: Go 1.26 is needed to build the local control plane" >&2; exit 1; }
bash hack/controlplane/build.sh >/dev/null
bash hack/etcd/build.sh >/dev/null
bash hack/kstatus/build.sh >/dev/null
bash hack/flux/build.sh >/dev/null
bash hack/keda/build.sh >/dev/null
bash hack/chaosmesh/build.sh >/dev/null
bash hack/traefik/build.sh >/dev/null

# The operator, compat-probe and reference model server images for the real node, without Docker
# (devenv.localenv.images: a Debian bookworm root filesystem by mmdebstrap + a venv with the package built
# from this checkout; cached, rebuilt only when their inputs change). Cold: about 2 minutes, 400 MB of cache.
# Needs root (mmdebstrap, chroot); elsewhere the real-node tests skip and say why.
if [[ "$(id -u)" -eq 0 ]]; then
    PYTHONPATH=operator nice -n 10 python -m devenv.localenv.images build >/dev/null
fi
