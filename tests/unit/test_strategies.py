"""setHeaderRoute / setMirror steps and the blue-green strategy, driven through the pure ``decide``."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from modelrollout import api
from modelrollout.api import Phase
from modelrollout.core.actions import EnsureCanary, ResetRouter, ScaleCanary, ScaleStable, SelectRevision, SetWeight
from modelrollout.core.approval import APPROVE
from modelrollout.core.steps import Features, features_at, steps_of
from modelrollout.core.validate import validate

from .sim import World, released, spec_dict

HTTPROUTE = {"service": {"name": "m"}, "httpRoute": {"name": "m"}}
HEADER = ("X-Canary", "always")
ANALYSIS = {"interval": "10s", "prometheus": {"address": "http://p:9090"},
            "metrics": [{"name": "ok", "query": "q", "min": 0.9}]}


def new_revision(w: World) -> None:
    w.set_image("img:2")


def test_header_and_mirror_steps_change_the_route_in_order_and_promotion_removes_them() -> None:
    steps: list[dict[str, Any]] = [
        {"setWeight": 10},
        {"setHeaderRoute": {"name": HEADER[0], "value": HEADER[1]}},
        {"setMirror": {"percent": 50}},
        {"setWeight": 30},
        {"setHeaderRoute": {}},
        {"setMirror": {"percent": 0}},
        {"setWeight": 100},
    ]
    w = released(steps, traffic=HTTPROUTE)
    new_revision(w)
    w.run(until=lambda w: w.status.phase is Phase.SUCCEEDED and w.status.stable_revision == w.revision)
    assert w.routes == [
        (10, Features()),
        (10, Features(header=HEADER)),
        (10, Features(header=HEADER, mirror_percent=50)),
        (30, Features(header=HEADER, mirror_percent=50)),
        (30, Features(mirror_percent=50)),
        (30, Features()),
        (100, Features()),
    ]
    assert w.router is None and w.features == Features()  # promotion reset the route: weight, pin and mirror gone
    reasons = [e.reason for d in w.decisions for e in d.events]
    assert reasons.count("SetHeaderRoute") == 2 and reasons.count("SetMirror") == 2


def test_a_header_pin_before_any_weight_first_gets_a_ready_canary_pod() -> None:
    w = released([{"setHeaderRoute": {"name": HEADER[0], "value": HEADER[1]}}, {"pause": {}}], traffic=HTTPROUTE)
    new_revision(w)
    w.run(until=lambda w: w.status.phase is Phase.AWAITING_APPROVAL)
    assert w.routes == [(0, Features(header=HEADER))]
    writes = [a for d in w.decisions for a in d.actions if isinstance(a, EnsureCanary | ScaleCanary | SetWeight)]
    # a pod to answer pinned requests, asked for with the Deployment, before the pin
    assert writes[0] == EnsureCanary(w.revision, 1) and isinstance(writes[1], SetWeight)
    assert w.canary is not None and w.canary.ready == 1
    # the pin holds while the rollout waits: decided again, nothing is written twice
    before = w.router_writes
    for _ in range(3):
        w.now += timedelta(seconds=5)
        w.step()
    assert w.router_writes == before


def test_rollback_removes_header_pin_and_mirror_in_the_same_reset() -> None:
    steps = [{"setWeight": 20}, {"setHeaderRoute": {"name": "X-Canary", "value": "1"}},
             {"setMirror": {"percent": 25}}, {"pause": {}}]
    w = released(steps, traffic=HTTPROUTE)
    new_revision(w)
    w.run(until=lambda w: w.status.phase is Phase.AWAITING_APPROVAL)
    assert w.features == Features(header=("X-Canary", "1"), mirror_percent=25)
    w.annotations["modelrollout.io/abort"] = "true"
    d = w.step()
    assert any(isinstance(a, ResetRouter) for a in d.actions)
    assert w.router is None and w.features == Features()


def test_spec_defaults_apply_from_the_first_route_write_and_steps_override_them() -> None:
    spec = api.ModelRolloutSpec.model_validate(spec_dict(
        [{"setWeight": 10}, {"setMirror": {"percent": 5}}, {"setHeaderRoute": {}}, {"setWeight": 50}],
        traffic={**HTTPROUTE, "headerRoute": {"name": "X-Beta", "value": "on"}, "mirror": {"percent": 100}}))
    assert [features_at(spec, i) for i in range(4)] == [
        Features(("X-Beta", "on"), 100), Features(("X-Beta", "on"), 5), Features(None, 5), Features(None, 5)]


def blue_green(**bg: Any) -> dict[str, Any]:
    return {"strategy": {"blueGreen": {"scaleDownDelay": "20s", **bg}}, "traffic": HTTPROUTE, "analysis": ANALYSIS}


def test_blue_green_previews_at_full_size_waits_for_analysis_and_approval_then_switches_once() -> None:
    w = released([], **blue_green(approval={"reason": "check the preview"},
                                  prePromotionAnalysis={"passes": 2}))
    w.metric_values["ok"] = 1.0
    new_revision(w)
    w.run(until=lambda w: w.status.phase is Phase.AWAITING_APPROVAL)
    assert w.canary is not None and (w.canary.replicas, w.canary.ready) == (4, 4)  # full size: the preview
    assert w.stable is not None and w.stable.replicas == 4  # blue keeps serving everything
    assert w.router_writes == 0 and w.status.current_weight == 0  # no traffic moved yet
    assert [h.message for h in w.status.history if h.outcome == "AnalysisPassed"] == ["2 passing evaluations"]
    assert "Service m-canary" in " ".join(e.message for d in w.decisions for e in d.events)
    approval = w.status.approval
    assert approval is not None and approval.reason == "check the preview"
    w.annotations[APPROVE] = approval.token
    w.run(until=lambda w: w.status.current_weight == 100)
    assert w.routes == [(100, Features())]  # the switch: one write of 100%
    assert w.stable is not None and w.stable.replicas == 4  # old revision still at full size
    w.step()
    assert w.status.phase is Phase.PAUSED and "switch-back" in w.status.message
    w.run(until=lambda w: w.status.phase is Phase.SUCCEEDED and w.status.stable_revision == w.revision)
    actions = [a for d in w.decisions for a in d.actions]
    promote = next(i for i, a in enumerate(actions) if isinstance(a, SelectRevision) and a.track == "stable")
    switch = next(i for i, a in enumerate(actions) if isinstance(a, SetWeight) and a.weight == 100)
    assert switch < promote
    assert not any(isinstance(a, ScaleStable) and a.replicas < 4 for a in actions)  # blue never shrank
    events = [e.reason for d in w.decisions for e in d.events]
    assert events.index("Preview") < events.index("Approved") < events.index("Switched")


def test_blue_green_scale_down_delay_holds_the_old_revision_before_promotion() -> None:
    w = released([], **blue_green())
    w.metric_values["ok"] = 1.0
    new_revision(w)
    w.run(until=lambda w: w.status.current_weight == 100)
    switched = w.now
    w.run(until=lambda w: any(isinstance(a, SelectRevision) and a.track == "stable" for a in w.decisions[-1].actions))
    assert w.now - switched >= timedelta(seconds=20)  # blue stayed at full size for scaleDownDelay
    assert w.stable is not None and w.stable.replicas == 4


def test_blue_green_breach_after_the_switch_switches_back_at_once_without_scaling_up() -> None:
    w = released([], **blue_green(scaleDownDelay="5m"))
    w.metric_values["ok"] = 1.0
    new_revision(w)
    w.run(until=lambda w: w.status.current_weight == 100)
    w.metric_values["ok"] = 0.1
    w.run(until=lambda w: w.status.phase is Phase.ROLLING_BACK)
    d = w.decisions[-1]
    assert any(isinstance(a, ResetRouter) for a in d.actions)  # traffic back in the same decision
    assert not any(isinstance(a, ScaleStable) for a in d.actions)  # blue was never scaled down
    assert w.router is None
    w.run(until=lambda w: w.status.phase is Phase.ROLLED_BACK)
    assert w.stable is not None and w.stable.revision != w.revision


def test_blue_green_without_analysis_or_approval_is_preview_switch_delay() -> None:
    spec = api.ModelRolloutSpec.model_validate(spec_dict([], strategy={"blueGreen": {}}, traffic=HTTPROUTE))
    kinds = [type(s).__name__ for s in steps_of(spec)]
    assert kinds == ["SetWeightStep", "SetWeightStep", "PauseStep"]


@pytest.mark.parametrize(("extra", "needle"), [
    ({"strategy": {"blueGreen": {}}}, "spec.strategy.blueGreen: needs a router that switches by weight"),
    ({"strategy": {"blueGreen": {}, "canary": {"steps": [{"setWeight": 10}]}}, "traffic": HTTPROUTE},
     "spec.strategy: set exactly one of canary or blueGreen"),
    ({"strategy": {}, "traffic": HTTPROUTE}, "spec.strategy: set exactly one"),
    ({"strategy": {"canary": {"steps": [{"setMirror": {"percent": 10}}]}},
      "traffic": {"service": {"name": "m"}, "ingress": {"name": "m"}}}, "setMirror needs a router that mirrors"),
    ({"strategy": {"canary": {"steps": [{"setHeaderRoute": {"name": "X", "value": "1"}}]}}},
     "setHeaderRoute needs a router that routes by header"),
    ({"strategy": {"blueGreen": {"prePromotionAnalysis": {"passes": 2}}}, "traffic": HTTPROUTE},
     "prePromotionAnalysis: needs spec.analysis"),
])
def test_validation_names_the_field(extra: dict[str, Any], needle: str) -> None:
    spec = api.ModelRolloutSpec.model_validate(spec_dict([], **extra))
    problem = validate(spec)
    assert problem is not None and needle in problem


def test_a_half_header_pin_is_refused_by_the_model() -> None:
    with pytest.raises(ValidationError):
        api.ModelRolloutSpec.model_validate(spec_dict([{"setHeaderRoute": {"name": "X-Canary", "value": ""}}],
                                                      traffic=HTTPROUTE))
