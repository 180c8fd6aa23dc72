from __future__ import annotations

from datetime import timedelta

import pytest

from modelrollout import api
from modelrollout.api import Phase
from modelrollout.core.actions import RemoveAnnotations, ResetRouter, SetWeight
from modelrollout.core.approval import ABORT, APPROVE, PROMOTE, RETRY, build_token
from modelrollout.core.model import Decision
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
    assert w.weights == [25, 50, 100]
    assert w.status.stable_revision == w.revision != old
    assert w.stable is not None and w.stable.revision == w.revision and w.stable.replicas == 4
    assert w.canary is None and old not in w.deployments  # the canary's pods became stable; the old ones are gone
    assert w.selects["stable"] == w.revision and w.deleted == [old]
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
    assert w.weights == [20, 100]
    assert any(h.outcome == "Approved" and h.token == token for h in w.status.history)


def test_pre_approval_is_kept_until_its_gate() -> None:
    w = released([{"setWeight": 20}, {"approval": {"reason": "r"}}, {"setWeight": 100}])
    w.set_image("img:2")
    w.annotations[APPROVE] = build_token(w.revision, 1)
    w.run(until=lambda w: w.status.phase is Phase.SUCCEEDED)
    assert w.weights == [20, 100]
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
    assert w.weights == [20, 80]


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
    assert w.weights == [25, 0, 25, 50, 100]


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
    assert w.weights == [25]


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


# -- annotations kept in git (docs/gitops.md): one action or one Event, then silence ----------------------------

def _reapply(w: World, key: str, value: str, times: int = 5) -> list[Decision]:
    """Put ``value`` back after every decision, as a GitOps tool re-applying it from git does."""
    out = []
    for _ in range(times):
        w.annotations[key] = value
        out.append(w.step())
        w.now += timedelta(seconds=30)
    return out


def test_an_approval_held_in_git_opens_its_gate_once_then_is_ignored_silently() -> None:
    w = released([{"setWeight": 20}, {"approval": {"reason": "r"}}, {"setWeight": 100}])
    w.set_image("img:2")
    w.run(until=lambda w: w.status.phase is Phase.AWAITING_APPROVAL)
    token = build_token(w.revision, 1)
    w.annotations[APPROVE] = token
    w.run(until=lambda w: w.status.phase is Phase.SUCCEEDED)
    assert APPROVE not in w.annotations
    assert [(r.key, r.value, r.revision) for r in w.status.consumed_annotations] == [(APPROVE, token, w.revision)]
    for d in _reapply(w, APPROVE, token):
        assert d.events == () and not any(isinstance(a, RemoveAnnotations) for a in d.actions)
        assert d.status == w.status
    # the next revision: the stale token is still in git; it is neither refused again nor removed
    w.set_image("img:3")
    decisions = _reapply(w, APPROVE, token, times=8)
    assert not any(e.reason == "ApprovalRejected" for d in decisions for e in d.events)
    assert not any(isinstance(a, RemoveAnnotations) for d in decisions for a in d.actions)
    assert w.status.phase is Phase.AWAITING_APPROVAL and w.status.consumed_annotations[0].revision == w.revision
    w.annotations[APPROVE] = build_token(w.revision, 1)  # the new token (a commit, or kubectl) opens the new gate
    w.run(until=lambda w: w.status.phase is Phase.SUCCEEDED)


def test_a_refused_token_held_in_git_gives_one_event() -> None:
    w = released([{"setWeight": 20}, {"approval": {"reason": "r"}}, {"setWeight": 100}])
    w.set_image("img:2")
    w.run(until=lambda w: w.status.phase is Phase.AWAITING_APPROVAL)
    decisions = _reapply(w, APPROVE, build_token("0000000000", 1), times=6)
    rejected = [e for d in decisions for e in d.events if e.reason == "ApprovalRejected"]
    removals = [a for d in decisions for a in d.actions if isinstance(a, RemoveAnnotations)]
    assert len(rejected) == 1 and len(removals) == 1
    assert w.status.phase is Phase.AWAITING_APPROVAL


HOUR = [{"setWeight": 25}, {"pause": {"duration": "1h"}}, {"setWeight": 100}]


