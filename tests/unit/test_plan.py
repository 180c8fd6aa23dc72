from __future__ import annotations

from datetime import timedelta

import pytest

from modelrollout import api
from modelrollout.api import Phase
from modelrollout.core.approval import ABORT, APPROVE, PROMOTE, RETRY, build_token
from modelrollout.core.model import ResetRouter, SetWeight
from modelrollout.core.steps import RouteState

from .sim import World, released, spec_dict

STEPS = [{"setWeight": 25}, {"pause": {"duration": "1m"}}, {"setWeight": 50}, {"setWeight": 100}]


def test_first_apply_becomes_stable_without_steps() -> None:
    w = World(spec_dict(STEPS))
    w.run(until=lambda w: w.status.phase is Phase.SUCCEEDED)
    assert w.status.stable_revision == w.revision
    assert w.weights == [] and w.canary is None
    assert w.status.history[-1].outcome == "Succeeded"
    ready = {c.type: c.status for c in w.status.conditions}
    assert ready["Ready"] == "True" and ready["Progressing"] == "False"


def test_rollout_walks_steps_then_promotes() -> None:
    w = released(STEPS)
    old = w.revision
    w.set_image("img:2")
    w.run(until=lambda w: w.status.phase is Phase.SUCCEEDED)
    assert w.weights == [25, 50, 100, 0]
    assert w.status.stable_revision == w.revision != old
    assert w.stable is not None and w.stable.revision == w.revision and w.stable.replicas == 4
    assert w.canary is not None and w.canary.replicas == 0
    assert [h.outcome for h in w.status.history][-2:] == ["Started", "Succeeded"]


def test_canary_is_scaled_and_ready_before_weight_moves() -> None:
    w = released(STEPS)
    w.set_image("img:2")
    w.canary_ready = False
    for _ in range(10):
        w.step()
        w.now += timedelta(seconds=1)
    assert w.weights == [] and w.canary is not None and w.canary.replicas == 1
    assert "waiting for canary pods, 0/1 ready" in w.status.message


def test_timed_pause_holds_for_its_duration_and_resumes_with_remaining_time() -> None:
    w = released(STEPS)
    w.set_image("img:2")
    w.run(until=lambda w: w.status.phase is Phase.PAUSED)
    started = w.now
    d = w.step()
    assert d.requeue_after == pytest.approx(60, abs=1)
    w.now = started + timedelta(seconds=45)
    d = w.step()
    assert w.status.phase is Phase.PAUSED and d.requeue_after == pytest.approx(15, abs=1)
    w.now = started + timedelta(seconds=61)
    w.step()
    assert w.status.current_step == 2


def test_indefinite_pause_waits_for_the_token() -> None:
    w = released([{"setWeight": 20}, {"pause": {}}, {"setWeight": 100}])
    w.set_image("img:2")
    w.run(until=lambda w: w.status.phase is Phase.AWAITING_APPROVAL)
    token = build_token(w.revision, 1)
    assert w.status.approval is not None and w.status.approval.token == token
    assert f"modelrollout.io/approve={token}" in w.status.approval.command
    for _ in range(5):
        w.step()
    assert w.status.phase is Phase.AWAITING_APPROVAL and w.weights == [20]
    w.annotations[APPROVE] = build_token("0000000000", 1)
    d = w.step()
    assert w.status.phase is Phase.AWAITING_APPROVAL
    assert any(e.reason == "ApprovalRejected" and token in e.message for e in d.events)
    assert APPROVE not in w.annotations  # the rejected one is consumed
    w.annotations[APPROVE] = token
    w.run(until=lambda w: w.status.phase is Phase.SUCCEEDED)
    assert w.weights == [20, 100, 0]
    assert any(h.outcome == "Approved" and h.token == token for h in w.status.history)


def test_pre_approval_is_kept_until_its_gate() -> None:
    w = released([{"setWeight": 20}, {"approval": {"reason": "r"}}, {"setWeight": 100}])
    w.set_image("img:2")
    w.annotations[APPROVE] = build_token(w.revision, 1)
    w.run(until=lambda w: w.status.phase is Phase.SUCCEEDED)
    assert w.weights == [20, 100, 0]
    assert not any(d.status.phase is Phase.AWAITING_APPROVAL for d in w.decisions)


def test_wrong_step_token_opens_nothing() -> None:
    w = released([{"setWeight": 20}, {"approval": {"reason": "r"}}, {"setWeight": 100}])
    w.set_image("img:2")
    w.run(until=lambda w: w.status.phase is Phase.AWAITING_APPROVAL)
    w.annotations[APPROVE] = build_token(w.revision, 0)
    d = w.step()
    assert w.status.phase is Phase.AWAITING_APPROVAL
    assert any("already passed" in e.message for e in d.events)


def test_risky_above_gates_the_weight_step() -> None:
    w = released(
        [{"setWeight": 20}, {"setWeight": 80}],
        strategy={"canary": {"steps": [{"setWeight": 20}, {"setWeight": 80}], "riskyAbove": 50}},
    )
    w.set_image("img:2")
    w.run(until=lambda w: w.status.phase is Phase.AWAITING_APPROVAL)
    assert w.weights == [20] and w.status.approval is not None and w.status.approval.step == 1
    w.annotations[APPROVE] = w.status.approval.token
    w.run(until=lambda w: w.status.phase is Phase.SUCCEEDED)
    assert w.weights == [20, 80, 0]


