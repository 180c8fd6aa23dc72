"""The pure rule-editing functions of the Gateway API and Istio routers, and which router a spec selects."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from modelrollout import api
from modelrollout.core import routing
from modelrollout.core.steps import Features
from modelrollout.core.validate import validate
from modelrollout.routers import httproute as gw
from modelrollout.routers import istio
from modelrollout.routers.httproute import Tracks

T = Tracks(root="chat", stable="chat-stable", canary="chat-canary", namespace="ml")
HEADER = ("X-Canary", "yes")


def spec_with(**traffic: Any) -> api.ModelRolloutSpec:
    return api.ModelRolloutSpec.model_validate({
        "selector": {"matchLabels": {"app": "chat"}},
        "template": {"metadata": {"labels": {"app": "chat"}}, "spec": {"containers": [{"name": "m", "image": "x"}]}},
        "traffic": {"service": {"name": "chat"}, **traffic},
        "strategy": {"canary": {"steps": [{"setWeight": 50}]}},
    })


# --------------------------------------------------------------------------- selection and validation


@pytest.mark.parametrize(("traffic", "name"), [
    ({}, "service"),
    ({"ingress": {"name": "chat"}}, "nginx"),
    ({"httpRoute": {"name": "chat"}}, "gatewayapi"),
    ({"virtualService": {"name": "chat", "route": "primary"}}, "istio"),
])
def test_router_name(traffic: dict[str, Any], name: str) -> None:
    assert routing.selected(spec_with(**traffic).traffic).name == name


def test_every_router_name_is_registered() -> None:
    from modelrollout.routers.registry import ROUTERS

    assert set(ROUTERS) == {"service", "nginx", "gatewayapi", "istio"}
    assert all(key == router.name for key, router in ROUTERS.items())
    assert set(ROUTERS) == {kind.name for kind in routing.KINDS}


def test_the_router_table_names_the_traffic_fields() -> None:
    fields = api.Traffic.model_fields
    for kind in routing.KINDS:
        if kind.field is None:
            assert kind is routing.DEFAULT
        else:
            assert kind.attribute in fields and fields[kind.attribute].alias == kind.field


@pytest.mark.parametrize("feature", ["header", "mirror", "blue_green"])
def test_what_a_router_cannot_do_names_it(feature: routing.Feature) -> None:
    lacking = [kind for kind in routing.KINDS if not kind.has(feature)]
    assert lacking
    assert all(kind.title in routing.CANNOT[feature] for kind in lacking)


@pytest.mark.parametrize(("traffic", "words"), [
    ({"ingress": {"name": "a"}, "httpRoute": {"name": "b"}}, ["at most one router", "ingress and httpRoute"]),
    ({"httpRoute": {"name": "b"}, "virtualService": {"name": "c", "route": "r"}}, ["at most one router"]),
    ({"mirror": {"percent": 10}}, ["spec.traffic.mirror", "cannot mirror"]),
    ({"ingress": {"name": "a"}, "mirror": {"percent": 10}}, ["spec.traffic.mirror", "NGINX"]),
    ({"headerRoute": {"name": "X-A", "value": "1"}}, ["spec.traffic.headerRoute"]),
])
def test_router_features_a_router_lacks_are_rejected(traffic: dict[str, Any], words: list[str]) -> None:
    problem = validate(spec_with(**traffic))
    assert problem is not None
    for word in words:
        assert word in problem


@pytest.mark.parametrize("traffic", [
    {"httpRoute": {"name": "b"}, "headerRoute": {"name": "X-A", "value": "1"}, "mirror": {"percent": 5}},
    {"virtualService": {"name": "c", "route": "r"}, "headerRoute": {"name": "X-A", "value": "1"}, "mirror": {}},
    {"ingress": {"name": "a"}, "headerRoute": {"name": "X-A", "value": "1"}},
])
def test_router_features_a_router_has_are_accepted(traffic: dict[str, Any]) -> None:
    assert validate(spec_with(**traffic)) is None


def test_mirror_percent_bounds_and_default() -> None:
    assert spec_with(httpRoute={"name": "r"}, mirror={}).traffic.mirror == api.MirrorSpec(percent=100)
    with pytest.raises(ValidationError):
        spec_with(httpRoute={"name": "r"}, mirror={"percent": 101})


def test_traffic_cel_rules_are_in_the_crd() -> None:
    from modelrollout.crdgen import render

    text = render()
    assert "spec.traffic.mirror needs a router that mirrors (httpRoute or virtualService)" in text
    assert "has(self.virtualService)" in text


# --------------------------------------------------------------------------- Gateway API HTTPRoute


def httproute(**rule: Any) -> dict[str, Any]:
    """An HTTPRoute spec as the apiserver returns it (defaults filled in), with a rule before the managed one."""
    return {
        "parentRefs": [{"name": "gw"}],
        "hostnames": ["chat.example"],
        "rules": [
            {"name": "docs", "matches": [{"path": {"type": "PathPrefix", "value": "/docs"}}],
             "backendRefs": [{"group": "", "kind": "Service", "name": "docs", "port": 80, "weight": 1}]},
            {"matches": [{"path": {"type": "PathPrefix", "value": "/v1"}, "method": "POST"}],
             "backendRefs": [{"group": "", "kind": "Service", "name": "chat", "port": 8080, "weight": 1}],
             **rule},
        ],
    }


def test_httproute_finds_the_first_rule_routing_to_root_or_stable_or_the_named_rule() -> None:
    spec = httproute(name="api")
    assert gw.find_rule(spec, T, None) == 1
    assert gw.find_rule(spec, T, "api") == 1
    assert gw.find_rule(spec, T, "docs") == 0
    assert gw.find_rule(spec, T, "nope") is None
    assert gw.rule_problem("chat", spec, T, None) is None
    assert gw.rule_problem("chat", spec, T, "api") is None


def test_httproute_problems_name_the_field() -> None:
    spec = httproute(name="api")
    problem = gw.rule_problem("chat", spec, T, "nope")
    assert problem is not None and problem.startswith("spec.traffic.httpRoute.rule: HTTPRoute chat has no rule named")
    assert "['docs', 'api']" in problem
    problem = gw.rule_problem("chat", spec, T, "docs")
    assert problem is not None and "routes to ['docs']" in problem
    other = Tracks(root="other", stable="other-stable", canary="other-canary")
    problem = gw.rule_problem("chat", spec, other, None)
    assert problem is not None and problem.startswith("spec.traffic.httpRoute.name:")
    assert "other-stable" in problem


def test_httproute_weight_edits_only_the_managed_rule() -> None:
    spec = httproute(name="api", filters=[{"type": "RequestHeaderModifier",
                                           "requestHeaderModifier": {"set": [{"name": "a", "value": "b"}]}}])
    before = copy.deepcopy(spec)
    out = gw.route_with_weight(spec, T, None, 30, Features())
    assert spec == before, "pure: the input is not changed"
    assert out["rules"][0] == spec["rules"][0]
    assert out["hostnames"] == spec["hostnames"] and out["parentRefs"] == spec["parentRefs"]
    managed = out["rules"][1]
    assert managed["backendRefs"] == [
        {"name": "chat-stable", "group": "", "kind": "Service", "port": 8080, "weight": 70},
        {"name": "chat-canary", "group": "", "kind": "Service", "port": 8080, "weight": 30},
    ]
    assert managed["filters"] == spec["rules"][1]["filters"]
    assert managed["matches"] == spec["rules"][1]["matches"]
    assert gw.route_weight(out, T, None) == 30
    assert gw.route_weight(spec, T, None) is None
    # the next step finds the rule by NAME-stable and edits it again
    again = gw.route_with_weight(out, T, None, 60, Features())
    assert [r["weight"] for r in again["rules"][1]["backendRefs"]] == [40, 60]
    assert len(again["rules"]) == 2


def test_httproute_header_rule_is_inserted_before_the_managed_rule_and_mirror_filter_added() -> None:
    spec = httproute(name="api")
    out = gw.route_with_weight(spec, T, "api", 10, Features(header=HEADER, mirror_percent=25))
    assert [r.get("name") for r in out["rules"]] == ["docs", "chat-canary-header", "api"]
    pin = out["rules"][1]
    assert pin["matches"] == [{"path": {"type": "PathPrefix", "value": "/v1"}, "method": "POST",
                               "headers": [{"type": "Exact", "name": "X-Canary", "value": "yes"}]}]
    assert pin["backendRefs"] == [{"name": "chat-canary", "group": "", "kind": "Service", "port": 8080, "weight": 1}]
    assert "filters" not in pin, "the header rule does not mirror"
    assert out["rules"][2]["filters"] == [{"type": "RequestMirror", "requestMirror": {
        "backendRef": {"name": "chat-canary", "group": "", "kind": "Service", "port": 8080}, "percent": 25}}]
    # idempotent: the same step again changes nothing (one header rule, one mirror filter)
    assert gw.route_with_weight(out, T, "api", 10, Features(header=HEADER, mirror_percent=25)) == out
    assert gw.route_weight(out, T, "api") == 10


def test_httproute_weight_zero_with_header_or_mirror_still_reaches_the_canary() -> None:
    pinned = gw.route_with_weight(httproute(), T, None, 0, Features(header=HEADER))
    assert gw.route_weight(pinned, T, None) == 0
    mirrored = gw.route_with_weight(httproute(), T, None, 0, Features(mirror_percent=100))
    assert gw.route_weight(mirrored, T, None) == 0
    plain = gw.route_with_weight(httproute(), T, None, 0, Features())
    assert gw.route_weight(plain, T, None) is None


def test_httproute_header_rule_without_matches_and_with_an_existing_header_match() -> None:
    managed = {"backendRefs": [{"name": "chat", "port": 80}],
               "matches": [{"headers": [{"type": "Exact", "name": "x-canary", "value": "old"},
                                        {"name": "Tenant", "value": "a"}]}]}
    rule = gw.header_rule(managed, T, HEADER)
    assert rule["matches"][0]["headers"] == [{"name": "Tenant", "value": "a"},
                                             {"type": "Exact", "name": "X-Canary", "value": "yes"}]
    bare = gw.header_rule({"backendRefs": [{"name": "chat", "port": 80}]}, T, HEADER)
    assert bare["matches"] == [{"headers": [{"type": "Exact", "name": "X-Canary", "value": "yes"}]}]


def test_httproute_reset_restores_stable_in_one_edit() -> None:
    user_mirror = {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "audit", "port": 80}}}
    spec = httproute(name="api", filters=[user_mirror])
    rolled = gw.route_with_weight(spec, T, "api", 50, Features(header=HEADER, mirror_percent=10))
    out = gw.route_reset(rolled, T, "api")
    assert [r.get("name") for r in out["rules"]] == ["docs", "api"]
    assert out["rules"][1]["backendRefs"] == [{"name": "chat-stable", "group": "", "kind": "Service", "port": 8080}]
    assert out["rules"][1]["filters"] == [user_mirror], "the user's own mirror is kept"
    assert gw.route_weight(out, T, "api") is None
    assert gw.route_reset(out, T, "api") == out


def test_httproute_header_rule_is_recognised_without_its_name() -> None:
    """CRDs before v1.4 prune rules[].name: the rule routing only to the canary is still the operator's."""
    rolled = gw.route_with_weight(httproute(), T, None, 20, Features(header=HEADER))
    for rule in rolled["rules"]:
        rule.pop("name", None)
    assert gw.route_weight(rolled, T, None) == 20
    again = gw.route_with_weight(rolled, T, None, 40, Features(header=HEADER))
    assert len(again["rules"]) == 3
    assert len(gw.route_reset(rolled, T, None)["rules"]) == 2


