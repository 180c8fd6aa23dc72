"""Autoscaling on the real control plane: ``kubectl scale mro``, and a real HorizontalPodAutoscaler driven by the
controller-manager's HPA controller from an external-metrics API the test controls (tests/integration/metricsapi.py),
scaling a ModelRollout before, during (at a weight held by a pause and at an approval gate) and after a rollout;
KEDA's ScaledObject CRD accepts a ModelRollout target, and an HPA shaped like the one KEDA generates drives it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from devenv.localenv.controlplane import ControlPlane
from devenv.localenv.procs import ManagedProcess, wait_until

from .kube import Json, Kubectl, Watch, release_behind_nginx, track_deployment, wait_audit, wait_deleted
from .manifests import nginx, rollout, service
from .metricsapi import ExternalMetrics, external_metrics_api

KEDA_CRD = Path(__file__).resolve().parents[1] / "data" / "keda" / "keda-v2.21.0-scaledobjects.yaml"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def metrics(crd: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExternalMetrics]:
    with external_metrics_api(crd, tmp_path_factory.mktemp("external-metrics")) as m:
        yield m


def hpa(name: str, metric: str, *, hpa_name: str | None = None, selector: dict[str, str] | None = None,
        labels: dict[str, str] | None = None) -> str:
    """An autoscaling/v2 HPA on ModelRollout ``name``: one replica per 10 units of the external ``metric``
    (AverageValue, as KEDA makes them), acting at once in both directions."""
    at_once = {"stabilizationWindowSeconds": 0, "policies": [{"type": "Pods", "value": 20, "periodSeconds": 1}]}
    metric_id: dict[str, Any] = {"name": metric}
    if selector:
        metric_id["selector"] = {"matchLabels": selector}
    return json.dumps({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": hpa_name or name, "labels": labels or {}},
        "spec": {"scaleTargetRef": {"apiVersion": "modelrollout.io/v1alpha1", "kind": "ModelRollout", "name": name},
                 "minReplicas": 1, "maxReplicas": 10,
                 "metrics": [{"type": "External", "external": {
                     "metric": metric_id, "target": {"type": "AverageValue", "averageValue": "10"}}}],
                 "behavior": {"scaleUp": at_once, "scaleDown": at_once}},
    })


def replicas_of(k: Kubectl, name: str, track: str) -> int:
    """spec.replicas of the Deployment running ``track``'s revision; -1 when there is none."""
    dep = track_deployment(k, name, track)
    return int(dep["spec"]["replicas"]) if dep is not None else -1


def wait_sizes(k: Kubectl, name: str, spec: int, stable: int, canary: int | None, timeout: float = 90) -> None:
    """spec.replicas, and both Deployments sized, as the HPA and then the operator make them."""
    def check() -> bool:
        mro = k.mro(name)
        return (mro["spec"]["replicas"] == spec and replicas_of(k, name, "stable") == stable
                and (canary is None or replicas_of(k, name, "canary") == canary))
    try:
        wait_until(check, timeout, 0.2, what=f"{name}: spec.replicas {spec}, stable {stable}, canary {canary}")
    except TimeoutError as exc:  # say what the HPAs and the rollout show
        hpas = k.run("get", "hpa", "-o", "jsonpath={range .items[*]}{.metadata.name}: {.status}{'\\n'}{end}",
                     check=False)
        raise AssertionError(f"{exc}; spec.replicas {k.mro(name)['spec']['replicas']}, stable "
                             f"{replicas_of(k, name, 'stable')}, canary {replicas_of(k, name, 'canary')}; "
                             f"HPAs: {hpas}; rollout: {k.status(name).get('message')}") from None


def scale_subresource(k: Kubectl, name: str) -> Json:
    out = k.cp.kubectl("get", "--raw", f"/apis/modelrollout.io/v1alpha1/namespaces/{k.ns}/modelrollouts/{name}/scale")
    return dict(json.loads(out.stdout))


def test_kubectl_scale_mro_resizes_stable_and_shows_in_get(k: Kubectl, operator: ManagedProcess) -> None:
    k.apply(service("sc"))
    k.apply(rollout("sc", replicas=2))
    k.wait_phase("sc", "Succeeded", 90)
    k.run("scale", "mro", "sc", "--replicas", "5")
    wait_sizes(k, "sc", 5, 5, None)
    k.wait(name="sc", predicate=lambda s: s.get("replicas") == 5, what="status.replicas 5")
    table = k.run("get", "mro", "sc").splitlines()
    header, row = table[0].split(), table[1].split()
    assert header[:3] == ["NAME", "PHASE", "REPLICAS"] and row[:3] == ["sc", "Succeeded", "5"], table
    scale = scale_subresource(k, "sc")
    assert scale["kind"] == "Scale" and scale["spec"]["replicas"] == 5
    assert scale["status"] == {"replicas": 5, "selector": "app=sc"}
    refused = k.cp.kubectl("-n", k.ns, "scale", "mro", "sc", "--replicas", "0", check=False)
    assert refused.returncode != 0 and "spec.replicas" in refused.stderr, refused.stderr
    assert k.mro("sc")["spec"]["replicas"] == 5
    assert k.status("sc")["phase"] == "Succeeded"


