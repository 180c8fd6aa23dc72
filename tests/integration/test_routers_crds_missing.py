"""A rollout over Gateway API or Istio on a cluster without their CRDs: phase Invalid with what to install, and
the operator goes on working (no crash, no traceback, other rollouts proceed).

The CRDs are cluster-wide and test_routers_gateway_istio.py installs them into the shared control plane, so
this module is named to run before it (alphabetically: ``crds_missing`` < ``gateway_istio``) and skips, saying
why, when they are already installed (e.g. when run after it, or with -p randomly).
"""

from __future__ import annotations

import pytest

from devenv.localenv.controlplane import ControlPlane
from devenv.localenv.procs import ManagedProcess

from .kube import Kubectl
from .manifests import rollout, service

ROUTE_CRDS = ("httproutes.gateway.networking.k8s.io", "virtualservices.networking.istio.io")


@pytest.fixture
def no_route_crds(crd: ControlPlane) -> None:
    installed = [n for n in ROUTE_CRDS if crd.kubectl("get", "crd", n, check=False).returncode == 0]
    if installed:
        pytest.skip(f"CRDs {installed} are already installed in this control plane (a module that installs them "
                    "ran first); the missing-CRD case needs a control plane without them")


def test_rollouts_over_missing_crds_are_invalid_and_the_operator_keeps_working(
        k: Kubectl, no_route_crds: None, operator: ManagedProcess) -> None:
    k.apply(service("gw"))
    k.apply(rollout("gw", traffic={"service": {"name": "gw"}, "httpRoute": {"name": "gw"},
                                   "mirror": {"percent": 10}}))
    k.apply(service("mesh"))
    k.apply(rollout("mesh", traffic={"service": {"name": "mesh"},
                                     "virtualService": {"name": "mesh", "route": "primary"}}))
    gw = k.wait_phase("gw", "Invalid", 60)["message"]
    assert gw.startswith("spec.traffic.httpRoute: ")
    assert "install Gateway API CRDs (gateway.networking.k8s.io/v1 HTTPRoute)" in gw
    mesh = k.wait_phase("mesh", "Invalid", 60)["message"]
    assert mesh.startswith("spec.traffic.virtualService: ")
    assert "install Istio CRDs (networking.istio.io/v1 VirtualService)" in mesh
    assert any(e["reason"] == "PhaseInvalid" and e["type"] == "Warning" for e in k.events("gw"))
    # the operator is alive and still releases a rollout that needs no CRD
    k.apply(service("plain"))
    k.apply(rollout("plain", replicas=2))
    k.wait_phase("plain", "Succeeded", 90)
    operator.check_alive()
    assert "Traceback" not in operator.log.read_text(errors="replace")
