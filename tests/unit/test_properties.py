"""Properties of the pure core under random specs and random observation sequences."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from modelrollout.api import Phase
from modelrollout.core.model import ResetRouter, SetWeight
from modelrollout.core.phases import allowed
from modelrollout.core.weights import canary_replicas, stable_replicas_for_ratio

from .sim import World, spec_dict


@given(st.integers(1, 1000), st.integers(0, 100))
def test_weight_math(replicas: int, weight: int) -> None:
    c = canary_replicas(replicas, weight)
    assert 0 <= c <= replicas
    assert c + stable_replicas_for_ratio(replicas, weight) == replicas
    assert (c == 0) == (weight == 0)
    assert c * 100 >= replicas * weight  # enough replicas to carry the weight


@st.composite
def steps(draw: Any) -> list[dict[str, Any]]:
    n = draw(st.integers(1, 8))
    weights = sorted(draw(st.lists(st.integers(0, 100), min_size=n, max_size=n)))
    out: list[dict[str, Any]] = []
    for w in weights:
        out.append({"setWeight": w})
        extra = draw(st.sampled_from(["none", "pause", "gate", "analysis"]))
        if extra == "pause":
            out.append({"pause": {"duration": f"{draw(st.integers(1, 90))}s"}})
        elif extra == "gate":
            out.append({"approval": {"reason": "r"}})
        elif extra == "analysis":
            out.append({"analysis": {"passes": draw(st.integers(1, 3))}})
    return out


EVENTS = st.sampled_from(["tick", "approve", "bad-approve", "unready", "ready", "metric-ok", "metric-bad",
                          "metric-none", "abort"])


@settings(max_examples=150, deadline=None)
@given(steps(), st.lists(EVENTS, max_size=120), st.integers(1, 10))
def test_invariants_under_random_observations(plan: list[dict[str, Any]], events: list[str], replicas: int) -> None:
    analysis = {"interval": "5s", "prometheus": {"address": "http://p:9090"},
                "inconclusive": {"limit": 2, "action": "pause"},
                "metrics": [{"name": "c", "query": "q", "min": 0.5}]}
    w = World(spec_dict(plan, replicas=replicas, analysis=analysis, rollback={"scaleDownDelay": "0s"}))
    w.metric_values["c"] = 1.0
    w.run(until=lambda w: w.status.phase is Phase.SUCCEEDED)
    first_stable = w.status.stable_revision
    w.set_image("img:2")
    last_weight = 0
    phase = w.status.phase
    for ev in events:
        if ev == "approve" and w.status.approval is not None:
            w.annotations["modelrollout.io/approve"] = w.status.approval.token
        elif ev == "bad-approve":
            w.annotations["modelrollout.io/approve"] = "garbage"
        elif ev == "unready":
            w.canary_ready = False
        elif ev == "ready":
            w.canary_ready = True
        elif ev == "metric-ok":
            w.metric_values["c"] = 1.0
        elif ev == "metric-bad":
            w.metric_values["c"] = 0.1
        elif ev == "metric-none":
            w.metric_values["c"] = None
        elif ev == "abort":
            w.annotations["modelrollout.io/abort"] = "true"
        status_before = w.status
        d = w.step()
        assert phase is None or d.status.phase is None or allowed(phase, d.status.phase), (phase, d.status.phase)
        phase = d.status.phase
        for a in d.actions:
            if isinstance(a, SetWeight):
                assert 0 <= a.weight <= 100
                assert a.weight >= last_weight, "weights never decrease within a rollout except by reset"
                if a.weight > last_weight > 0:
                    # no weight moves up without a passing verdict (the latest, possibly made in this decision)
                    assert d.status.analysis
                    assert all(m.verdict.value == "Pass" for m in d.status.analysis)
                last_weight = a.weight
            if isinstance(a, ResetRouter):
                last_weight = 0
        if d.status.stable_revision != first_stable and status_before.stable_revision == first_stable:
            assert d.status.phase is Phase.SUCCEEDED
            assert (status_before.current_step is not None and status_before.current_step >= len(plan)) or any(
                h.outcome == "Promoted" for h in d.status.history)
            assert all(m.verdict.value == "Pass" for m in status_before.analysis) or any(
                h.outcome == "Promoted" for h in d.status.history) or status_before.traffic_started_at is None
        if d.status.phase is Phase.ROLLED_BACK:
            assert w.router is None, "rollback always ends at 100% stable"
        w.now += timedelta(seconds=d.requeue_after if d.requeue_after else 3)
