from __future__ import annotations

from modelrollout.api import Phase
from modelrollout.core.approval import RETRY
from modelrollout.core.prewarm import kept, remember, template_images, wanted

from .sim import released

STEPS = [{"setWeight": 20}, {"setWeight": 100}]
PREWARM = {"prewarm": {"enabled": True, "keepRevisions": 2, "timeout": "1m"}, "scaleDownDelay": "0s"}


def test_template_images_and_history() -> None:
    tpl = {"spec": {"initContainers": [{"name": "i", "image": "init:1"}],
                    "containers": [{"name": "a", "image": "m:1"}, {"name": "b", "image": "init:1"}]}}
    assert template_images(tpl) == ("init:1", "m:1")
    h = remember([], "r1", ["m:1"], 2)
    h = remember(h, "r2", ["m:2"], 2)
    h = remember(h, "r3", ["m:3"], 2)
    assert [x.revision for x in h] == ["r2", "r3"]
    assert kept(h, 1) == ["m:3"] and kept(h, 0) == []
    assert wanted(["b", "a"], ["a"]) == ("a", "b")


def test_no_traffic_moves_before_every_node_pulled_both_images() -> None:
    w = released(STEPS, rollback=PREWARM)
    w.set_image("img:2")
    w.nodes = 3
    d = None
    for _ in range(3):
        d = w.step()
    assert d is not None
    assert w.prewarm is not None and set(w.prewarm.images) == {"img:1", "img:2"}
    w.run(until=lambda w: w.status.phase is Phase.SUCCEEDED)
    first_weight = next(i for i, d in enumerate(w.decisions) if any(type(a).__name__ == "SetWeight" for a in d.actions))
    first_prewarm = next(i for i, d in enumerate(w.decisions) if any(type(a).__name__ == "EnsurePrewarm"
                                                                     for a in d.actions))
    assert first_prewarm < first_weight
    assert any(d.status.phase is Phase.PREWARMING for d in w.decisions)


def test_keep_revisions_trims_the_daemonset_after_promotion() -> None:
    w = released(STEPS, rollback={**PREWARM, "prewarm": {"enabled": True, "keepRevisions": 1}})
    w.set_image("img:2")
    w.run(until=lambda w: w.status.phase is Phase.SUCCEEDED)
    assert w.prewarm is not None and w.prewarm.images == ("img:2",)
    assert [h.revision for h in w.status.revision_images] == [w.revision]
    w2 = released(STEPS, rollback={**PREWARM, "prewarm": {"enabled": True, "keepRevisions": 0}})
    w2.set_image("img:2")
    w2.run(until=lambda w: w.status.phase is Phase.SUCCEEDED)
    assert w2.prewarm is None


def test_a_node_that_cannot_pull_fails_the_rollout_before_traffic_naming_the_node() -> None:
    w = released(STEPS, rollback=PREWARM)
    w.set_image("unpullable.invalid/model:2")
    w.run(until=lambda w: w.status.phase is Phase.FAILED, limit=300)
    assert w.weights == []
    assert "node n0: ImagePullBackOff" in w.status.message and "no traffic moved" in w.status.message
    assert w.prewarm is not None and "unpullable.invalid/model:2" not in w.prewarm.images
    for _ in range(3):
        w.step()
    assert w.status.phase is Phase.FAILED  # not retried on its own
    w.annotations[RETRY] = "true"
    w.step()
    assert w.status.phase is not Phase.FAILED


def test_weight_is_not_raised_while_stable_could_not_take_traffic_back() -> None:
    from dataclasses import replace

    w = released([{"setWeight": 20}, {"setWeight": 50}, {"setWeight": 100}],
                 traffic={"service": {"name": "m"}, "ingress": {"name": "m"}})  # stable stays at 4 replicas
    w.set_image("img:2")
    w.run(until=lambda w: w.status.current_weight == 20)
    assert w.stable is not None
    w.stable = replace(w.stable, ready=2)
    for _ in range(5):
        w.step()
    assert w.status.current_weight == 20 and "stable has 2/4 ready" in w.status.message
    w.stable = replace(w.stable, ready=4)
    w.run(until=lambda w: w.status.phase is Phase.SUCCEEDED)


def test_dynamic_stable_scale_shrinks_stable_and_rollback_waits_for_it() -> None:
    from modelrollout.core.actions import ResetRouter, ScaleStable
    from modelrollout.core.approval import ABORT

    w = released([{"setWeight": 50}, {"pause": {}}, {"setWeight": 100}],
                 traffic={"service": {"name": "m"}, "ingress": {"name": "m"}},
                 rollback={"dynamicStableScale": True, "stableMinReady": 1, "scaleDownDelay": "0s"})
    w.set_image("img:2")
    w.run(until=lambda w: w.status.phase is Phase.AWAITING_APPROVAL)
    assert w.stable is not None and w.stable.replicas == 2 and w.router == 50
    w.annotations[ABORT] = "true"
    d = w.step()
    assert any(isinstance(a, ScaleStable) and a.replicas == 4 for a in d.actions)
    assert not any(isinstance(a, ResetRouter) for a in d.actions), "traffic waits for stable to be ready"
    w.run(until=lambda w: w.status.phase is Phase.ROLLED_BACK)
    assert w.router is None and w.stable.replicas == 4


def test_rollback_to_restores_a_recorded_revision_without_steps() -> None:
    from modelrollout.core.approval import ROLLBACK_TO

    w = released([{"setWeight": 20}, {"pause": {}}, {"setWeight": 100}], rollback=PREWARM)
    v1 = w.revision
    w.set_image("img:2")
    w.run(until=lambda w: w.status.phase is Phase.AWAITING_APPROVAL)
    assert w.status.approval is not None
    w.annotations["modelrollout.io/approve"] = w.status.approval.token
    w.run(until=lambda w: w.status.phase is Phase.SUCCEEDED)
    v2 = w.revision
    assert set(w.recorded) == {v1, v2}
    w.annotations[ROLLBACK_TO] = "0000000000"
    d = w.step()
    assert any(e.reason == "AnnotationIgnored" and "not a recorded revision" in e.message for e in d.events)
    weights = list(w.weights)
    w.annotations[ROLLBACK_TO] = v1
    w.run(until=lambda w: w.status.phase is Phase.SUCCEEDED and w.status.stable_revision == v1)
    assert w.revision == v1 and w.raw["template"]["spec"]["containers"][0]["image"] == "img:1"
    assert w.weights[len(weights):] == [], "fast path: no traffic steps"
    assert any(h.outcome == "RollbackTo" and h.revision == v1 for h in w.status.history)
    assert w.status.fast_path_revision is None
