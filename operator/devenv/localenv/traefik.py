"""A real L7 router for the real-node scenarios: Traefik v3 (built by hack/traefik/build.sh) as a local process
against the local control plane, with its Kubernetes Gateway API provider (HTTPRoute backendRef weights) and its
Kubernetes Ingress NGINX provider (``nginx.ingress.kubernetes.io/canary*`` annotations)::

    router = start_traefik(control_plane, workdir)   # returns once both providers have synced
    router.url                                       # http://127.0.0.1:PORT, the entry point
    router.stop()

Every listener is on 127.0.0.1: the entry point ``web`` (requests; a Gateway's listener names its port), and
``traefik`` (the API, ``/ping`` and the Prometheus metrics). Traefik reaches the pods on their pod IPs (the
EndpointSlices of a real node: the node's bridge routes them), never through kube-proxy. It checks for no new
version and sends no usage data; it contacts nothing but the apiserver and the pods.

What it needs in the cluster, applied by :func:`install_cluster_objects`: the Gateway API CRDs (standard
channel, from the build's ``crds/``), a GatewayClass ``traefik`` (controller ``traefik.io/gateway-controller``)
and, per namespace, a Gateway ``gateway`` with one HTTP listener on the entry point's port; an IngressClass
``nginx`` with controller ``k8s.io/ingress-nginx`` (the provider's default), so Ingresses written for NGINX are
served as they are.
"""

from __future__ import annotations

import functools
import json
import os
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from devenv.localenv.controlplane import ControlPlane, built
from devenv.localenv.procs import LOCALHOST, ManagedProcess, free_port, wait_until

GATEWAY_CLASS = "traefik"
GATEWAY_CONTROLLER = "traefik.io/gateway-controller"
INGRESS_CLASS = "nginx"
NGINX_CONTROLLER = "k8s.io/ingress-nginx"
GATEWAY_NAME = "gateway"
START_TIMEOUT = float(os.environ.get("MODELROLLOUT_TRAEFIK_TIMEOUT", "60"))

# Local HTTP only: never route 127.0.0.1 through an HTTP(S)_PROXY from the environment.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _get_json(url: str) -> Any:
    with _opener.open(url, timeout=3) as resp:
        return json.loads(resp.read())


@dataclass
class Traefik:
    process: ManagedProcess
    web_port: int
    admin_port: int
    _stopped: bool = field(default=False, repr=False)

    @property
    def url(self) -> str:
        """The entry point requests go to."""
        return f"http://{LOCALHOST}:{self.web_port}"

    @property
    def admin(self) -> str:
        """API, /ping and /metrics."""
        return f"http://{LOCALHOST}:{self.admin_port}"

    def ping(self) -> bool:
        with _opener.open(f"{self.admin}/ping", timeout=2) as resp:
            return bool(resp.status == 200)

    def routers(self) -> list[dict[str, Any]]:
        """The HTTP routers Traefik serves now (its API)."""
        return list(_get_json(f"{self.admin}/api/http/routers"))

    def services(self) -> list[dict[str, Any]]:
        """The HTTP services Traefik serves now, with their weighted children and servers (its API)."""
        return list(_get_json(f"{self.admin}/api/http/services"))

    def check_alive(self) -> None:
        self.process.check_alive()

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            self.process.stop()


def install_cluster_objects(cp: ControlPlane, crds: Path) -> None:
    """The Gateway API CRDs (established), the GatewayClass and the IngressClass Traefik serves."""
    names: list[str] = []
    for path in sorted(crds.glob("gateway.networking.k8s.io_*.yaml")):
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") == "CustomResourceDefinition"]
        if docs:  # the CRDs only (the channel also ships an admission policy guarding upgrades)
            cp.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-",
                       input=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))
            names += [d["metadata"]["name"] for d in docs]
    def established(crd: str) -> bool:
        return cp.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=10s",
                          check=False).returncode == 0

    for name in names:  # (kubectl wait fails at once while a CRD has no status yet: poll it)
        wait_until(functools.partial(established, name), 60, 0.2, what=f"CRD {name} Established")
    cp.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass", "metadata": {"name": GATEWAY_CLASS},
         "spec": {"controllerName": GATEWAY_CONTROLLER}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": {"name": INGRESS_CLASS},
         "spec": {"controller": NGINX_CONTROLLER}},
    ]}))


def gateway_class_accepted(cp: ControlPlane) -> bool:
    res = cp.kubectl("get", "gatewayclass", GATEWAY_CLASS, "-o", "json", check=False)
    if res.returncode != 0:
        return False
    conds = (json.loads(res.stdout).get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Accepted" and c.get("status") == "True" for c in conds)


def gateway_manifest(namespace: str, port: int) -> str:
    """A Gateway of class ``traefik`` in ``namespace`` with one HTTP listener on Traefik's entry point port
    (Traefik maps a listener to the entry point whose port it names), accepting routes of its namespace."""
    return json.dumps({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": GATEWAY_NAME, "namespace": namespace},
        "spec": {"gatewayClassName": GATEWAY_CLASS,
                 "listeners": [{"name": "web", "protocol": "HTTP", "port": port,
                                "allowedRoutes": {"namespaces": {"from": "Same"}}}]},
    })


def start_traefik(cp: ControlPlane, workdir: Path, *, bin_dir: Path | None = None,
                  timeout: float = START_TIMEOUT) -> Traefik:
    """Traefik against ``cp``; returns once /ping answers and its Gateway API provider has accepted the
    GatewayClass (it has listed the cluster). Stop it with ``stop()``."""
    bins = bin_dir or built("traefik")
    install_cluster_objects(cp, bins / "crds")
    web, admin = free_port(), free_port()
    argv = [
        str(bins / "traefik"),
        "--global.checkNewVersion=false",
        "--global.sendAnonymousUsage=false",
        f"--entryPoints.web.address={LOCALHOST}:{web}",
        f"--entryPoints.traefik.address={LOCALHOST}:{admin}",
        "--api=true",
        "--api.insecure=true",  # the API on the `traefik` entry point (127.0.0.1)
        "--api.dashboard=false",
        "--ping=true",
        "--ping.entryPoint=traefik",
        "--metrics.prometheus=true",
        "--metrics.prometheus.entryPoint=traefik",
        "--providers.providersThrottleDuration=100ms",
        "--providers.kubernetesGateway=true",
        "--providers.kubernetesGateway.throttleDuration=100ms",
        "--providers.kubernetesIngressNGINX=true",
        "--providers.kubernetesIngressNGINX.throttleDuration=100ms",
        "--providers.kubernetesIngressNGINX.httpEntryPoint=web",
        "--log.level=INFO",
        "--log.noColor=true",
    ]
    env = {k: v for k, v in os.environ.items()
           if k not in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "KUBERNETES_SERVICE_HOST",
                        "KUBERNETES_SERVICE_PORT")}
    env["KUBECONFIG"] = str(cp.kubeconfig)  # both providers build their client from it
    process = ManagedProcess(name="traefik", argv=argv, log=workdir / "traefik.log", env=env, cwd=workdir)
    router = Traefik(process=process, web_port=web, admin_port=admin)
    workdir.mkdir(parents=True, exist_ok=True)
    process.start()
    try:
        def ready() -> bool:
            router.check_alive()
            return router.ping() and gateway_class_accepted(cp)

        wait_until(ready, timeout, 0.1, what="Traefik /ping and GatewayClass traefik Accepted", ignore=(OSError,))
    except BaseException:
        router.stop()
        raise
    return router