def test_abort_true_held_in_git_does_not_abort_the_next_revision() -> None:
    w = released(HOUR)
    w.set_image("img:2")
    w.run(until=lambda w: w.status.phase is Phase.PAUSED)
    aborted = w.revision
    decisions = _reapply(w, ABORT, "true")
    assert sum(1 for d in decisions for a in d.actions if isinstance(a, RemoveAnnotations)) == 1
    assert [h.outcome for h in w.status.history].count("Aborted") == 1
    assert w.status.phase is Phase.ROLLED_BACK
    w.set_image("img:3")
    decisions = _reapply(w, ABORT, "true", times=3)
    assert w.revision != aborted and w.status.canary_revision == w.revision
    assert w.status.phase in (Phase.PROGRESSING, Phase.PAUSED) and w.status.rolled_back_revision == aborted
    assert not any(e.type == "Warning" for d in decisions for e in d.events)
    w.annotations[ABORT] = w.revision  # abort=REVISION from git aborts this one
    w.step()
    assert w.status.phase is Phase.ROLLING_BACK and w.status.history[-1].outcome == "Aborted"


def test_abort_set_before_a_revision_started_is_refused_once() -> None:
    w = released(HOUR)
    w.set_image("img:2")
    w.annotations[ABORT] = "true"  # in the same commit as the new image
    decisions = _reapply(w, ABORT, "true", times=6)
    ignored = [e for d in decisions for e in d.events if e.reason == "AnnotationIgnored"]
    assert len(ignored) == 1 and f"annotate {ABORT}={w.revision}" in ignored[0].message
    assert w.status.rolled_back_revision is None and w.status.phase is Phase.PAUSED


def test_abort_for_another_revision_is_refused_and_abort_true_from_kubectl_still_works_each_revision() -> None:
    w = released(STEPS)
    for image in ("img:2", "img:3"):
        w.set_image(image)
        w.run(until=lambda w: w.status.phase is Phase.PAUSED)
        w.annotations[ABORT] = "true"  # kubectl annotate: removed once acted on; the same value again next time
        w.step()
        assert w.status.phase is Phase.ROLLING_BACK and ABORT not in w.annotations
        assert w.status.history[-1].revision == w.revision and w.status.history[-1].outcome == "Aborted"
    w.set_image("img:4")
    w.run(until=lambda w: w.status.phase is Phase.PAUSED)
    w.annotations[ABORT] = "0123456789"
    d = w.step()
    assert any(e.reason == "AnnotationIgnored" and f"use {ABORT}={w.revision}" in e.message for e in d.events)
    assert w.status.phase is Phase.PAUSED


def test_retry_by_kubectl_works_again_after_a_second_rollback() -> None:
    w = released(HOUR)
    w.set_image("img:2")
    w.run(until=lambda w: w.status.phase is Phase.PAUSED)
    for _ in range(2):
        w.annotations[ABORT] = w.revision
        w.run(until=lambda w: w.status.phase is Phase.ROLLED_BACK)
        w.annotations[RETRY] = "true"
        w.run(until=lambda w: w.status.phase is Phase.PAUSED)
    assert [h.outcome for h in w.status.history].count("Retried") == 2


def test_an_idle_annotation_held_in_git_gives_one_event() -> None:
    w = released(STEPS)
    decisions = _reapply(w, PROMOTE, "true", times=6)
    assert sum(1 for d in decisions for e in d.events if e.reason == "AnnotationIgnored") == 1


@pytest.mark.parametrize("phase", list(Phase))
def test_conditions_say_what_kstatus_needs_for_every_phase(phase: Phase) -> None:
    from datetime import UTC, datetime

    from modelrollout.core.plan import conditions

    status = api.ModelRolloutStatus(phase=phase, message=f"why {phase.value}", observed_generation=4)
    got = {c.type: c for c in conditions(status, [], datetime(2026, 1, 1, tzinfo=UTC), 4)}
    failed = phase in (Phase.ROLLED_BACK, Phase.FAILED, Phase.INVALID)
    assert got["Stalled"].status == ("True" if failed else "False")
    assert got["Reconciling"].status == ("True" if not failed and phase is not Phase.SUCCEEDED else "False")
    assert got["Ready"].status == ("True" if phase is Phase.SUCCEEDED else "False")
    assert got["Stalled"].reason == phase.value and got["Stalled"].message == f"why {phase.value}"
