"""The STEP column and the messages name a step in one convention: 1-based ``N/M``.

Every decision of whole rollouts (canary and blue-green; timed and indefinite pauses, approvals, analysis,
riskyAbove and preflight gates, a metric that pauses, slow pods, promote) is checked: the value the CRD's
``Step`` printer column shows (its jsonPath evaluated on the status as written) is ``step_of(currentStep)``, and
every ``step N/M`` in ``status.message`` is that same ``N/M``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from modelrollout import api
from modelrollout.api import Phase
from modelrollout.core.approval import APPROVE, PROMOTE
from modelrollout.core.steps import step_of, steps_of
from modelrollout.crdgen import PRINTER_COLUMNS

from .sim import World, released

ANALYSIS = {"interval": "10s", "prometheus": {"address": "http://p:9090"},
            "metrics": [{"name": "ok", "query": "q", "min": 0.9, "onFailure": "pause"}]}
HTTPROUTE = {"service": {"name": "m"}, "httpRoute": {"name": "m"}}
NAMED = re.compile(r"\bsteps? (\d+/\d+)")


def column(status: api.ModelRolloutStatus, name: str = "Step") -> Any:
    """What ``kubectl get mro`` shows in column ``name``: its jsonPath evaluated on the status as written."""
    path = next(c["jsonPath"] for c in PRINTER_COLUMNS if c["name"] == name)
    value: Any = {"status": status.model_dump(by_alias=True, mode="json", exclude_none=True)}
    for key in path.strip(".").split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value


def walk(w: World, *, tweak: Callable[[World], None] | None = None, limit: int = 400) -> list[str]:
    """Decide until the rollout ends, approving every gate it waits at; check every decision; the columns seen."""
    seen: list[str] = []
    for _ in range(limit):
        d = w.step()
        st = w.status
        shown = column(st)
        total = len(steps_of(w.spec))
        assert shown == (None if st.current_step is None else step_of(st.current_step, total)), st
        for named in NAMED.findall(st.message):
            assert shown is not None and shown.split()[0] == named, f"column {shown!r} but message {st.message!r}"
        if shown is not None and (not seen or seen[-1] != shown):
            seen.append(shown)
        if st.phase is Phase.ROLLED_BACK or (st.phase is Phase.SUCCEEDED and st.canary_revision is None):
            return seen
        if st.approval is not None:
            w.annotations[APPROVE] = st.approval.token
        if tweak is not None:
            tweak(w)
        wait = d.requeue_after if d.requeue_after is not None else 1.0
        w.now += timedelta(seconds=max(wait, 0.001))
    raise AssertionError(f"not finished: {w.status.message}")


STEPS = [{"setWeight": 10}, {"pause": {"duration": "30s"}}, {"analysis": {"passes": 2}}, {"setWeight": 30},
         {"pause": {}}, {"approval": {"reason": "look"}}, {"setWeight": 60}, {"setWeight": 100}]


def test_canary_with_every_kind_of_step_and_gate() -> None:
    w = released(STEPS, analysis=ANALYSIS, model={"dependencies": {"torch": "2.5.1"}})
    w.metric_values["ok"] = 1.0
    w.raw["strategy"]["canary"]["riskyAbove"] = 50
    w.raw["model"] = {"dependencies": {"torch": "3.0.0"}}  # a preflight gate at the first traffic step
    seen = walk(w)
    assert seen == [step_of(i, len(STEPS)) for i in range(len(STEPS) + 1)]  # every step shown, in order
    assert w.status.phase is Phase.SUCCEEDED


def test_the_reported_case_a_weight_step_done_names_the_next_step() -> None:
    w = released([{"setWeight": 10}, {"pause": {"duration": "1m"}}, {"setWeight": 50}, {"setWeight": 100}])
    w.set_image("img:2")
    w.run(until=lambda w: w.status.current_weight == 10)
    assert column(w.status) == "2/4"
    assert "step 1/4" not in w.status.message and "next: step 2/4 (pause 1m)" in w.status.message


def test_slow_pods_and_a_metric_that_pauses_at_a_step() -> None:
    w = released(STEPS[:4], analysis=ANALYSIS)
    w.set_image("img:2")
    w.canary_ready = False
    w.metric_values["ok"] = 0.1  # fails: pauses at the step the rollout is at; approved below, then passes

    def heal(w: World) -> None:
        if w.status.phase is Phase.PROGRESSING and "waiting for canary pods" in w.status.message:
            w.canary_ready = True
            if w.canary is not None:
                w.canary = type(w.canary)(w.canary.revision, w.canary.replicas, w.canary.replicas)
        if w.status.approval is not None and w.status.approval.action == "resume":
            w.metric_values["ok"] = 1.0

    walk(w, tweak=heal)
    assert w.status.phase is Phase.SUCCEEDED


def test_blue_green() -> None:
    w = released([], strategy={"blueGreen": {"scaleDownDelay": "20s", "approval": {"reason": "check"},
                                             "prePromotionAnalysis": {"passes": 2}}},
                  traffic=HTTPROUTE, analysis=ANALYSIS)
    w.metric_values["ok"] = 1.0
    w.set_image("img:2")
    assert walk(w)[-1] == "5/5"  # the preview's pods run at full size already: promotion takes one decision


@pytest.mark.parametrize("at", [1, 4])
def test_promote_mid_rollout(at: int) -> None:
    w = released(STEPS, analysis=ANALYSIS)
    w.metric_values["ok"] = 1.0
    w.set_image("img:2")

    def promote(w: World) -> None:
        if w.status.current_step == at and w.status.phase is not Phase.PROMOTING and PROMOTE not in w.annotations:
            w.annotations[PROMOTE] = f"{w.revision}-{at}"

    walk(w, tweak=promote)
    assert any(h.outcome == "Promoted" for h in w.status.history)


def test_the_column_is_the_status_field_and_a_string() -> None:
    col = next(c for c in PRINTER_COLUMNS if c["name"] == "Step")
    assert col == {**col, "type": "string", "jsonPath": ".status.stepProgress"}
    assert step_of(0, 5) == "1/5" and step_of(4, 5) == "5/5" and step_of(5, 5) == "5/5 done"
