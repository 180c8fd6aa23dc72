"""A real KEDA operator (v2.21.0, hack/keda/build.sh; tests/integration/keda.py) and a ScaledObject whose
``scaleTargetRef`` is a ModelRollout: KEDA resolves the target through its scale subresource (the ScaledObject's
status says so, Ready; a target without /scale, a ConfigMap, is refused the same way a ModelRollout without the
subresource would be), generates ``keda-hpa-NAME`` on the ModelRollout with the ScaledObject's bounds, and that HPA,
driven by the controller-manager's HPA controller, scales the rollout; KEDA's own write through /scale
(``paused-replicas``) reaches ``spec.replicas`` too.

KEDA's metrics server is not run (it would take the ``external.metrics.k8s.io`` APIService): the test's own
external-metrics server (tests/integration/metricsapi.py) answers the metric KEDA's HPA asks for."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devenv.localenv.controlplane import ControlPlane
from devenv.localenv.procs import LOCALHOST, ManagedProcess, wait_until

from .conftest import built_or_unavailable, running
from .keda import KEDA_VERSION, Keda, listening
from .kube import Json, Kubectl, audit_events
from .manifests import rollout, service
from .metricsapi import ExternalMetrics, external_metrics_api
from .test_autoscaling import scale_subresource, wait_sizes

MIN, MAX = 2, 7
MANAGED_BY = "app.kubernetes.io/managed-by"
AT_ONCE = {"stabilizationWindowSeconds": 0, "policies": [{"type": "Pods", "value": 20, "periodSeconds": 1}]}
"""The generated HPA's behavior (KEDA copies it from the ScaledObject): no 5 min downscale window in a test."""


@pytest.fixture(scope="module")
def metrics(crd: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExternalMetrics]:
    with external_metrics_api(crd, tmp_path_factory.mktemp("external-metrics")) as m:
        yield m


@pytest.fixture(scope="module")
def keda_bin() -> Path:
    return built_or_unavailable("keda", f"KEDA {KEDA_VERSION} binary")


@pytest.fixture
def keda(crd: ControlPlane, keda_bin: Path, namespace: str, tmp_path: Path) -> Iterator[Keda]:
    with running(Keda(crd, keda_bin, tmp_path / "keda", namespace)) as kd:
        yield kd


def scaled_object(name: str, api_version: str, kind: str, **annotations: str) -> str:
    """A ScaledObject on ``kind`` ``name`` with a cron trigger (needs nothing outside the machine; its window, New
    Year's first minute, is never open during a test: KEDA's own activation stays out of the way)."""
    return json.dumps({
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"scaleTargetRef": {"apiVersion": api_version, "kind": kind, "name": name},
                 "minReplicaCount": MIN, "maxReplicaCount": MAX, "pollingInterval": 1,
                 "advanced": {"horizontalPodAutoscalerConfig": {
                     "behavior": {"scaleUp": AT_ONCE, "scaleDown": AT_ONCE}}},
                 "triggers": [{"type": "cron", "metadata": {"timezone": "Etc/UTC", "start": "0 0 1 1 *",
                                                             "end": "1 0 1 1 *", "desiredReplicas": "5"}}]},
    })


def condition(obj: Json, kind: str) -> Json:
    return next((c for c in obj.get("status", {}).get("conditions", []) if c.get("type") == kind), {})


def wait_scaled_object(k: Kubectl, keda: Keda, name: str, check: Callable[[Json], Any], what: str,
                       timeout: float = 60) -> Json:
    """The ScaledObject once ``check`` holds for it (KEDA's log and the status in the failure otherwise)."""
    last: list[Json] = [{}]

    def ok() -> bool:
        keda.check_alive()
        last[0] = k.get("scaledobject", name) or {}
        return bool(check(last[0]))
    try:
        wait_until(ok, timeout, 0.2, what=what)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; ScaledObject {name}: {json.dumps(last[0].get('status'), indent=1)}\n"
                             f"{keda.logs()}") from None
    return last[0]


