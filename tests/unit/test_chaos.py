"""Fault drills (chaos steps) in the pure core: the experiment's selector, timing, deletion and gates."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from modelrollout import api
from modelrollout.api import Phase
from modelrollout.core import chaos
from modelrollout.core.actions import DeleteDrill, EnsureDrill
from modelrollout.core.approval import ABORT, APPROVE, build_token
from modelrollout.core.plan import decide
from modelrollout.core.steps import steps_of
from modelrollout.core.validate import parse_spec

from .sim import World, released, spec_dict

ANALYSIS = {
    "interval": "10s",
    "prometheus": {"address": "http://p:9090"},
    "metrics": [{"name": "error-rate", "query": "q", "max": 0.01}],
}
KILL = {"kind": "PodChaos", "spec": {"action": "pod-kill", "mode": "one"}, "duration": "60s"}
STEPS = [{"setWeight": 25}, {"chaos": KILL}, {"setWeight": 100}]


def drilling(steps: list[dict[str, object]] = STEPS, **extra: object) -> World:
    w = released(steps, analysis=ANALYSIS, **extra)
    w.metric_values["error-rate"] = 0.001
    w.set_image("img:2")
    w.run(until=lambda w: bool(w.drills))
    return w


def test_a_drill_runs_its_duration_against_the_canary_while_analysis_watches_then_is_deleted() -> None:
    w = drilling()
    (name,) = w.drills
    started = w.now
    assert w.status.drill is not None and w.status.drill.name == name and w.status.drill.outcome == "Running"
    assert w.status.drill.weight == 25 and w.status.current_step == 1
    w.run(until=lambda w: not w.drills)
    assert w.now - started == timedelta(seconds=60)
    drill = w.status.drill
    assert drill is not None and drill.outcome == "Completed" and drill.finished_at == w.now
    (m,) = drill.metrics
    assert m.name == "error-rate" and m.evaluations == 6 and m.failures == 0 and m.max == pytest.approx(0.001)
    assert [a for a, n, _ in w.drill_log] == ["create", "delete"]
    assert "error-rate 0.001 (6 evaluations, 0 failing)" in w.status.history[-1].message or any(
        h.outcome == "DrillCompleted" and "6 evaluations" in h.message for h in w.status.history)
    w.run(until=lambda w: w.status.phase is Phase.SUCCEEDED)
    assert w.drill_log[-1][0] == "delete" and not w.drills


def test_a_restarted_operator_resumes_the_drill_with_the_remaining_time() -> None:
    w = drilling()
    started = w.now
    w.now = started + timedelta(seconds=45)
    d = w.step()  # a fresh decision from status alone, as after a restart
    assert d.requeue_after is not None and d.requeue_after <= 15
    assert not any(isinstance(a, EnsureDrill | DeleteDrill) for a in d.actions)
    assert "15s left" in w.status.message


def test_a_breach_during_the_drill_rolls_back_and_deletes_the_experiment_first() -> None:
    w = drilling()
    w.now += timedelta(seconds=10)
    w.metric_values["error-rate"] = 0.5
    d = w.step()
    assert w.status.phase is Phase.ROLLING_BACK and not w.drills
    kinds = [type(a) for a in d.actions]
    assert kinds[0] is DeleteDrill, kinds  # the first write, before stable is restored and traffic moves back
    drill = w.status.drill
    assert drill is not None and drill.outcome == "Stopped" and "error-rate" in drill.message
    assert drill.metrics[0].failures == 1 and drill.metrics[0].max == pytest.approx(0.5)
    assert any(e.reason == "DrillStopped" and e.type == "Warning" for e in d.events)


def test_abort_deletes_the_experiment_at_once() -> None:
    w = drilling()
    w.annotations[ABORT] = "true"
    w.step()
    assert not w.drills and w.status.phase is Phase.ROLLING_BACK
    assert w.status.drill is not None and w.status.drill.outcome == "Stopped"


def test_an_experiment_created_but_not_recorded_is_deleted_and_the_drill_started_afresh() -> None:
    w = drilling()
    (lost,) = w.drills
    w.status = w.status.model_copy(update={"drill": None})  # killed after the create, before the status write
    w.now += timedelta(seconds=3)
    w.step()
    assert lost not in w.drills and len(w.drills) == 1
    assert w.status.drill is not None and w.status.drill.started_at == w.now


@pytest.mark.parametrize("steps, risky, reason", [
    ([{"setWeight": 25}, {"chaos": {**KILL, "approval": {"reason": "kill a pod"}}}], None, "kill a pod"),
    ([{"setWeight": 60}, {"chaos": KILL}], 50, "chaos PodChaos at weight 60, above riskyAbove 50"),
])
def test_gated_drills_start_only_with_the_token(steps: list[dict[str, object]], risky: int | None,
                                                reason: str) -> None:
    canary: dict[str, object] = {"steps": [*steps, {"setWeight": 100}]}
    if risky is not None:
        canary["riskyAbove"] = risky
    w = released([{"setWeight": 1}], analysis=ANALYSIS)
    w.raw["strategy"]["canary"] = canary
    w.metric_values["error-rate"] = 0.001
    w.set_image("img:2")
    w.annotations[APPROVE] = build_token(w.revision, 0)  # setWeight 60 above riskyAbove is a gate of its own
    w.run(until=lambda w: w.status.phase is Phase.AWAITING_APPROVAL and w.status.current_step == 1)
    assert not w.drills and w.status.approval is not None and w.status.approval.reason == reason
    w.annotations[APPROVE] = build_token(w.revision, 1)
    w.step()
    assert len(w.drills) == 1


def test_the_experiment_selects_the_canary_pods_only() -> None:
    drill = api.ChaosSpec.model_validate({"kind": "NetworkChaos", "spec": {"action": "delay", "delay":
                                                                           {"latency": "100ms"}}, "duration": "2m"})
    body = chaos.experiment(drill, name="x", namespace="ns", pod_labels={"app": "m", "modelrollout.io/track": "canary"},
                            labels={"modelrollout.io/rollout": "m"})
    assert body["apiVersion"] == "chaos-mesh.org/v1alpha1" and body["kind"] == "NetworkChaos"
    assert body["spec"]["selector"] == {"namespaces": ["ns"],
                                        "labelSelectors": {"app": "m", "modelrollout.io/track": "canary"}}
    assert body["spec"]["duration"] == "2m" and body["spec"]["mode"] == "one"


@pytest.mark.parametrize("chaos_spec, message", [
    ({**KILL, "spec": {"action": "pod-kill", "mode": "all", "selector": {"namespaces": ["x"]}}},
     "chaos.spec.selector is set by the operator"),
    ({**KILL, "spec": {"action": "pod-kill", "mode": "one", "duration": "1h"}}, "chaos.spec.duration is set"),
    ({**KILL, "spec": {"action": "pod-kill", "mode": "one", "remoteCluster": "b"}}, "chaos.spec.remoteCluster"),
    ({"kind": "NetworkChaos", "spec": {"action": "partition", "mode": "one", "target": {"mode": "all"}},
      "duration": "1m"}, "chaos.spec.target: a NetworkChaos target selects other pods"),
])
def test_specs_reaching_other_pods_are_refused(chaos_spec: dict[str, object], message: str) -> None:
    _, problem = parse_spec(spec_dict([{"setWeight": 25}, {"chaos": chaos_spec}]))
    assert problem is not None and problem.startswith("spec.strategy.canary.steps[1].chaos") and message in problem


def test_a_drill_before_any_traffic_is_refused() -> None:
    _, problem = parse_spec(spec_dict([{"chaos": KILL}, {"setWeight": 50}]))
    assert problem is not None and "no setWeight above 0 comes before this step" in problem


def test_a_drill_not_yet_started_waits_for_a_ready_canary_pod() -> None:
    w = released(STEPS, analysis=ANALYSIS)
    w.metric_values["error-rate"] = 0.001
    w.set_image("img:2")
    w.run(until=lambda w: w.status.current_step == 1)
    assert w.canary is not None
    w.canary = replace(w.canary, ready=0)
    w.step()
    assert not w.drills and "waiting for a ready canary pod" in w.status.message


def test_the_documented_example_is_valid_and_kills_one_canary_pod_for_60s_at_25_percent() -> None:
    path = Path(__file__).resolve().parents[2] / "examples" / "chat-drill.yaml"
    doc = next(d for d in yaml.safe_load_all(path.read_text()) if d and d["kind"] == "ModelRollout")
    spec, problem = parse_spec(doc["spec"])
    assert problem is None and spec is not None
    drills = chaos.drill_steps(spec)
    i, kill = drills[0]
    assert kill.kind == "PodChaos" and kill.duration == timedelta(seconds=60) and chaos.weight_before(spec, i) == 25
    assert chaos.gate_reason(spec, i, kill) is None
    j, delay = drills[1]
    assert chaos.gate_reason(spec, j, delay) == "100 ms extra latency on half the users"
    assert len(steps_of(spec)) == 6


def test_a_metric_that_pauses_stops_the_drill_and_approving_the_resume_runs_it_again() -> None:
    analysis = {**ANALYSIS, "metrics": [{"name": "error-rate", "query": "q", "max": 0.01, "onFailure": "pause"}]}
    w = released(STEPS, analysis=analysis)
    w.metric_values["error-rate"] = 0.001
    w.set_image("img:2")
    w.run(until=lambda w: bool(w.drills))
    (first,) = w.drills
    w.now += timedelta(seconds=10)
    w.metric_values["error-rate"] = 0.5
    w.step()
    assert w.status.phase is Phase.PAUSED and not w.drills
    assert w.status.drill is not None and w.status.drill.outcome == "Stopped"
    assert w.status.approval is not None
    w.metric_values["error-rate"] = 0.001
    w.annotations[APPROVE] = w.status.approval.token
    w.now += timedelta(seconds=1)
    w.step()
    (second,) = w.drills
    assert second != first and w.status.drill is not None and w.status.drill.started_at == w.now
    w.run(until=lambda w: w.status.phase is Phase.SUCCEEDED)
    assert not w.drills


def test_a_spec_turned_invalid_mid_drill_stops_it_and_deletes_the_experiment() -> None:
    w = drilling()
    (name,) = w.drills
    obs = replace(w.observe(False), invalid="spec.strategy.canary.steps[2].setWeight: bad")
    d = decide(w.spec, w.status, obs, w.now + timedelta(seconds=5))
    assert d.status.phase is Phase.INVALID
    assert d.actions == (DeleteDrill("PodChaos", name),)
    assert d.status.drill is not None and d.status.drill.outcome == "Stopped"
    assert "steps[2].setWeight: bad" in d.status.drill.message
