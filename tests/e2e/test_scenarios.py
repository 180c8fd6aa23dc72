"""Promote, rollback and approval on a real cluster (images: a tiny HTTP server everyone can pull)."""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

from devenv.localenv.procs import ManagedProcess, wait_until

from .conftest import _kubectl

IMAGE = "registry.k8s.io/e2e-test-images/agnhost:2.53"


def kubectl(ns: str, *args: str, input: str | None = None) -> str:
    cmd = _kubectl()
    assert cmd is not None
    return subprocess.run([cmd, "-n", ns, *args], input=input, capture_output=True, text=True, check=True).stdout


def manifest(name: str, args: list[str], steps: list[dict[str, Any]]) -> str:
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
           "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]}}
    mro = {"apiVersion": "modelrollout.io/v1alpha1", "kind": "ModelRollout", "metadata": {"name": name},
           "spec": {"replicas": 2, "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [
                        {"name": "model", "image": IMAGE, "args": args, "ports": [{"containerPort": 8080}],
                         "readinessProbe": {"httpGet": {"path": "/", "port": 8080}}}]}},
                    "traffic": {"service": {"name": name}},
                    "strategy": {"canary": {"steps": steps}}, "progressDeadlineSeconds": 300}}
    return json.dumps(svc) + "\n---\n" + json.dumps(mro)


def status(ns: str, name: str) -> dict[str, Any]:
    return dict(json.loads(kubectl(ns, "get", "mro", name, "-o", "json")).get("status") or {})


def wait_phase(ns: str, name: str, phase: str, timeout: float = 300) -> dict[str, Any]:
    return wait_until(lambda: (s := status(ns, name)).get("phase") == phase and s, timeout, 0.5,
                      what=f"{name} phase {phase}")


def test_promote_abort_approve(e2e_namespace: str, e2e_operator: ManagedProcess | None) -> None:
    ns = e2e_namespace
    steps = [{"setWeight": 50}, {"approval": {"reason": "e2e"}}, {"setWeight": 100}]
    kubectl(ns, "apply", "-f", "-", input=manifest("e2e", ["netexec", "--http-port=8080"], steps))
    wait_phase(ns, "e2e", "Succeeded")
    kubectl(ns, "apply", "-f", "-", input=manifest("e2e", ["netexec", "--http-port=8080", "--delay-shutdown=1"],
                                                   steps))
    st = wait_phase(ns, "e2e", "AwaitingApproval")
    kubectl(ns, "annotate", "mro", "e2e", "modelrollout.io/abort=true")
    st = wait_phase(ns, "e2e", "RolledBack")
    assert "aborted by user" in st["message"]
    kubectl(ns, "annotate", "mro", "e2e", "modelrollout.io/retry=true", "--overwrite")
    st = wait_phase(ns, "e2e", "AwaitingApproval")
    kubectl(ns, "annotate", "mro", "e2e", f"modelrollout.io/approve={st['approval']['token']}", "--overwrite")
    started = time.monotonic()
    wait_phase(ns, "e2e", "Succeeded", timeout=max(60.0, 300 - (time.monotonic() - started)))
