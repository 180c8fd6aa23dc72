"""Properties of the pure core under random specs and random observation sequences."""

from __future__ import annotations

import json
import math
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelrollout.api import Phase
from modelrollout.core.actions import ResetRouter, SetWeight
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


def finished(plan: list[dict[str, Any]], before: Any, d: Any, now: Any) -> bool:
    """Every step was done before the promoting decision, or is one that decision completed: the step it was at
    (a weight it set, a pause that had elapsed, a gate or analysis it passed) and then only steps that need no
    world change (pauses with no time left from their start in this decision, approved gates, analysis passes)."""
    at = before.current_step
    if at is None:
        return False
    rest = plan[at:]
    for j, step in enumerate(rest):
        if "setWeight" in step and j > 0:
            return False  # a later weight needs its own write and its pods
        if "pause" in step and step["pause"].get("duration"):
            seconds = int(step["pause"]["duration"].removesuffix("s"))
            started = before.step_started_at if j == 0 else now
            if started is None or (now - started).total_seconds() < seconds:
                return False
    events = [e.reason for e in d.events]
    return not rest or "Promoting" in events


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
            assert finished(plan, status_before, d, w.now) or any(h.outcome == "Promoted" for h in d.status.history)
            # the latest verdicts (possibly made by this decision) all pass, or a person promoted it
            assert (d.status.analysis and all(m.verdict.value == "Pass" for m in d.status.analysis)) or any(
                h.outcome == "Promoted" for h in d.status.history) or status_before.traffic_started_at is None
        if d.status.phase is Phase.ROLLED_BACK:
            assert w.router is None, "rollback always ends at 100% stable"
        w.now += timedelta(seconds=d.requeue_after if d.requeue_after else 3)


@st.composite
def any_steps(draw: Any) -> list[dict[str, Any]]:
    """Step lists the spec validation would refuse too (no traffic at all, weights going down): the core alone
    must keep the promotion invariant."""
    kinds = st.sampled_from(["weight", "zero", "pause", "gate", "analysis", "header"])
    out: list[dict[str, Any]] = []
    for kind in draw(st.lists(kinds, min_size=1, max_size=7)):
        if kind == "weight":
            out.append({"setWeight": draw(st.integers(1, 100))})
        elif kind == "zero":
            out.append({"setWeight": 0})
        elif kind == "pause":
            out.append({"pause": {"duration": f"{draw(st.integers(1, 30))}s"}})
        elif kind == "gate":
            out.append({"approval": {"reason": "r"}})
        elif kind == "analysis":
            out.append({"analysis": {"passes": draw(st.integers(1, 3))}})
        else:
            out.append({"setHeaderRoute": {"name": "X-Canary", "value": "1"}})
    return out


PROMOTIONS: list[int] = []
"""Evidence at every promotion the property saw (a test below checks that some were seen at all)."""

ANSWERS = st.sampled_from([1.0, 0.2, None, math.nan, math.inf, -math.inf])
MOVES = st.one_of(
    st.tuples(st.just("new-sample"), ANSWERS),  # a new scrape with this value
    st.tuples(st.just("same-sample"), ANSWERS),  # the value changes but no new scrape (an impossible answer too)
    st.tuples(st.just("tick"), st.integers(1, 20)),
    st.tuples(st.just("approve"), st.none()),
    st.tuples(st.just("promote"), st.none()),
)


@settings(max_examples=200, deadline=None)
@given(any_steps(), st.lists(MOVES, max_size=80), st.integers(1, 3))
def test_promotion_needs_fresh_passing_evidence_while_the_canary_has_traffic(
        plan: list[dict[str, Any]], moves: list[tuple[str, Any]], passes: int) -> None:
    """Promotion implies ``passes`` evaluations in a row in which every metric passed, each on a sample newer than
    the one before and than the start of traffic, taken while the canary received traffic; no status value is
    ever non-finite."""
    analysis = {"interval": "1s", "prometheus": {"address": "http://p:9090"}, "passes": passes,
                "inconclusive": {"limit": 3, "action": "pause"},
                "metrics": [{"name": "c", "query": "q", "min": 0.5}]}
    w = World(spec_dict(plan, replicas=2, traffic={"service": {"name": "m"}, "httpRoute": {"name": "m"}},
                        analysis=analysis, rollback={"scaleDownDelay": "0s"}))
    w.metric_values["c"] = 1.0
    w.run(until=lambda w: w.status.phase is Phase.SUCCEEDED)
    first_stable = w.status.stable_revision
    w.set_image("img:2")
    sampled = w.now
    w.metric_times["c"] = sampled
    evidence = 0  # the oracle: counted evaluations in a row, by the invariant's own words
    last_judged: Any = None
    for move, arg in [*moves, *[("new-sample", 1.0), ("approve", None), ("tick", 2)] * 15]:
        if move in ("new-sample", "same-sample"):
            w.metric_values["c"] = arg
            if move == "new-sample":
                sampled = w.now
                w.metric_times["c"] = sampled
        elif move == "tick":
            w.now += timedelta(seconds=arg)
        elif move == "approve" and w.status.approval is not None:
            w.annotations["modelrollout.io/approve"] = w.status.approval.token
        elif move == "promote" and w.status.current_step is not None:
            w.annotations["modelrollout.io/promote"] = f"{w.status.canary_revision}-{w.status.current_step}"
        before = w.status
        receiving = w.router is not None and (w.router > 0 or w.features.any)
        d = w.step()
        json.dumps(d.status.model_dump(mode="json"), allow_nan=False)  # nothing non-finite in status
        for e in d.events:
            assert "nan" not in e.message.lower().replace("nanos", "") or "NaN" in e.message
        if d.status.last_analysis_at != before.last_analysis_at and before.canary_revision == w.revision:
            value = w.metric_values.get("c")
            ok = value is not None and math.isfinite(value) and value >= 0.5
            fresh = (last_judged is None or sampled > last_judged) and (
                before.traffic_started_at is not None and sampled > before.traffic_started_at)
            if not ok:
                evidence = 0
            elif fresh and receiving:
                evidence += 1
            if value is not None and math.isfinite(value) and fresh:
                last_judged = sampled  # a finite answer judged: the next must be newer to count
        promoted = d.status.phase is Phase.PROMOTING or (
            d.status.stable_revision != first_stable and d.status.phase is Phase.SUCCEEDED)
        if promoted and before.phase is not Phase.PROMOTING and before.stable_revision == first_stable:
            assert evidence >= passes, (evidence, passes, d.status.message)
            PROMOTIONS.append(evidence)
        w.now += timedelta(seconds=d.requeue_after if d.requeue_after else 1)


def test_the_promotion_property_saw_promotions() -> None:
    """The property above is not vacuous: runs in the same session reached promotion (it runs first)."""
    if not PROMOTIONS:
        pytest.skip("run together with the property test")
    assert len(PROMOTIONS) >= 5