def test_httproute_missing_rule_raises() -> None:
    with pytest.raises(ValueError, match="no rule to manage"):
        gw.route_with_weight(httproute(), T, "nope", 10, Features())


# --------------------------------------------------------------------------- Istio VirtualService


def virtualservice(**route: Any) -> dict[str, Any]:
    return {
        "hosts": ["chat.example"],
        "gateways": ["mesh"],
        "http": [
            {"name": "health", "match": [{"uri": {"exact": "/healthz"}}],
             "route": [{"destination": {"host": "health"}}]},
            {"name": "primary", "match": [{"uri": {"prefix": "/v1"}}], "timeout": "30s",
             "route": [{"destination": {"host": "chat.ml.svc.cluster.local", "port": {"number": 80}}}], **route},
        ],
    }


@pytest.mark.parametrize(("host", "ok"), [("chat", True), ("chat.ml", True), ("chat.ml.svc.cluster.local", True),
                                          ("chat.other.svc.cluster.local", False), ("chatter", False)])
def test_istio_host_matching(host: str, ok: bool) -> None:
    assert istio.host_is(host, "chat", "ml") is ok


def test_istio_weight_edits_only_the_named_route() -> None:
    spec = virtualservice()
    before = copy.deepcopy(spec)
    out = istio.vs_with_weight(spec, T, "primary", 25, Features())
    assert spec == before
    assert out["http"][0] == spec["http"][0] and out["hosts"] == spec["hosts"]
    assert out["http"][1]["route"] == [
        {"destination": {"host": "chat-stable", "port": {"number": 80}}, "weight": 75},
        {"destination": {"host": "chat-canary", "port": {"number": 80}}, "weight": 25},
    ]
    assert out["http"][1]["timeout"] == "30s"
    assert istio.vs_weight(out, T, "primary") == 25
    assert istio.vs_weight(spec, T, "primary") is None


