"""Refused writes (core.refusal): which answers back off, the status a stall writes, conditions, finite JSON."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from modelrollout import api
from modelrollout.api import Phase
from modelrollout.apply import status_body
from modelrollout.core.actions import EnsureStable
from modelrollout.core.notifications import Notice
from modelrollout.core.phases import allowed
from modelrollout.core.plan import STALLED, conditions
from modelrollout.core.refusal import (
    BACKOFF_CAP,
    Refusal,
    backoff,
    classify,
    finite_json,
    finite_status,
    stalled_phase,
    stalled_status,
)
from modelrollout.core.revision import CONFIG_MAP_LIMIT, fitting
from modelrollout.notify import Delivery, Notifier, Response, Target

from .sim import T0, World, released
from .test_argocd_health import health, rollout


@pytest.mark.parametrize(("code", "kind"), [
    (None, "transient"), (0, "transient"), (404, "transient"), (408, "transient"), (409, "transient"),
    (429, "transient"), (500, "transient"), (503, "transient"), (504, "transient"),
    (401, "refused"), (403, "refused"), (405, "refused"), (415, "refused"),
    (400, "permanent"), (413, "permanent"), (422, "permanent"),
])
def test_classify(code: int | None, kind: str) -> None:
    assert classify(code) == kind


def test_backoff_doubles_and_is_capped() -> None:
    waits = [backoff(n) for n in range(1, 12)]
    assert waits[:4] == [1.0, 2.0, 4.0, 8.0]
    assert all(b >= a for a, b in itertools.pairwise(waits))
    assert max(waits) == BACKOFF_CAP and backoff(10_000) == BACKOFF_CAP
    assert backoff(0) == backoff(1)


FORBIDDEN = Refusal(403, "Forbidden", 'ingresses.networking.k8s.io "m-canary" is forbidden: no', "the SetWeight write")
TOO_BIG = Refusal(422, "Invalid", 'ConfigMap "m-config-x" is invalid: []: Too long: must have at most 1048576 bytes',
                  "the EnsureCanary write", rendered=True)
BAD_STATUS = Refusal(400, "BadRequest", "invalid character 'I' looking for beginning of value", "the status update")


def progressing(generation: int = 4) -> api.ModelRolloutStatus:
    st = api.ModelRolloutStatus(phase=Phase.PROGRESSING, message="step 1/3 (setWeight 20): weight 20",
                                observed_generation=generation, stable_revision="aaaaaaaaaa",
                                canary_revision="bbbbbbbbbb", current_step=1, current_weight=20)
    return st.model_copy(update={"conditions": conditions(st, [], T0, generation)})


def kinds(status: api.ModelRolloutStatus) -> dict[str, api.Condition]:
    return {c.type: c for c in status.conditions}


def test_a_forbidden_write_stalls_with_the_apiservers_message_and_keeps_the_state() -> None:
    old = progressing()
    st = stalled_status(old, FORBIDDEN, generation=4, now=T0 + timedelta(seconds=5), retry_in=4)
    c = kinds(st)
    assert c["Stalled"].status == "True" and "is forbidden: no" in c["Stalled"].message
    assert c["Stalled"].reason == "WriteRefused" and c["Stalled"].observed_generation == 4
    assert c["Ready"].status == "False"
    assert st.phase is Phase.PROGRESSING  # a retry may help (RBAC fixed): the phase is the state, kept
    assert st.message.startswith(STALLED) and "403 Forbidden" in st.message and "retrying in 4s" in st.message
    # nothing else changes: the next decision continues from the recorded state
    assert (st.current_step, st.current_weight, st.canary_revision) == (1, 20, "bbbbbbbbbb")


def test_a_permanent_refusal_of_a_rendered_object_is_invalid_and_of_the_status_failed() -> None:
    assert stalled_phase(Phase.PROGRESSING, TOO_BIG) is Phase.INVALID
    assert stalled_phase(Phase.PROGRESSING, BAD_STATUS) is Phase.FAILED
    assert stalled_phase(Phase.SUCCEEDED, BAD_STATUS) is Phase.SUCCEEDED  # core.phases: never Succeeded -> Failed
    assert stalled_phase(Phase.SUCCEEDED, TOO_BIG) is Phase.INVALID
    for old in Phase:  # a stall never makes a move a reconcile may not make
        for refusal in (FORBIDDEN, TOO_BIG, BAD_STATUS):
            new = stalled_phase(old, refusal)
            assert new is old or (new is not None and allowed(old, new)), (old, refusal.code, new)
    assert stalled_phase(Phase.PROGRESSING, FORBIDDEN) is Phase.PROGRESSING
    for phase in (Phase.PROMOTING, Phase.ROLLING_BACK):  # the next decision continues from these
        assert stalled_phase(phase, TOO_BIG) is phase
    st = stalled_status(progressing(), BAD_STATUS, generation=5, now=T0, retry_in=1, done="Progressing: weight 50")
    assert st.phase is Phase.FAILED and st.observed_generation == 5
    assert "carried out but not recorded: Progressing: weight 50" in st.message
    assert "cannot help" in st.message and "invalid character 'I'" in kinds(st)["Stalled"].message


def test_a_stalled_rollback_keeps_its_message_for_rolled_back() -> None:
    old = progressing().model_copy(update={"phase": Phase.ROLLING_BACK, "message": "rolling back revision b: x"})
    st = stalled_status(old, FORBIDDEN, generation=4, now=T0, retry_in=1)
    assert st.message == old.message and st.phase is Phase.ROLLING_BACK
    assert kinds(st)["Stalled"].status == "True" and "forbidden" in kinds(st)["Stalled"].message


def test_ready_only_for_the_generation_the_status_describes() -> None:
    st = api.ModelRolloutStatus(phase=Phase.SUCCEEDED, message="ok", observed_generation=3)
    assert kinds(st.model_copy(update={"conditions": conditions(st, [], T0, 3)}))["Ready"].status == "True"
    for generation in (2, 4):
        got = {c.type: c.status for c in conditions(st, [], T0, generation)}
        assert got["Ready"] == "False", generation
    unobserved = st.model_copy(update={"observed_generation": None})
    assert {c.type: c.status for c in conditions(unobserved, [], T0, 3)}["Ready"] == "False"
    stalled = {c.type: c.status for c in conditions(st, [], T0, 3, stalled="stalled: x")}
    assert stalled["Ready"] == "False" and stalled["Stalled"] == "True"


def test_the_next_decision_clears_the_stall() -> None:
    w = released([{"setWeight": 20}, {"pause": {}}, {"setWeight": 100}])
    w.set_image("img:2")
    w.run(until=lambda w: w.status.phase is Phase.AWAITING_APPROVAL)
    waiting = w.status.message
    w.status = stalled_status(w.status, FORBIDDEN, generation=w.status.observed_generation or 0, now=w.now,
                              retry_in=1)
    assert kinds(w.status)["Stalled"].status == "True"
    w.step()
    c = kinds(w.status)
    assert c["Stalled"].status == "False" and c["Ready"].status == "False"
    assert w.status.message == waiting  # the gate's message again, with its command
    # a decision that sets no message of its own says the stall is over instead of repeating it
    w.status = stalled_status(w.status, FORBIDDEN, generation=w.status.observed_generation or 0, now=w.now,
                              retry_in=1)
    w.set_image("img:1")  # back to stable: steady, which sets its own message
    w.step()
    assert not w.status.message.startswith(STALLED)


def test_non_finite_floats_become_null_and_are_named() -> None:
    body: dict[str, Any] = {"message": "step 1", "analysis": [
        {"name": "compat", "value": math.inf, "verdict": "Pass", "message": "1 series"},
        {"name": "lat", "value": -math.inf, "verdict": "Fail", "message": None},
        {"name": "ok", "value": 0.5, "verdict": "Pass", "message": "fine"},
        {"name": "none", "value": math.nan, "verdict": "Inconclusive"},
    ]}
    clean, found = finite_json(body)
    assert found == ["analysis[0].value=+Inf", "analysis[1].value=-Inf", "analysis[3].value=NaN"]
    metrics = clean["analysis"]
    assert [m["value"] for m in metrics] == [None, None, 0.5, None]
    assert metrics[0]["message"] == "1 series (value=+Inf: not a finite number, written as null)"
    assert metrics[1]["message"] == "value=-Inf: not a finite number, written as null"
    assert metrics[2]["message"] == "fine" and "message" not in metrics[3]
    status = finite_status(body)
    assert status["message"].startswith("step 1; not finite, written as null: analysis[0].value=+Inf")
    json.dumps(status, allow_nan=False)  # valid JSON: the apiserver can parse it
    assert body["analysis"][0]["value"] == math.inf  # the input is not changed


def test_status_body_never_carries_a_non_finite_number() -> None:
    st = progressing().model_copy(update={"analysis": [
        api.MetricStatus(name="compat", value=math.inf, verdict=api.Verdict.PASS, message="ok", at=T0)]})
    body = status_body(st)
    text = json.dumps(body, allow_nan=False)
    assert "Infinity" not in text and body["analysis"][0]["value"] is None
    assert "value=+Inf" in body["analysis"][0]["message"] and "analysis[0].value=+Inf" in body["message"]


@pytest.mark.parametrize("phase", [Phase.PROGRESSING, Phase.SUCCEEDED, Phase.AWAITING_APPROVAL, Phase.ROLLING_BACK])
def test_argo_cd_sees_a_stall_as_degraded_whatever_the_phase(phase: Phase) -> None:
    old = progressing().model_copy(update={"phase": phase})
    st = stalled_status(old, FORBIDDEN, generation=4, now=T0, retry_in=2)
    got = health(rollout(st, generation=4))
    assert got["status"] == "Degraded"
    assert "is forbidden" in got["message"]  # the Stalled condition's message (a rollback keeps its own message)


def test_a_notification_never_carries_a_non_finite_number() -> None:
    sent: list[bytes] = []

    def post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> Response:
        sent.append(body)
        return Response(200)

    notice = Notice("RollingBack", "id-1", {"event": "RollingBack", "value": math.inf,
                                            "metrics": [{"value": math.nan, "message": "no data"}]})
    assert Notifier(post=post).deliver(Delivery(Target("https://hooks.example/x", 1.0), notice))
    got = json.loads(sent[0], parse_constant=lambda c: pytest.fail(f"{c} in a notification"))
    assert got["value"] is None and got["metrics"][0] == {"value": None, "message":
                                                          "no data (value=NaN: not a finite number, written as null)"}


def ready_now(w: World) -> Phase | None:
    return w.status.phase  # read afresh each time (mypy would narrow an attribute across w.step())


def test_succeeded_only_while_stable_is_whole_and_ready() -> None:
    """Ready is not claimed for a stable the world does not show: a lost or unready stable Deployment is
    Progressing (restoring) until it is back."""
    w = released([{"setWeight": 20}, {"setWeight": 100}])
    assert w.stable is not None and ready_now(w) is Phase.SUCCEEDED
    w.stable = replace(w.stable, ready=2)  # two of four stable pods lost
    w.step()
    assert ready_now(w) is Phase.PROGRESSING and kinds(w.status)["Ready"].status == "False"
    assert "restoring stable revision" in w.status.message and "2/4 ready" in w.status.message
    w.stable = replace(w.stable, ready=4)
    w.step()
    assert ready_now(w) is Phase.SUCCEEDED and kinds(w.status)["Ready"].status == "True"
    w.stable = None  # the stable Deployment deleted
    d = w.step()
    assert any(isinstance(a, EnsureStable) for a in d.actions)
    assert ready_now(w) is Phase.PROGRESSING and kinds(w.status)["Ready"].status == "False"
    w.step()  # the simulated world makes it ready at once
    assert ready_now(w) is Phase.SUCCEEDED


def test_recorded_revisions_fit_in_one_config_map() -> None:
    """NAME-revisions keeps the last keepRevisions + 1 templates, but never more than a ConfigMap holds: a large
    model config leaves room for fewer (the oldest go first), one too large alone is not recorded."""
    small = {r: "{}" for r in "abcde"}
    assert fitting(list("abcde"), small, keep=2) == ["c", "d", "e"]
    assert fitting(list("abcde"), small, keep=0) == ["d", "e"]  # the current and one to go back to, at least
    big = {r: "x" * (400 * 1024) for r in "abc"}
    assert fitting(list("abc"), big, keep=2) == ["b", "c"]
    assert sum(len(big[r]) for r in fitting(list("abc"), big, keep=2)) <= CONFIG_MAP_LIMIT
    assert fitting(["a"], {"a": "x" * CONFIG_MAP_LIMIT}, keep=2) == []
    assert fitting(["gone", "a"], {"a": "{}"}, keep=2) == ["a"]  # revisions without an entry are dropped
