"""A tiny ``external.metrics.k8s.io/v1beta1`` server the tests control, registered with the local apiserver as an
APIService, so the controller-manager's real HPA controller reads the values a test sets.

It listens on 127.0.0.1 only, over TLS with a self-signed certificate (the APIService says
``insecureSkipTLSVerify``). The APIService points at an ``ExternalName`` Service named ``127.0.0.1``: the
apiserver's aggregator dials ExternalName services at that host and the APIService's port directly, so no
kube-proxy, node or endpoint is needed. Only the values a test sets are answered; an unknown metric is a 404.
"""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from devenv.localenv.controlplane import ControlPlane, self_signed
from devenv.localenv.procs import LOCALHOST, wait_until

GROUP = "external.metrics.k8s.io"
VERSION = "v1beta1"
APISERVICE = f"{VERSION}.{GROUP}"
SERVICE_NAMESPACE = "kube-system"
SERVICE_NAME = "modelrollout-test-external-metrics"


class ExternalMetrics:
    """Metric values by (namespace, name), read by the HPA controller through the apiserver."""

    def __init__(self) -> None:
        self._values: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()
        self.reads = 0

    def set(self, namespace: str, name: str, value: str) -> None:
        """The value (a Kubernetes quantity) the metric has from now on."""
        with self._lock:
            self._values[(namespace, name)] = value

    def get(self, namespace: str, name: str) -> str | None:
        with self._lock:
            self.reads += 1
            return self._values.get((namespace, name))


def _handler(metrics: ExternalMetrics) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _json(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0].rstrip("/")
            base = f"/apis/{GROUP}/{VERSION}"
            if path == base:
                self._json(200, {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{GROUP}/{VERSION}",
                                 "resources": [{"name": "*", "singularName": "", "namespaced": True,
                                                "kind": "ExternalMetricValueList", "verbs": ["get"]}]})
                return
            parts = path[len(base):].strip("/").split("/") if path.startswith(base + "/") else []
            if len(parts) == 3 and parts[0] == "namespaces":
                value = metrics.get(parts[1], parts[2])
                if value is not None:
                    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                    self._json(200, {"kind": "ExternalMetricValueList", "apiVersion": f"{GROUP}/{VERSION}",
                                     "metadata": {}, "items": [{"metricName": parts[2], "metricLabels": {},
                                                                "timestamp": now, "value": value}]})
                    return
            self._json(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                             "code": 404, "message": f"{self.path} not found"})

    return Handler


def _self_signed(directory: Path) -> ssl.SSLContext:
    self_signed(directory, "external-metrics")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(directory / "tls.crt", directory / "tls.key")
    return ctx


@contextmanager
def external_metrics_api(cp: ControlPlane, directory: Path) -> Iterator[ExternalMetrics]:
    """Serve external metrics on 127.0.0.1 and register them as the ``v1beta1.external.metrics.k8s.io``
    APIService (Available before this yields); unregistered afterwards."""
    metrics = ExternalMetrics()
    server = ThreadingHTTPServer((LOCALHOST, 0), _handler(metrics))
    server.daemon_threads = True
    server.socket = _self_signed(directory).wrap_socket(server.socket, server_side=True)
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    manifest = {"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": SERVICE_NAME, "namespace": SERVICE_NAMESPACE},
         "spec": {"type": "ExternalName", "externalName": LOCALHOST}},
        {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService", "metadata": {"name": APISERVICE},
         "spec": {"group": GROUP, "version": VERSION, "groupPriorityMinimum": 100, "versionPriority": 100,
                  "insecureSkipTLSVerify": True,
                  "service": {"namespace": SERVICE_NAMESPACE, "name": SERVICE_NAME, "port": port}}},
    ]}
    try:
        cp.kubectl("apply", "-f", "-", input=json.dumps(manifest))
        wait_until(lambda: cp.kubectl("wait", "--for=condition=Available", f"apiservice/{APISERVICE}",
                                      "--timeout=5s", check=False).returncode == 0,
                   60, 0.5, what=f"APIService {APISERVICE} Available")
        yield metrics
    finally:
        cp.kubectl("delete", "apiservice", APISERVICE, "--ignore-not-found", check=False)
        cp.kubectl("delete", "service", SERVICE_NAME, "-n", SERVICE_NAMESPACE, "--ignore-not-found", check=False)
        server.shutdown()
        server.server_close()
