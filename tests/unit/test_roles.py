"""Promotion by role: the pods that passed analysis are the pods that serve, and no Deployment outlives its role."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

from modelrollout import api
from modelrollout.api import Phase
from modelrollout.core import actions as act
from modelrollout.core.approval import ROLLBACK_TO
from modelrollout.core.model import Observed, TrackState
from modelrollout.core.plan import decide
from modelrollout.core.revision import revision_of

from .sim import T0, World, released, spec_dict

HTTPROUTE = {"traffic": {"service": {"name": "m"}, "httpRoute": {"name": "m"}}}
STEPS = [{"setWeight": 20}, {"setWeight": 100}]


def promoted(steps: list[dict[str, Any]] = STEPS, **extra: Any) -> tuple[World, str]:
    w = released(steps, **{**HTTPROUTE, **extra})
    old = w.revision
    w.set_image("img:2")
    w.run(until=lambda w: w.status.phase is Phase.SUCCEEDED)
    return w, old


def test_promotion_makes_the_analysed_pods_stable_without_starting_others() -> None:
    w, old = promoted()
    new = w.revision
    actions = [a for d in w.decisions for a in d.actions]
    assert [a.revision for a in actions if isinstance(a, act.EnsureCanary | act.EnsureStable)].count(new) == 1
    assert w.stable is not None and (w.stable.revision, w.stable.replicas) == (new, 4) and w.canary is None
    last = list(w.decisions[-1].actions)
    switch = last.index(act.SelectRevision("stable", new))
    reset = next(i for i, a in enumerate(last) if isinstance(a, act.ResetRouter))
    assert switch < reset  # NAME-stable selects the analysed pods before the router takes the canary's share back
    assert w.selects == {"stable": new, "canary": new}
    assert old in w.deployments and w.status.previous_revision == old  # up for the switch-back window
    assert w.status.scale_down_at == w.now + timedelta(seconds=30)


def test_the_previous_stable_is_deleted_when_the_window_ends_and_not_before() -> None:
    w, old = promoted(strategy={"canary": {"steps": STEPS, "scaleDownDelay": "2m"}})
    at = w.now
    w.run(until=lambda w: old not in w.deployments)
    assert w.now >= at + timedelta(minutes=2)
    assert w.deleted == [old] and w.status.previous_revision is None and w.status.scale_down_at is None
    assert w.status.phase is Phase.SUCCEEDED and w.stable is not None and w.stable.ready == 4


def test_the_spec_set_back_within_the_window_switches_back_with_one_write() -> None:
    w, old = promoted()
    new = w.revision
    w.set_image("img:1")
    d = w.step()
    assert [a for a in d.actions if not isinstance(a, act.RecordRevision)] == [act.SelectRevision("stable", old)]
    assert w.status.phase is Phase.SUCCEEDED and w.status.stable_revision == old
    assert w.status.previous_revision == new and new in w.deployments  # and back again, the same way
    assert [h.outcome for h in w.status.history][-2:] == ["Started", "Succeeded"]


def test_rollback_to_after_the_window_starts_the_revision_at_full_size() -> None:
    w, old = promoted()
    w.run(until=lambda w: old not in w.deployments)
    w.annotations[ROLLBACK_TO] = old
    w.run(until=lambda w: w.status.stable_revision == old and w.status.phase is Phase.SUCCEEDED)
    actions = [a for d in w.decisions for a in d.actions]
    assert act.EnsureCanary(old, 4) in actions and not any(isinstance(a, act.SetWeight) for a in actions[-8:])


def test_the_service_router_deletes_the_previous_stable_at_the_switch() -> None:
    w = released(STEPS)  # the root Service selects every revision's pods: the previous one cannot stay up
    old = w.revision
    w.set_image("img:2")
    w.run(until=lambda w: w.status.phase is Phase.SUCCEEDED)
    last = w.decisions[-1].actions
    assert act.DeleteWorkload(f"m-{old}", old) in last and not any(isinstance(a, act.ResetRouter) for a in last)
    assert w.status.previous_revision is None and list(w.deployments) == [w.revision]


def test_blue_green_switches_to_the_preview_pods() -> None:
    w = released([], **HTTPROUTE, strategy={"blueGreen": {"scaleDownDelay": "10s"}})
    old = w.revision
    w.set_image("img:2")
    w.run(until=lambda w: w.status.phase is Phase.SUCCEEDED)
    created = [a for d in w.decisions for a in d.actions
               if isinstance(a, act.EnsureCanary | act.EnsureStable) and a.revision == w.revision]
    assert created == [act.EnsureCanary(w.revision, 4)]  # made at the preview's full size; those pods now serve
    assert w.deleted == [old]  # its pause after the switch was the switch-back window


def test_a_superseded_canary_is_deleted_after_the_router_stops_sending_it_a_share() -> None:
    w = released([{"setWeight": 20}, {"pause": {}}], **HTTPROUTE)
    w.set_image("img:2")
    w.run(until=lambda w: w.status.current_weight == 20)
    second = w.revision
    w.set_image("img:3")
    d = list(w.step().actions)
    reset = next(i for i, a in enumerate(d) if isinstance(a, act.ResetRouter))
    assert reset < d.index(act.SelectRevision("canary", w.revision)) < d.index(act.DeleteWorkload(f"m-{second}",
                                                                                                   second))


def test_deployments_of_an_earlier_operator_are_adopted_by_revision() -> None:
    """NAME-stable / NAME-canary (made before promotion by role, selected by modelrollout.io/track) keep serving:
    the Services are pointed at the revision they run, whose pods carry that label too; an idle NAME-canary goes."""
    raw = spec_dict(STEPS, **HTTPROUTE)
    spec = api.ModelRolloutSpec.model_validate(raw)
    rev = revision_of(raw["template"], raw.get("model"))
    status = api.ModelRolloutStatus(phase=Phase.SUCCEEDED, stable_revision=rev)
    obs = Observed(name="m", namespace="default", generation=1, revision=rev, route=None, canary=None,
                   stable=TrackState(rev, 4, 4, name="m-stable"), selects={"stable": None, "canary": None},
                   workloads=(("m-stable", rev), ("m-canary", "0ld0ld0ld0")))
    d = decide(spec, status, obs, T0)
    assert list(d.actions) == [act.SelectRevision("stable", rev), act.DeleteWorkload("m-canary", "0ld0ld0ld0")]
    assert d.status.phase is Phase.SUCCEEDED
    again = decide(spec, d.status, replace(obs, selects={"stable": rev, "canary": None},
                                           workloads=(("m-stable", rev),)), T0)
    assert again.actions == ()  # nothing left to move: NAME-stable keeps serving until the next promotion
