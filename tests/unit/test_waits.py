"""How often a rollout waiting for pods looks again without a watch event (``Plan.await_pods``)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from modelrollout.api import Phase
from modelrollout.core.plan.state import POLL_SECONDS, WAKE_POLL_SECONDS, YOUNG_WAIT_SECONDS
from modelrollout.workloads import failing

from .sim import released


def test_a_wait_for_canary_pods_polls_often_while_young_then_rarely_and_at_the_progress_deadline() -> None:
    """The wait looks every POLL_SECONDS for its first YOUNG_WAIT_SECONDS (the reason pods do not start shows
    soon), then every WAKE_POLL_SECONDS (the Deployment's ready pods wake it), and once more at the deadline,
    which then fails the revision on time."""
    w = released([{"setWeight": 20}, {"pause": {}}], progressDeadlineSeconds=100, rollback={"scaleDownDelay": "0s"})
    w.canary_ready = False
    w.set_image("img:2")
    started = None
    looks: list[tuple[float, float]] = []  # (seconds waited, seconds until the next look)
    for _ in range(40):
        d = w.step()
        if started is None and w.status.progress_since is not None:
            started = w.status.progress_since
        if d.status.phase is not Phase.PROGRESSING:
            break
        assert d.requeue_after is not None and started is not None
        looks.append(((w.now - started).total_seconds(), d.requeue_after))
        w.now += timedelta(seconds=d.requeue_after)
    assert looks and all(wait == POLL_SECONDS for waited, wait in looks if waited < YOUNG_WAIT_SECONDS)
    older = [(waited, wait) for waited, wait in looks if waited >= YOUNG_WAIT_SECONDS]
    assert older and all(wait == pytest.approx(min(WAKE_POLL_SECONDS, 100 - waited + 0.01)) for waited, wait in older)
    assert any(wait < WAKE_POLL_SECONDS for _, wait in older), "the last look lands on the deadline"
    assert w.status.phase in (Phase.ROLLED_BACK, Phase.FAILED, Phase.ROLLING_BACK)
    assert w.now - started <= timedelta(seconds=100 + POLL_SECONDS), "the deadline is acted on when it is reached"


def test_failing_names_what_pod_failure_reports_and_nothing_for_a_pod_that_is_starting() -> None:
    def pod(*waiting: str, unschedulable: bool = False, init: str | None = None) -> dict[str, object]:
        status: dict[str, object] = {
            "containerStatuses": [{"name": f"c{i}", "state": {"waiting": {"reason": r}}}
                                  for i, r in enumerate(waiting)],
            "conditions": [{"type": "PodScheduled", "status": "False" if unschedulable else "True"}]}
        if init is not None:
            status["initContainerStatuses"] = [{"name": "i", "state": {"waiting": {"reason": init}}}]
        return {"metadata": {"name": "p"}, "status": status}
    assert failing(pod()) == () and failing(pod("ContainerCreating")) == () and failing({}) == ()
    assert failing(pod("ImagePullBackOff")) == ("ImagePullBackOff",)
    assert failing(pod("ContainerCreating", "CrashLoopBackOff")) == ("CrashLoopBackOff",)
    assert failing(pod(init="ErrImagePull")) == ("ErrImagePull",)
    assert failing(pod(unschedulable=True)) == ("Unschedulable",)