def test_istio_header_route_before_and_mirror_on_the_managed_route() -> None:
    out = istio.vs_with_weight(virtualservice(), T, "primary", 10, Features(header=HEADER, mirror_percent=30))
    assert [r["name"] for r in out["http"]] == ["health", "chat-canary-header", "primary"]
    pin = out["http"][1]
    assert pin["match"] == [{"uri": {"prefix": "/v1"}, "headers": {"x-canary": {"exact": "yes"}}}]
    assert pin["route"] == [{"destination": {"host": "chat-canary", "port": {"number": 80}}}]
    assert pin["timeout"] == "30s" and "mirror" not in pin
    managed = out["http"][2]
    assert managed["mirror"] == {"host": "chat-canary", "port": {"number": 80}}
    assert managed["mirrorPercentage"] == {"value": 30}
    assert istio.vs_with_weight(out, T, "primary", 10, Features(header=HEADER, mirror_percent=30)) == out
    assert istio.vs_weight(out, T, "primary") == 10
    zero = istio.vs_with_weight(virtualservice(), T, "primary", 0, Features(mirror_percent=5))
    assert istio.vs_weight(zero, T, "primary") == 0


def test_istio_reset_restores_stable_in_one_edit() -> None:
    rolled = istio.vs_with_weight(virtualservice(), T, "primary", 60, Features(header=HEADER, mirror_percent=30))
    out = istio.vs_reset(rolled, T, "primary")
    assert [r["name"] for r in out["http"]] == ["health", "primary"]
    assert out["http"][1]["route"] == [{"destination": {"host": "chat-stable", "port": {"number": 80}}}]
    assert not set(istio.MIRROR_KEYS) & set(out["http"][1])
    assert istio.vs_weight(out, T, "primary") is None
    assert istio.vs_reset(out, T, "primary") == out


def test_istio_keeps_a_user_mirror_on_reset_and_refuses_to_add_a_second_one() -> None:
    spec = virtualservice(mirror={"host": "audit"}, mirrorPercentage={"value": 1})
    assert istio.route_problem("chat", spec, T, "primary", Features()) is None
    problem = istio.route_problem("chat", spec, T, "primary", Features(mirror_percent=10))
    assert problem is not None and problem.startswith("spec.traffic.mirror:")
    rolled = istio.vs_with_weight(spec, T, "primary", 10, Features())
    assert istio.vs_reset(rolled, T, "primary")["http"][1]["mirror"] == {"host": "audit"}


def test_istio_problems_name_the_field() -> None:
    problem = istio.route_problem("chat", virtualservice(), T, "nope", Features())
    assert problem is not None and problem.startswith("spec.traffic.virtualService.route: VirtualService chat")
    assert "['health', 'primary']" in problem
    problem = istio.route_problem("chat", virtualservice(), T, "health", Features())
    assert problem is not None and "routes to ['health']" in problem
    with pytest.raises(ValueError):
        istio.vs_with_weight(virtualservice(), T, "nope", 10, Features())