def test_template_change_mid_rollout_restarts_from_step_zero() -> None:
    w = released(STEPS)
    w.set_image("img:2")
    w.run(until=lambda w: w.status.phase is Phase.PAUSED)
    abandoned = w.revision
    w.set_image("img:3")
    d = w.step()
    assert any(isinstance(a, ResetRouter) for a in d.actions)
    assert w.status.current_step == 0 and w.status.canary_revision == w.revision
    assert any(h.outcome == "Superseded" and h.revision == abandoned for h in w.status.history)
    w.run(until=lambda w: w.status.phase is Phase.SUCCEEDED)
    assert w.status.stable_revision == w.revision
    assert w.weights == [25, 0, 25, 50, 100, 0]


def test_no_router_write_is_repeated_when_the_world_already_shows_it() -> None:
    w = released(STEPS)
    w.set_image("img:2")
    w.run(until=lambda w: w.status.current_step == 1)
    # pretend the status write was lost after the router write: step back in status only
    w.status = w.status.model_copy(update={"current_step": 0})
    d = w.step()
    assert not any(isinstance(a, SetWeight) for a in d.actions)
    assert w.status.current_step == 1


def test_abort_rolls_back_with_one_router_write_and_is_not_retried_on_its_own() -> None:
    w = released(STEPS, rollback={"scaleDownDelay": "10s"},
                 traffic={"service": {"name": "m"}, "ingress": {"name": "m"}})
    w.set_image("img:2")
    w.run(until=lambda w: w.status.phase is Phase.PAUSED)
    writes = w.router_writes
    w.annotations[ABORT] = "true"
    d = w.step()
    assert w.status.phase is Phase.ROLLING_BACK and w.router is None
    assert w.router_writes == writes + 1 and ABORT not in w.annotations
    assert "aborted by user" in w.status.message
    assert d.requeue_after == pytest.approx(10)
    w.now += timedelta(seconds=11)
    w.step()
    assert w.status.phase is Phase.ROLLED_BACK and w.canary is not None and w.canary.replicas == 0
    for _ in range(5):
        w.step()
    assert w.status.phase is Phase.ROLLED_BACK and w.router is None
    w.annotations[RETRY] = "true"
    w.run(until=lambda w: w.status.phase is Phase.SUCCEEDED)
    assert w.status.stable_revision == w.revision


def test_promote_needs_the_current_token() -> None:
    w = released(STEPS)
    w.set_image("img:2")
    w.run(until=lambda w: w.status.phase is Phase.PAUSED)
    w.annotations[PROMOTE] = "true"
    d = w.step()
    assert w.status.phase is Phase.PAUSED and any(e.reason == "PromoteRejected" for e in d.events)
    w.annotations[PROMOTE] = build_token(w.revision, w.status.current_step or 0)
    w.run(until=lambda w: w.status.phase is Phase.SUCCEEDED)
    assert w.weights == [25, 0]


def test_reverting_the_template_to_stable_abandons_the_canary() -> None:
    w = released(STEPS)
    w.set_image("img:2")
    w.run(until=lambda w: w.status.phase is Phase.PAUSED)
    w.set_image("img:1")
    w.step()
    assert w.router is None and w.status.canary_revision is None
    w.run(until=lambda w: w.status.phase is Phase.SUCCEEDED, limit=5)  # once stable is whole again


def test_progress_deadline_rolls_back_with_the_reason() -> None:
    w = released(STEPS, progressDeadlineSeconds=30)
    w.set_image("img:2")
    w.canary_ready = False
    w.run(until=lambda w: w.status.phase in (Phase.ROLLING_BACK, Phase.ROLLED_BACK), limit=100)
    assert "not ready after 30s" in w.status.message
    assert w.weights == []


def test_invalid_touches_nothing() -> None:
    from modelrollout.core.model import Observed
    from modelrollout.core.plan import decide

    obs = Observed(
        name="m",
        namespace="d",
        generation=3,
        revision="abc",
        stable=None,
        canary=None,
        route=RouteState(25),
        invalid="spec.traffic.service.name: Service m not found",
    )
    d = decide(None, api.ModelRolloutStatus(), obs, __import__("datetime").datetime.now())
    assert d.actions == () and d.status.phase is Phase.INVALID
    assert "spec.traffic.service.name" in d.status.message and d.status.observed_generation == 3


def test_the_reconcile_that_ends_a_pause_carries_out_the_next_step() -> None:
    w = released(STEPS, replicas=1, traffic={"service": {"name": "m"}, "ingress": {"name": "m"}})
    w.set_image("img:2")
    w.run(until=lambda w: w.status.phase is Phase.PAUSED)
    w.now += timedelta(seconds=61)
    d = w.step()
    assert [a.weight for a in d.actions if isinstance(a, SetWeight)] == [50]
    assert w.status.current_step == 3 and w.weights == [25, 50]


def test_the_first_release_consumes_a_control_annotation_with_a_warning_when_it_succeeds() -> None:
    # no later reconcile need come (the operator ignores the echo of its own write): the same decision says so
    w = World(spec_dict(STEPS))
    w.annotations[APPROVE] = "garbage"
    w.run(until=lambda w: w.status.phase is Phase.SUCCEEDED)
    d = w.decisions[-1]
    assert any(e.reason == "AnnotationIgnored" and APPROVE in e.message for e in d.events)
    assert APPROVE not in w.annotations
