"""The real operator against the local control plane: rollouts over a Gateway API HTTPRoute and an Istio
VirtualService (their upstream CRDs from tests/data/crds installed once, no gateway or mesh running: the test
reads what the operator wrote).

Each router: the canary weight at every step (watched on the route object), the header rule and the mirror
present during the rollout and gone after it, one write per step and one for the restore, the route restored
after an abort, and a missing route or rule as phase Invalid with the message.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devenv.localenv.controlplane import ControlPlane
from devenv.localenv.procs import ManagedProcess, wait_until

from .kube import Json, Kubectl, Watch, track_deployment, wait_audit, wait_deleted
from .manifests import rollout, service

HEADER = {"name": "X-Canary", "value": "yes"}


@dataclass(frozen=True)
class View:
    """What a router wrote into its route object, the same for both routers."""

    names: list[str | None]  # rules / http routes, in order
    backends: list[str]  # Services of the managed rule / route
    weights: list[int | None]
    mirror: tuple[str, int] | None
    pin: Any  # the header rule's / route's matches


@dataclass(frozen=True)
class Case:
    id: str
    kind: str  # kubectl resource
    plural: str  # the audit log's resource
    manifest: Callable[[str], str]
    traffic: Callable[[str], Json]
    weight_path: Callable[[str], str]
    view: Callable[[Json, str], View]


def httproute(name: str) -> str:
    return json.dumps({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": name},
        "spec": {"parentRefs": [{"name": "gateway"}], "hostnames": [f"{name}.example"], "rules": [
            {"name": "docs", "matches": [{"path": {"type": "PathPrefix", "value": "/docs"}}],
             "backendRefs": [{"name": "docs", "port": 80}]},
            {"name": "api", "matches": [{"path": {"type": "PathPrefix", "value": "/v1"}}],
             "backendRefs": [{"name": name, "port": 80}]},
        ]},
    })


def httproute_view(obj: Json, name: str) -> View:
    rules = obj["spec"]["rules"]
    managed = next(r for r in rules if r.get("name") == "api")
    mirrors = [f["requestMirror"] for f in managed.get("filters") or [] if f["type"] == "RequestMirror"]
    pin = next((r["matches"] for r in rules if r.get("name") == f"{name}-canary-header"), None)
    return View(
        names=[r.get("name") for r in rules],
        backends=[b["name"] for b in managed["backendRefs"]],
        weights=[b.get("weight") for b in managed["backendRefs"]],
        mirror=(mirrors[0]["backendRef"]["name"], mirrors[0]["percent"]) if mirrors else None,
        pin=pin,
    )


def virtualservice(name: str) -> str:
    return json.dumps({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": name},
        "spec": {"hosts": [f"{name}.example"], "gateways": ["mesh"], "http": [
            {"name": "docs", "match": [{"uri": {"prefix": "/docs"}}], "route": [{"destination": {"host": "docs"}}]},
            {"name": "primary", "match": [{"uri": {"prefix": "/v1"}}], "timeout": "30s",
             "route": [{"destination": {"host": name, "port": {"number": 80}}}]},
        ]},
    })


def virtualservice_view(obj: Json, name: str) -> View:
    http = obj["spec"]["http"]
    managed = next(r for r in http if r.get("name") == "primary")
    mirror = managed.get("mirror")
    pin = next((r["match"] for r in http if r.get("name") == f"{name}-canary-header"), None)
    return View(
        names=[r.get("name") for r in http],
        backends=[e["destination"]["host"] for e in managed["route"]],
        weights=[e.get("weight") for e in managed["route"]],
        mirror=(mirror["host"], int(managed["mirrorPercentage"]["value"])) if mirror else None,
        pin=pin,
    )


CASES = [
    Case("gatewayapi", "httproute", "httproutes", httproute, lambda n: {"httpRoute": {"name": n}},
         lambda n: f'{{.spec.rules[?(@.name=="api")].backendRefs[?(@.name=="{n}-canary")].weight}}',
         httproute_view),
    Case("istio", "virtualservice", "virtualservices", virtualservice,
         lambda n: {"virtualService": {"name": n, "route": "primary"}},
         lambda n: f'{{.spec.http[?(@.name=="primary")].route[?(@.destination.host=="{n}-canary")].weight}}',
         virtualservice_view),
]


def traffic(case: Case, name: str, **extra: Any) -> Json:
    return {"traffic": {"service": {"name": name}, **case.traffic(name), **extra}}


def view(k: Kubectl, case: Case, name: str) -> View:
    obj = k.get(case.kind, name)
    assert obj is not None, f"{case.kind} {name} not found"
    return case.view(obj, name)


def release(k: Kubectl, case: Case, name: str, manifest: str) -> str:
    for doc in (service(name), case.manifest(name), manifest):
        k.apply(doc)
    return str(k.wait_phase(name, "Succeeded", 90)["stableRevision"])


def assert_restored(k: Kubectl, case: Case, name: str, timeout: float = 60) -> View:
    """Wait until the managed rule / route routes to NAME-stable only, with no header rule and no mirror."""
    original = case.view(json.loads(case.manifest(name)), name).names

    def restored() -> View | None:
        v = view(k, case, name)
        return v if v.backends == [f"{name}-stable"] and v.mirror is None and v.names == original else None

    try:
        return wait_until(restored, timeout, 0.2, what=f"{case.kind} {name} back on {name}-stable")
    except TimeoutError:
        raise AssertionError(f"not restored: {view(k, case, name)}") from None


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_rollout_moves_the_weight_pins_the_header_mirrors_and_restores(
        k: Kubectl, operator: ManagedProcess, route_crds: ControlPlane, case: Case) -> None:
    name = f"{case.id[:3]}-steps"
    steps = [{"setWeight": 10}, {"setWeight": 30}, {"pause": {}}, {"setWeight": 60}, {"setWeight": 100}]
    spec = traffic(case, name, headerRoute=HEADER, mirror={"percent": 50})
    first = release(k, case, name, rollout(name, steps=steps, **spec))
    before = view(k, case, name)
    assert before.backends == [name] and before.mirror is None and before.pin is None, "untouched by a first release"
    with Watch(k, [case.kind, name], case.weight_path(name)) as w:
        k.apply(rollout(name, image="model:2", steps=steps, **spec))
        st = k.wait_phase(name, "AwaitingApproval", 90)
        during = view(k, case, name)
        k.annotate(name, "modelrollout.io/approve", st["approval"]["token"])
        k.wait(name, lambda s: s.get("phase") == "Succeeded" and s.get("stableRevision") != first, 120)
        assert_restored(k, case, name)
        wait_until(lambda: w.values and w.values[-1] == "", 10, 0.1, what="the watch sees the restore")
    # while paused at 30: both tracks weighted, the header rule before the managed one, the mirror on it
    assert during.backends == [f"{name}-stable", f"{name}-canary"]
    assert during.weights == [70, 30]
    assert during.mirror == (f"{name}-canary", 50)
    managed = "api" if case.id == "gatewayapi" else "primary"
    assert during.names == ["docs", f"{name}-canary-header", managed]
    if case.id == "gatewayapi":
        assert during.pin == [{"path": {"type": "PathPrefix", "value": "/v1"},
                               "headers": [{"type": "Exact", "name": "X-Canary", "value": "yes"}]}]
    else:
        assert during.pin == [{"uri": {"prefix": "/v1"}, "headers": {"x-canary": {"exact": "yes"}}}]
    # every step's weight, in order, then nothing for the canary after promotion
    assert w.distinct() == ["", "10", "30", "60", "100", ""], w.values
    # one write per weight step and one for the restore; the object is updated in place, never recreated
    writes = wait_audit(k.cp, k.ns, case.plural, name, lambda w: len(w) >= 6)
    assert writes == ["create"] + ["update"] * 5, writes


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_abort_restores_the_route_in_one_write(
        k: Kubectl, operator: ManagedProcess, route_crds: ControlPlane, case: Case) -> None:
    name = f"{case.id[:3]}-abort"
    steps = [{"setWeight": 40}, {"pause": {}}, {"setWeight": 100}]
    spec = {**traffic(case, name, headerRoute=HEADER, mirror={"percent": 20}), "rollback": {"scaleDownDelay": "1s"}}
    release(k, case, name, rollout(name, steps=steps, **spec))
    k.apply(rollout(name, image="model:2", steps=steps, **spec))
    k.wait_phase(name, "AwaitingApproval", 90)
    during = view(k, case, name)
    assert during.weights == [60, 40] and during.mirror == (f"{name}-canary", 20) and during.pin is not None
    k.annotate(name, "modelrollout.io/abort", "true")
    st = k.wait_phase(name, "RolledBack", 90)
    assert "aborted by user" in str(st.get("message", "")) + json.dumps(st.get("history"))
    after = assert_restored(k, case, name)
    assert after.pin is None
    assert wait_audit(k.cp, k.ns, case.plural, name, lambda w: len(w) >= 3) == ["create", "update", "update"]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_missing_route_object_is_invalid_with_the_message(
        k: Kubectl, operator: ManagedProcess, route_crds: ControlPlane, case: Case) -> None:
    name = f"{case.id[:3]}-gone"
    k.apply(service(name))
    k.apply(rollout(name, **traffic(case, name)))
    st = k.wait_phase(name, "Invalid", 60)
    field = "httpRoute" if case.id == "gatewayapi" else "virtualService"
    kind = "HTTPRoute" if case.id == "gatewayapi" else "VirtualService"
    assert st["message"] == f"spec.traffic.{field}.name: {kind} {name} not found in namespace {k.ns}"
    # checked again at every reconcile: once the object exists, a touch of the rollout resumes it
    k.apply(case.manifest(name))
    k.annotate(name, "example.com/touched", "1")
    k.wait_phase(name, "Succeeded", 90)


@pytest.mark.parametrize(("case", "ref", "words"), [
    (CASES[0], {"httpRoute": {"name": "{n}", "rule": "nope"}},
     ["spec.traffic.httpRoute.rule: HTTPRoute {n} has no rule named nope", "['docs', 'api']"]),
    (CASES[0], {"httpRoute": {"name": "{n}", "rule": "docs"}}, ["routes to ['docs']"]),
    (CASES[1], {"virtualService": {"name": "{n}", "route": "nope"}},
     ["spec.traffic.virtualService.route: VirtualService {n} has no http route named nope"]),
], ids=["gatewayapi-no-such-rule", "gatewayapi-rule-to-another-service", "istio-no-such-route"])
def test_missing_rule_is_invalid_with_the_message(
        k: Kubectl, operator: ManagedProcess, route_crds: ControlPlane, case: Case, ref: Json,
        words: list[str]) -> None:
    name = f"{case.id[:3]}-norule"
    k.apply(service(name))
    k.apply(case.manifest(name))
    k.apply(rollout(name, traffic={"service": {"name": name}, **json.loads(json.dumps(ref).replace("{n}", name))}))
    message = k.wait_phase(name, "Invalid", 60)["message"]
    for word in words:
        assert word.replace("{n}", name) in message


def base_rollout(**traffic_spec: Any) -> Json:
    out: Json = json.loads(rollout("cel"))
    out["spec"]["traffic"] = {"service": {"name": "cel"}, **traffic_spec}
    return out


@pytest.mark.parametrize(("case", "traffic_spec", "words"), [
    ("mirror with NGINX", {"ingress": {"name": "a"}, "mirror": {"percent": 10}},
     ["spec.traffic.mirror needs a router that mirrors", "NGINX canary annotations"]),
    ("mirror with the Service router", {"mirror": {"percent": 10}}, ["spec.traffic.mirror"]),
    ("two routers", {"ingress": {"name": "a"}, "httpRoute": {"name": "b"}}, ["at most one router"]),
    ("header without a header router", {"headerRoute": HEADER}, ["spec.traffic.headerRoute needs"]),
    ("mirror percent over 100", {"httpRoute": {"name": "b"}, "mirror": {"percent": 150}}, ["percent"]),
    ("virtualService without route", {"virtualService": {"name": "b"}}, ["route"]),
], ids=["mirror-nginx", "mirror-service", "two-routers", "header-service", "mirror-percent", "vs-no-route"])
def test_crd_rejects_router_features_the_router_lacks(k: Kubectl, case: str, traffic_spec: Json,
                                                       words: list[str]) -> None:
    res = k.cp.kubectl("-n", k.ns, "apply", "--dry-run=server", "-f", "-",
                       input=json.dumps(base_rollout(**traffic_spec)), check=False)
    assert res.returncode != 0, f"{case}: accepted"
    for word in words:
        assert word in res.stderr, f"{case}: {word!r} not in {res.stderr}"


@pytest.mark.parametrize("traffic_spec", [
    {"httpRoute": {"name": "b", "rule": "api"}, "headerRoute": HEADER, "mirror": {"percent": 10}},
    {"virtualService": {"name": "b", "route": "primary"}, "headerRoute": HEADER, "mirror": {}},
], ids=["gatewayapi", "istio"])
def test_crd_accepts_header_and_mirror_with_gateway_api_and_istio(k: Kubectl, traffic_spec: Json) -> None:
    k.run("apply", "--dry-run=server", "-f", "-", input=json.dumps(base_rollout(**traffic_spec)))


# --------------------------------------------------------------------------- setHeaderRoute / setMirror steps


def gate(k: Kubectl, name: str, step: int, timeout: float = 90) -> Json:
    """Wait for the approval gate at ``step`` (an indefinite pause), return the status."""
    def waiting(s: Json) -> bool:
        return s.get("phase") == "AwaitingApproval" and (s.get("approval") or {}).get("step") == step

    return k.wait(name, waiting, timeout, what=f"{name} waiting at step {step}")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_header_and_mirror_steps_add_then_remove_them_one_write_each(
        k: Kubectl, operator: ManagedProcess, route_crds: ControlPlane, case: Case) -> None:
    name = f"{case.id[:3]}-hdr"
    steps = [{"setWeight": 20}, {"setHeaderRoute": HEADER}, {"setMirror": {"percent": 40}}, {"pause": {}},
             {"setHeaderRoute": {}}, {"setMirror": {"percent": 0}}, {"pause": {}}, {"setWeight": 100}]
    spec = traffic(case, name)
    first = release(k, case, name, rollout(name, steps=steps, **spec))
    k.apply(rollout(name, image="model:2", steps=steps, **spec))
    st = gate(k, name, 3)
    pinned = view(k, case, name)
    k.annotate(name, "modelrollout.io/approve", st["approval"]["token"])
    st = gate(k, name, 6)
    unpinned = view(k, case, name)
    k.annotate(name, "modelrollout.io/approve", st["approval"]["token"])
    k.wait(name, lambda s: s.get("phase") == "Succeeded" and s.get("stableRevision") != first, 120)
    restored = assert_restored(k, case, name)
    # after the setHeaderRoute and setMirror steps: pinned and mirrored at weight 20
    assert pinned.weights == [80, 20] and pinned.mirror == (f"{name}-canary", 40) and pinned.pin is not None
    # after their removal steps: still weight 20, no header rule, no mirror
    assert unpinned.weights == [80, 20] and unpinned.mirror is None and unpinned.pin is None
    assert f"{name}-canary-header" not in unpinned.names
    assert restored.pin is None
    # one write per route change: 20, +header, +mirror, -header, -mirror, 100, then the restore
    writes = wait_audit(k.cp, k.ns, case.plural, name, lambda w: len(w) >= 8)
    assert writes == ["create"] + ["update"] * 7, writes
    reasons = [e["reason"] for e in k.events(name)]
    assert "SetHeaderRoute" in reasons and "SetMirror" in reasons


def test_nginx_header_step_sets_then_removes_canary_by_header(k: Kubectl, operator: ManagedProcess) -> None:
    from .manifests import ingress

    name = "ngx-hdr"
    steps = [{"setWeight": 10}, {"setHeaderRoute": HEADER}, {"pause": {}}, {"setHeaderRoute": {}}, {"pause": {}},
             {"setWeight": 100}]
    spec = {"traffic": {"service": {"name": name}, "ingress": {"name": name}}}
    k.apply(service(name) + "\n---\n" + ingress(name, f"{name}-stable"))
    k.apply(rollout(name, steps=steps, **spec))
    first = str(k.wait_phase(name, "Succeeded", 90)["stableRevision"])
    k.apply(rollout(name, image="model:2", steps=steps, **spec))

    def canary_annotations() -> dict[str, str]:
        ing = k.get("ingress", f"{name}-canary")
        assert ing is not None
        return dict(ing["metadata"].get("annotations") or {})

    st = gate(k, name, 2)
    on = canary_annotations()
    k.annotate(name, "modelrollout.io/approve", st["approval"]["token"])
    st = gate(k, name, 4)
    off = canary_annotations()
    k.annotate(name, "modelrollout.io/approve", st["approval"]["token"])
    k.wait(name, lambda s: s.get("phase") == "Succeeded" and s.get("stableRevision") != first, 120)
    prefix = "nginx.ingress.kubernetes.io/"
    assert on[prefix + "canary-by-header"] == "X-Canary" and on[prefix + "canary-by-header-value"] == "yes"
    assert on[prefix + "canary-weight"] == "10"
    assert prefix + "canary-by-header" not in off and prefix + "canary-by-header-value" not in off
    assert off[prefix + "canary-weight"] == "10"
    assert k.get("ingress", f"{name}-canary") is None


def with_strategy(strategy: Json, **traffic_spec: Any) -> Json:
    out = base_rollout(**traffic_spec)
    out["spec"]["strategy"] = strategy
    return out


@pytest.mark.parametrize(("strategy", "traffic_spec", "words"), [
    ({"canary": {"steps": [{"setMirror": {"percent": 10}}]}}, {"ingress": {"name": "a"}},
     ["setMirror needs a router that mirrors"]),
    ({"canary": {"steps": [{"setHeaderRoute": HEADER}]}}, {}, ["setHeaderRoute needs a router that routes by header"]),
    ({"canary": {"steps": [{"setHeaderRoute": {"name": "X-Canary"}}]}}, {"httpRoute": {"name": "b"}},
     ["set both name and value"]),
    ({"canary": {"steps": [{"setMirror": {"percent": 101}}]}}, {"httpRoute": {"name": "b"}}, ["percent"]),
    ({"blueGreen": {}}, {}, ["spec.strategy.blueGreen needs a router that switches by weight"]),
    ({"blueGreen": {}, "canary": {"steps": [{"setWeight": 100}]}}, {"httpRoute": {"name": "b"}},
     ["set exactly one of canary or blueGreen"]),
    ({"blueGreen": {"prePromotionAnalysis": {"passes": 2}}}, {"httpRoute": {"name": "b"}},
     ["prePromotionAnalysis needs spec.analysis"]),
], ids=["mirror-step-nginx", "header-step-service", "half-header", "mirror-over-100", "bluegreen-service",
        "two-strategies", "bluegreen-analysis-without-metrics"])
def test_crd_rejects_steps_and_strategies_the_router_cannot_do(k: Kubectl, strategy: Json, traffic_spec: Json,
                                                                words: list[str]) -> None:
    res = k.cp.kubectl("-n", k.ns, "apply", "--dry-run=server", "-f", "-",
                       input=json.dumps(with_strategy(strategy, **traffic_spec)), check=False)
    assert res.returncode != 0, "accepted"
    for word in words:
        assert word in res.stderr, f"{word!r} not in {res.stderr}"


# --------------------------------------------------------------------------- blue-green


def blue_green(name: str, **bg: Any) -> Json:
    return {"strategy": {"blueGreen": bg}, **traffic(CASES[0], name, headerRoute=HEADER)}


def test_blue_green_previews_at_full_size_then_switches_once_and_promotes(
        k: Kubectl, operator: ManagedProcess, route_crds: ControlPlane) -> None:
    case, name = CASES[0], "bg-promote"
    spec = blue_green(name, approval={"reason": "look at the preview"}, scaleDownDelay="3s")
    first = release(k, case, name, rollout(name, **spec))
    with Watch(k, ["deployment", f"{name}-{first}"], "{.spec.replicas} {.spec.template.spec.containers[0].image}") \
            as blue, Watch(k, [case.kind, name], case.weight_path(name)) as weights:
        k.apply(rollout(name, image="model:2", **spec))
        st = k.wait_phase(name, "AwaitingApproval", 90)
        green = track_deployment(k, name, "canary")
        assert green is not None and green["spec"]["replicas"] == 4 and green["status"].get("readyReplicas") == 4
        preview = view(k, case, name)
        assert "preview" in st["message"] and f"{name}-canary" in st["message"]
        k.annotate(name, "modelrollout.io/approve", st["approval"]["token"])
        switched = k.wait(name, lambda s: s.get("currentWeight") == 100, 60)
        during = view(k, case, name)
        done = k.wait(name, lambda s: s.get("phase") == "Succeeded" and s.get("stableRevision") != first, 120)
        assert_restored(k, case, name)
        # green, previewed and switched to, is the stable Deployment now; blue is deleted at the switch
        promoted = track_deployment(k, name, "stable")
        assert promoted is not None and promoted["metadata"]["name"] == f"{name}-{st['canaryRevision']}"
        assert done["stableRevision"] == st["canaryRevision"] and promoted["spec"]["replicas"] == 4
        assert promoted["spec"]["template"]["spec"]["containers"][0]["image"] == "model:2"
        wait_deleted(k, "deployment", f"{name}-{first}", 30)
    # the preview: green at full size behind NAME-canary, reached only by the pinned header; blue takes all else
    assert preview.weights == [100, 0] and preview.pin is not None
    # one switch of 100%, then the promotion's restore; never an intermediate weight
    assert [v for v in weights.distinct() if v] == ["0", "100"], weights.values
    assert during.weights == [0, 100]
    assert switched["phase"] in ("Progressing", "Paused")
    # blue stayed at full size on the old image until it was deleted: never scaled, never given the new template
    assert [v for v in blue.distinct() if v] == ["4 model:1"], blue.values
    assert {"Preview", "Switched"} <= {e["reason"] for e in k.events(name)}


def test_blue_green_breach_after_the_switch_switches_back_in_one_write(
        k: Kubectl, operator: ManagedProcess, route_crds: ControlPlane, prometheus: Any, tmp_path: Path) -> None:
    from .exporters import exporters
    from .test_analysis import COMPAT, analysis

    case, name = CASES[0], "bg-back"
    spec = {**blue_green(name, prePromotionAnalysis={"passes": 2}, scaleDownDelay="10m"),
            "analysis": analysis(prometheus, {"name": "api-compatibility", "query": COMPAT, "min": 0.99}),
            "rollback": {"scaleDownDelay": "1s"}}
    with exporters(prometheus, tmp_path, name) as ex:
        first = release(k, case, name, rollout(name, **spec))
        with Watch(k, ["deployment", f"{name}-{first}"], "{.spec.replicas}") as blue:
            k.apply(rollout(name, image="model:2", **spec))
            st = k.wait(name, lambda s: s.get("currentWeight") == 100 and s.get("phase") == "Paused", 120)
            assert any(h["outcome"] == "AnalysisPassed" for h in st["history"])
            mark = len(audit_writes_of(k, case, name))
            ex["canary"].set_score(0.5)
            st = k.wait_phase(name, "RolledBack", 60)
            assert_restored(k, case, name)
    assert st["stableRevision"] == first and "api-compatibility" in st["message"]
    writes = wait_audit(k.cp, k.ns, case.plural, name, lambda w: len(w) > mark)[mark:]
    assert writes == ["update"], writes  # the switch-back: one write
    assert set(v for v in blue.values if v) == {"4"}, blue.values  # blue never scaled: no scale-up needed
    green = track_deployment(k, name, "canary")  # the rolled-back green is kept, at 0
    assert green is not None and green["spec"]["replicas"] == 0


def audit_writes_of(k: Kubectl, case: Case, name: str) -> list[str]:
    from .kube import audit_writes

    return audit_writes(k.cp, k.ns, case.plural, name)
