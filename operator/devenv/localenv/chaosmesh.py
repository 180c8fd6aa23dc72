"""Real Chaos Mesh for the integration tests: its controller-manager (``cmd/chaos-controller-manager``, built by
hack/chaosmesh/build.sh from the Go module proxy) as a child process against the local control plane.

It runs out of cluster, configured the way Chaos Mesh's chart configures it (environment variables), with every
listener on 127.0.0.1: metrics (``METRICS_HOST``/``METRICS_PORT``) and the admission webhook server
(``WEBHOOK_HOST``/``WEBHOOK_PORT``, a self-signed pair made here in ``CERTS_DIR``); no pprof server (``PPROF_ADDR=0``,
its default), no health-probe server (the manager configures none), no leader election. The webhooks the chart
registers for the kinds the operator creates (mutating and validating, plus the ``/validate-auth`` RBAC check of
security mode) are registered here too, pointed at ``https://127.0.0.1:PORT`` with the pair's CA, so the
apiserver admits experiments through Chaos Mesh exactly as in a cluster; ``stop()`` removes them first.

What it leaves out: chaos-daemon (the per-node DaemonSet that enters pods' namespaces: NetworkChaos, StressChaos,
IOChaos, HTTPChaos, TimeChaos, container-kill need it; PodChaos ``pod-kill`` and ``pod-failure`` are carried out by
the controller-manager through the API alone), chaos-dashboard, chaos-dns-server and the multi-cluster
RemoteCluster installer (it installs a chart into other clusters).
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from devenv.localenv.controlplane import ControlPlane, client_kubeconfig, self_signed
from devenv.localenv.procs import LOCALHOST, Controllers, ManagedProcess, free_port, port_open, wait_until

CHAOS_MESH_VERSION = "v0.9.1-0.20260902003049-47411975a8cb"
USER = "chaos-mesh"
"""The manager's client certificate CN (group system:masters): the audit log tells its requests apart."""
WEBHOOK_KINDS = ("podchaos", "networkchaos", "stresschaos", "httpchaos", "iochaos", "timechaos")
"""The kinds a ``chaos`` step creates: the kinds whose webhooks are registered."""
MUTATING = "modelrollout-test-chaos-mesh-mutation"
VALIDATING = "modelrollout-test-chaos-mesh-validation"
VALIDATING_AUTH = "modelrollout-test-chaos-mesh-validation-auth"


def webhook_configurations(port: int, ca: bytes, kinds: Sequence[str] = WEBHOOK_KINDS) -> list[dict[str, object]]:
    """The chart's Mutating/ValidatingWebhookConfigurations for ``kinds`` (same paths, names, failure policy and
    timeout), with ``url: https://127.0.0.1:PORT/...`` in place of the in-cluster Service."""
    bundle = base64.b64encode(ca).decode()

    def hook(name: str, path: str, resources: list[str]) -> dict[str, object]:
        return {"name": name, "clientConfig": {"url": f"https://{LOCALHOST}:{port}{path}", "caBundle": bundle},
                "failurePolicy": "Fail", "timeoutSeconds": 5, "sideEffects": "None",
                "admissionReviewVersions": ["v1", "v1beta1"],
                "rules": [{"apiGroups": ["chaos-mesh.org"], "apiVersions": ["v1alpha1"],
                           "operations": ["CREATE", "UPDATE"], "resources": resources}]}

    api = "admissionregistration.k8s.io/v1"
    return [
        {"apiVersion": api, "kind": "MutatingWebhookConfiguration", "metadata": {"name": MUTATING},
         "webhooks": [hook(f"m{k}.kb.io", f"/mutate-chaos-mesh-org-v1alpha1-{k}", [k]) for k in kinds]},
        {"apiVersion": api, "kind": "ValidatingWebhookConfiguration", "metadata": {"name": VALIDATING},
         "webhooks": [hook(f"v{k}.kb.io", f"/validate-chaos-mesh-org-v1alpha1-{k}", [k]) for k in kinds]},
        {"apiVersion": api, "kind": "ValidatingWebhookConfiguration", "metadata": {"name": VALIDATING_AUTH},
         "webhooks": [hook("vauth.kb.io", "/validate-auth", list(kinds))]},
    ]


@dataclass
class ChaosMesh(Controllers):
    """Chaos Mesh's controller-manager, cluster-scoped, its listeners on 127.0.0.1 ports."""

    cp: ControlPlane
    bin_dir: Path
    directory: Path
    ports: dict[str, int] = field(default_factory=dict, init=False)
    """The listeners it is given: ``metrics`` and ``webhook``."""
    webhooks_registered: bool = field(default=False, init=False)

    def start(self) -> ChaosMesh:
        self.cp.apply_crds(self.bin_dir / "crds" / "crd.yaml")
        certs = self.directory / "certs"
        ca = self_signed(certs, "chaos-mesh-webhook")
        self.ports = {"metrics": free_port(), "webhook": free_port()}
        # streaming lists fail against Debian's etcd 3.4 (docs/testing.md): off, as for Flux and KEDA
        kubeconfig = client_kubeconfig(self.cp, USER, self.directory / "kubeconfig")
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "HOME": str(self.directory),
               "KUBE_FEATURE_WatchListClient": "false",
               "METRICS_HOST": LOCALHOST, "METRICS_PORT": str(self.ports["metrics"]),
               "WEBHOOK_HOST": LOCALHOST, "WEBHOOK_PORT": str(self.ports["webhook"]), "CERTS_DIR": str(certs),
               "PPROF_ADDR": "0", "ENABLE_LEADER_ELECTION": "false", "CLUSTER_SCOPED": "true",
               "SECURITY_MODE": "true"}
        self.procs = [ManagedProcess("chaos-controller-manager", [str(self.bin_dir / "chaos-controller-manager")],
                                     self.directory / "chaos-controller-manager.log", env=env,
                                     cwd=self.directory).start()]
        wait_until(lambda: self._alive_and(port_open(self.ports["webhook"])), 60, 0.1,
                   what="Chaos Mesh's webhook server on 127.0.0.1")
        self.cp.kubectl("apply", "-f", "-", input=json.dumps(
            {"apiVersion": "v1", "kind": "List", "items": webhook_configurations(self.ports["webhook"], ca)}))
        self.webhooks_registered = True
        return self

    def _alive_and(self, ok: bool) -> bool:
        self.check_alive()
        return ok

    def wait_ready(self, timeout: float = 90) -> None:
        """The PodChaos controller has started its workers (the manager's log says so)."""
        self.wait_workers("Chaos Mesh's PodChaos controller started", "podchaos", timeout)

    def stop(self) -> None:
        """Unregister the webhooks (nothing admits chaos-mesh.org objects through a stopped server), then stop."""
        if self.webhooks_registered:
            for kind, name in (("mutatingwebhookconfiguration", MUTATING),
                               ("validatingwebhookconfiguration", VALIDATING),
                               ("validatingwebhookconfiguration", VALIDATING_AUTH)):
                self.cp.kubectl("delete", kind, name, "--ignore-not-found", check=False)
            self.webhooks_registered = False
        super().stop()
