"""The local environment itself: real control plane (kwok nodes) and real Prometheus."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from devenv.localenv.controlplane import ControlPlane
from devenv.localenv.procs import LOCALHOST, free_port, wait_until
from devenv.localenv.prometheus import JOB, Prometheus

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: registry.invalid/web:1
        ports: [{containerPort: 8080}]
"""


def test_deployment_becomes_available_on_kwok_nodes(control_plane: ControlPlane, namespace: str) -> None:
    control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=DEPLOYMENT)
    started = time.monotonic()

    def available() -> int | None:
        out = control_plane.kubectl("get", "deployment", "web", "-n", namespace, "-o", "json").stdout
        n = json.loads(out).get("status", {}).get("availableReplicas", 0)
        return n if n == 3 else None

    wait_until(available, 60, what="deployment web availableReplicas == 3")
    print(f"3-replica Deployment available after {time.monotonic() - started:.2f}s")

    pods = json.loads(control_plane.kubectl("get", "pods", "-n", namespace, "-l", "app=web", "-o", "json").stdout)
    kwok_nodes = set(
        control_plane.kubectl(
            "get", "nodes", "-l", "type=kwok", "-o", "jsonpath={.items[*].metadata.name}"
        ).stdout.split()
    )
    assert len(kwok_nodes) == 2
    assert len(pods["items"]) == 3
    for pod in pods["items"]:
        assert pod["spec"]["nodeName"] in kwok_nodes
        assert pod["status"]["phase"] == "Running"
        assert pod["status"].get("podIP")


def test_audit_log_records_requests(control_plane: ControlPlane, namespace: str) -> None:
    control_plane.kubectl("create", "configmap", "audited", "-n", namespace)

    def seen() -> bool:
        with control_plane.audit_log.open() as f:
            for line in f:
                if '"audited"' in line:
                    event = json.loads(line)
                    ref = event.get("objectRef", {})
                    if ref.get("namespace") == namespace and event["verb"] == "create":
                        return bool(event["level"] == "Metadata" and event["user"]["username"])
        return False

    wait_until(seen, 10, what="audit event for configmap create")


@pytest.fixture
def exporter() -> Iterator[tuple[str, Gauge]]:
    registry = CollectorRegistry()
    gauge = Gauge("localenv_test_value", "A value the test sets", registry=registry)
    port = free_port()
    server, thread = start_http_server(port, addr=LOCALHOST, registry=registry)
    try:
        yield f"{LOCALHOST}:{port}", gauge
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_prometheus_scrapes_exporter_and_survives_restart(prometheus: Prometheus, exporter: tuple[str, Gauge]) -> None:
    address, gauge = exporter
    gauge.set(42)
    prometheus.set_targets([(address, {"track": "stable"})])

    expr = f'localenv_test_value{{job="{JOB}",track="stable"}}'
    prometheus.wait_for(expr, lambda r: len(r) == 1 and float(r[0]["value"][1]) == 42, timeout=30)

    url = prometheus.url
    prometheus.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.build_opener(urllib.request.ProxyHandler({})).open(f"{url}/-/ready", timeout=2)

    gauge.set(7)
    prometheus.start()
    assert prometheus.url == url
    prometheus.wait_for(expr, lambda r: len(r) == 1 and float(r[0]["value"][1]) == 7, timeout=30)
    assert prometheus.query_value(f"up{{job='{JOB}',instance='{address}'}}") == 1.0