def test_real_keda_generates_the_hpa_on_the_rollout_through_its_scale_subresource(
        k: Kubectl, operator: ManagedProcess, keda: Keda, metrics: ExternalMetrics) -> None:
    # KEDA listens where it is told and nowhere else (no webhook server, no profiler): metrics, probes, gRPC
    want = sorted(f"{LOCALHOST}:{port}" for port in keda.ports.values())
    assert wait_until(lambda: listening(keda.proc.pid) == want if keda.proc else False, 30, 0.2,
                      what=f"KEDA listening on {want}")
    k.apply(service("kd"))
    k.apply(rollout("kd", replicas=3))
    k.wait_phase("kd", "Succeeded", 90)

    # a target without /scale (a ConfigMap, which exists): KEDA refuses it, as it would a ModelRollout without the
    # subresource; no HPA, no target kind in status
    k.run("create", "configmap", "cm")
    k.apply(scaled_object("cm", "v1", "ConfigMap"))
    refused = wait_scaled_object(k, keda, "cm", lambda so: condition(so, "Ready").get("status") == "False",
                                 "ScaledObject cm Ready False")
    ready = condition(refused, "Ready")
    assert ready["reason"] == "ScaledObjectCheckFailed", refused["status"]
    assert ready["message"].startswith("ScaledObject doesn't have correct scaleTargetRef specification"), ready
    assert "scaleTargetKind" not in refused["status"] and "originalReplicaCount" not in refused["status"]
    wait_until(lambda: any("doesn't expose /scale subresource" in e.get("message", "") for e in json.loads(k.run(
        "get", "events", "--field-selector", "involvedObject.name=cm", "-o", "json"))["items"]),
        30, 0.5, what="KEDA's Event: the ConfigMap doesn't expose /scale")

    k.apply(scaled_object("kd", "modelrollout.io/v1alpha1", "ModelRollout"))
    so = wait_scaled_object(k, keda, "kd", lambda so: condition(so, "Ready").get("status") == "True"
                            and so["status"].get("hpaName"), "ScaledObject kd Ready with its HPA")
    status = so["status"]
    # KEDA read the target's /scale (originalReplicaCount is the Scale's spec.replicas: set only after a successful
    # GET of the subresource) and recorded the kind it resolved through the REST mapping
    assert status["scaleTargetKind"] == "modelrollout.io/v1alpha1.ModelRollout", status
    assert status["scaleTargetGVKR"] == {"group": "modelrollout.io", "version": "v1alpha1", "kind": "ModelRollout",
                                         "resource": "modelrollouts"}, status
    assert status["originalReplicaCount"] == 3, status
    assert status["hpaName"] == "keda-hpa-kd", status
    assert k.get("hpa", "keda-hpa-cm") is None

    hpa = k.get("hpa", "keda-hpa-kd")
    assert hpa is not None
    spec = hpa["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "modelrollout.io/v1alpha1", "kind": "ModelRollout", "name": "kd"}
    assert (spec["minReplicas"], spec["maxReplicas"]) == (MIN, MAX), spec
    assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 0, spec
    assert hpa["metadata"]["labels"][MANAGED_BY] == "keda-operator", hpa["metadata"]
    owner = hpa["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner.get("controller")) == ("ScaledObject", "kd", True), owner
    (metric,) = spec["metrics"]
    assert metric["type"] == "External", metric
    ext = metric["external"]
    assert ext["metric"]["selector"] == {"matchLabels": {"scaledobject.keda.sh/name": "kd"}}, ext
    assert ext["metric"]["name"].startswith("s0-cron-"), ext

    # KEDA's HPA, run by the controller-manager, scales the rollout: up with the metric, down to its minimum
    # (the HPA controller's external-metrics client asks for the name in lower case, as KEDA's metrics server serves it)
    per_pod, served = float(ext["target"]["averageValue"]), ext["metric"]["name"].lower()
    metrics.set(k.ns, served, str(int(per_pod * 6)))
    wait_sizes(k, "kd", 6, 6, None)
    assert scale_subresource(k, "kd")["status"]["replicas"] == 6
    metrics.set(k.ns, served, str(int(per_pod)))
    wait_sizes(k, "kd", MIN, MIN, None)

    # KEDA's own write through /scale: paused at 4 replicas, KEDA removes its HPA and sets the scale itself
    k.run("annotate", "scaledobject", "kd", "autoscaling.keda.sh/paused-replicas=4")
    wait_scaled_object(k, keda, "kd", lambda so: condition(so, "Paused").get("status") == "True", "ScaledObject paused")
    wait_sizes(k, "kd", 4, 4, None)
    assert k.get("hpa", "keda-hpa-kd") is None
    agents = {ev.get("userAgent", "").split("/")[0]
              for ev in audit_events(k.cp, k.ns, "modelrollouts", "kd", subresources=True)
              if (ev.get("objectRef") or {}).get("subresource") == "scale"}
    assert "keda-operator" in agents, agents
    assert k.status("kd")["phase"] == "Succeeded"
