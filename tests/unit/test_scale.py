"""spec.replicas changed before, during and after a rollout (kubectl scale, an HPA, KEDA): both tracks follow,
no step restarts, no traffic moves."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from modelrollout.api import Phase
from modelrollout.core.approval import APPROVE, build_token
from modelrollout.core.revision import revision_of
from modelrollout.core.scale import selector, sizes

from .sim import World, released

STEPS: list[dict[str, Any]] = [{"setWeight": 25}, {"pause": {"duration": "1h"}}, {"setWeight": 50},
                               {"approval": {"reason": "half"}}, {"setWeight": 100}]
INGRESS = {"service": {"name": "m"}, "ingress": {"name": "m"}}


def scaled(w: World, replicas: int, rounds: int = 3) -> None:
    w.raw["replicas"] = replicas
    for _ in range(rounds):
        w.step()


def test_replicas_are_not_part_of_the_revision() -> None:
    w = released(STEPS)
    before = w.revision
    w.raw["replicas"] = 9
    assert w.revision == before == revision_of(w.raw["template"], w.raw.get("model"))


def test_scale_before_a_rollout_resizes_stable_and_status_shows_pods_and_selector() -> None:
    w = released(STEPS, traffic=INGRESS)
    assert w.status.replicas == 4 and w.status.selector == "app=m"
    scaled(w, 7)
    assert w.stable is not None and w.stable.replicas == 7 and w.status.replicas == 7
    assert w.status.phase is Phase.SUCCEEDED and w.weights == []


def test_scale_at_a_pause_resizes_both_tracks_without_moving_traffic_or_restarting_the_step() -> None:
    w = released(STEPS, traffic=INGRESS)
    w.set_image("img:2")
    w.run(until=lambda w: w.status.phase is Phase.PAUSED)
    started, step, history = w.status.step_started_at, w.status.current_step, len(w.status.history)
    assert w.canary is not None and w.canary.replicas == 1  # ceil(4 x 25%)
    scaled(w, 10)
    assert w.canary.replicas == 3 and w.stable is not None and w.stable.replicas == 10  # ceil(10 x 25%)
    assert w.status.replicas == 13
    scaled(w, 2)
    assert w.canary.replicas == 1 and w.stable.replicas == 2
    assert w.weights == [25] and w.status.current_weight == 25
    assert (w.status.phase, w.status.current_step, w.status.step_started_at) == (Phase.PAUSED, step, started)
    assert len(w.status.history) == history  # no Started, Superseded or other entry


def test_scale_at_an_approval_gate_keeps_the_gate_and_its_token() -> None:
    w = released(STEPS, traffic=INGRESS)
    w.set_image("img:2")
    w.run(until=lambda w: w.status.current_step == 2, limit=400)
    w.now += timedelta(hours=1)
    w.run(until=lambda w: w.status.phase is Phase.AWAITING_APPROVAL)
    token = build_token(w.revision, 3)
    assert w.status.approval is not None and w.status.approval.token == token
    scaled(w, 8)
    assert w.canary is not None and w.canary.replicas == 4 and w.stable is not None and w.stable.replicas == 8
    assert w.status.phase is Phase.AWAITING_APPROVAL and w.status.approval.token == token
    assert w.weights == [25, 50]
    w.annotations[APPROVE] = token
    w.run(until=lambda w: w.status.phase is Phase.SUCCEEDED)
    assert w.stable.replicas == 8 and w.canary is None  # promotion at the replicas of that moment
    assert w.weights == [25, 50, 100, 0]


def test_replica_ratio_router_keeps_the_split_at_the_new_size() -> None:
    w = released(STEPS)  # Service router: stable runs the rest
    w.set_image("img:2")
    w.run(until=lambda w: w.status.phase is Phase.PAUSED)
    assert w.canary is not None and w.stable is not None and (w.canary.replicas, w.stable.replicas) == (1, 3)
    scaled(w, 8)
    assert (w.canary.replicas, w.stable.replicas) == (2, 6) and w.status.replicas == 8
    assert w.weights == [25] and w.status.phase is Phase.PAUSED


def test_dynamic_stable_follows_and_keeps_its_floor() -> None:
    w = released(STEPS, traffic=INGRESS, rollback={"dynamicStableScale": True, "stableMinReady": 2})
    w.set_image("img:2")
    w.run(until=lambda w: w.status.phase is Phase.PAUSED)
    assert w.canary is not None and w.stable is not None and (w.canary.replicas, w.stable.replicas) == (1, 3)
    scaled(w, 12)
    assert (w.canary.replicas, w.stable.replicas) == (3, 9)
    scaled(w, 2)
    assert (w.canary.replicas, w.stable.replicas) == (1, 2)  # stable never below stableMinReady


def test_rollback_restores_stable_at_the_replicas_of_that_moment() -> None:
    w = released(STEPS, traffic=INGRESS, rollback={"scaleDownDelay": "0s"})
    w.set_image("img:2")
    w.run(until=lambda w: w.status.phase is Phase.PAUSED)
    scaled(w, 6)
    w.annotations["modelrollout.io/abort"] = "true"
    w.run(until=lambda w: w.status.phase is Phase.ROLLED_BACK)
    assert w.stable is not None and w.stable.replicas == 6 and w.canary is not None and w.canary.replicas == 0


def test_scale_down_while_a_weight_step_waits_for_canary_pods() -> None:
    w = released(STEPS, traffic=INGRESS, replicas=10)
    w.set_image("img:2")
    w.canary_ready = False
    for _ in range(5):
        w.step()
    assert w.canary is not None and w.canary.replicas == 3 and w.weights == []
    w.canary_ready = True
    scaled(w, 4, rounds=1)
    assert w.canary.replicas == 1  # ceil(4 x 25%): the step sizes the canary for its weight at the new size
    w.run(until=lambda w: w.status.phase is Phase.PAUSED)
    assert w.weights == [25] and w.canary.replicas == 1 and w.stable is not None and w.stable.replicas == 4


def test_sizes_and_selector() -> None:
    assert sizes(10, 25, preview=False, features=False, ratio=False, dynamic=False, stable_floor=None) == \
        sizes(10, 25, preview=False, features=False, ratio=False, dynamic=False, stable_floor=3)
    assert sizes(3, 0, preview=False, features=True, ratio=False, dynamic=False, stable_floor=None).canary == 1
    assert sizes(3, 0, preview=True, features=False, ratio=False, dynamic=False, stable_floor=None).canary == 3
    assert sizes(5, 10, preview=False, features=False, ratio=True, dynamic=False, stable_floor=None).stable == 4
    assert selector({"b": "2", "a": "1"}) == "a=1,b=2"


def test_scale_while_rolled_back_resizes_stable() -> None:
    w = released(STEPS, traffic=INGRESS, rollback={"scaleDownDelay": "0s"})
    w.set_image("img:2")
    w.run(until=lambda w: w.status.phase is Phase.PAUSED)
    w.annotations["modelrollout.io/abort"] = "true"
    w.run(until=lambda w: w.status.phase is Phase.ROLLED_BACK)
    scaled(w, 9)
    assert w.stable is not None and w.stable.replicas == 9 and w.status.phase is Phase.ROLLED_BACK
    assert w.canary is not None and w.canary.replicas == 0


def test_blue_green_preview_follows_the_scale() -> None:
    w = released([{"setWeight": 100}], traffic=INGRESS)
    w.raw["strategy"] = {"blueGreen": {"approval": {"reason": "look at the preview"}}}
    w.set_image("img:2")
    w.run(until=lambda w: w.status.phase is Phase.AWAITING_APPROVAL)
    assert w.canary is not None and w.canary.replicas == 4 and w.weights == []
    scaled(w, 6)
    assert w.canary.replicas == 6 and w.stable is not None and w.stable.replicas == 6
    assert w.status.phase is Phase.AWAITING_APPROVAL and w.weights == []