def test_hpa_scales_before_during_and_after_a_rollout_without_moving_traffic(
        k: Kubectl, operator: ManagedProcess, metrics: ExternalMetrics) -> None:
    steps = [{"setWeight": 25}, {"pause": {}}, {"setWeight": 50}, {"approval": {"reason": "half"}},
             {"setWeight": 100}]
    first = release_behind_nginx(k, "as", steps, replicas=2, **nginx("as"))
    metrics.set(k.ns, "queue_depth", "30")
    k.apply(hpa("as", "queue_depth"))
    wait_sizes(k, "as", 3, 3, None)  # before: ceil(30 / 10)

    with Watch(k, ["ingress", "-l", "modelrollout.io/track=canary"],
               "{.metadata.annotations.nginx\\.ingress\\.kubernetes\\.io/canary-weight}") as weights:
        k.apply(rollout("as", image="model:2", steps=steps, replicas=3, **nginx("as")))
        st = k.wait(name="as", predicate=lambda s: s.get("phase") == "AwaitingApproval" and s.get("currentStep") == 1,
                    timeout=90)
        token, started = st["approval"]["token"], st["stepStartedAt"]
        assert replicas_of(k, "as", "canary") == 1
        second = st["canaryRevision"]

        # during, holding weight 25 at the pause: up, then down; the gate, its token and its step stay
        metrics.set(k.ns, "queue_depth", "80")
        wait_sizes(k, "as", 8, 8, 2)  # canary ceil(8 x 25%)
        scale = scale_subresource(k, "as")
        tracks = json.loads(k.run("get", "pods", "-l", scale["status"]["selector"], "-o", "json"))["items"]
        assert {p["metadata"]["labels"]["modelrollout.io/revision"] for p in tracks} == {first, second}
        metrics.set(k.ns, "queue_depth", "20")
        wait_sizes(k, "as", 2, 2, 1)
        st = k.status("as")
        assert (st["phase"], st["currentStep"], st["currentWeight"], st["stepStartedAt"], st["approval"]["token"]) \
            == ("AwaitingApproval", 1, 25, started, token)

        # at the approval gate after weight 50
        k.annotate("as", "modelrollout.io/approve", token)
        st = k.wait(name="as", predicate=lambda s: s.get("phase") == "AwaitingApproval" and s.get("currentStep") == 3,
                    timeout=60)
        metrics.set(k.ns, "queue_depth", "60")
        wait_sizes(k, "as", 6, 6, 3)  # canary ceil(6 x 50%)
        st = k.status("as")
        assert (st["phase"], st["currentStep"], st["currentWeight"]) == ("AwaitingApproval", 3, 50)
        k.annotate("as", "modelrollout.io/approve", st["approval"]["token"])
        st = k.wait(name="as", predicate=lambda s: s.get("phase") == "Succeeded" and "canaryRevision" not in s,
                    timeout=90)
    # promoted at the size then: the canary's Deployment is the stable one; the previous stable stays at its size
    # for scaleDownDelay, then is deleted
    promoted = track_deployment(k, "as", "stable")
    assert promoted is not None and promoted["metadata"]["name"] == f"as-{second}"
    assert promoted["spec"]["replicas"] == 6 and replicas_of(k, "as", "canary") == -1
    assert (k.get("deployment", f"as-{first}") or {}).get("spec", {}).get("replicas") == 6

    # after: the new stable follows the HPA
    metrics.set(k.ns, "queue_depth", "40")
    wait_sizes(k, "as", 4, 4, None)
    wait_deleted(k, "deployment", f"as-{first}", 60)
    assert weights.distinct() == ["25", "50", "100"], weights.values
    writes = wait_audit(k.cp, k.ns, "ingresses", "as-canary", lambda w: w[-1:] == ["delete"])
    assert writes == ["patch", "patch", "patch", "delete"], writes  # one router write per weight step, no more
    outcomes = [h["outcome"] for h in st["history"]]
    assert outcomes.count("Started") == 1 and "Superseded" not in outcomes and outcomes[-1] == "Succeeded"
    assert k.status("as")["phase"] == "Succeeded"


def test_keda_scaledobject_accepts_the_rollout_and_its_hpa_shape_drives_it(
        k: Kubectl, operator: ManagedProcess, metrics: ExternalMetrics) -> None:
    cp = k.cp
    cp.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(KEDA_CRD))
    name = next(yaml.safe_load_all(KEDA_CRD.read_text()))["metadata"]["name"]
    cp.wait_established(name)
    for example in ("summarize-hpa.yaml", "summarize-keda.yaml"):  # the documented examples are accepted as they are
        k.run("apply", "--dry-run=server", "-f", str(EXAMPLES / example))
    k.apply(service("kd"))
    k.apply(rollout("kd", replicas=1))
    k.wait_phase("kd", "Succeeded", 90)
    k.apply(json.dumps({
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "kd"},
        "spec": {"scaleTargetRef": {"apiVersion": "modelrollout.io/v1alpha1", "kind": "ModelRollout", "name": "kd"},
                 "minReplicaCount": 1, "maxReplicaCount": 10,
                 "triggers": [{"type": "prometheus", "metadata": {
                     "serverAddress": "http://prometheus.monitoring:9090", "threshold": "10",
                     "query": "sum(model_queue_depth{rollout=\"kd\"})"}}]},
    }))
    assert k.get("scaledobject", "kd") is not None
    # the HPA KEDA's operator makes for that ScaledObject (keda-hpa-NAME, metric s0-prometheus selected by
    # scaledobject.keda.sh/name): without the operator, the test makes it and the apiserver serves the metric
    metrics.set(k.ns, "s0-prometheus", "35")
    k.apply(hpa("kd", "s0-prometheus", hpa_name="keda-hpa-kd", selector={"scaledobject.keda.sh/name": "kd"},
                labels={"app.kubernetes.io/managed-by": "keda-operator", "scaledobject.keda.sh/name": "kd"}))
    wait_sizes(k, "kd", 4, 4, None)
    k.wait(name="kd", predicate=lambda s: s.get("replicas") == 4 and s.get("phase") == "Succeeded",
           what="status.replicas 4")
