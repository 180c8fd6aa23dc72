"""Webhook notifications and transition metrics, pure parts on the simulated world (virtual clock), and the
Notifier's retry/backoff/redaction logic with a recording poster instead of the network."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from typing import Any

import pytest

from modelrollout import api
from modelrollout.core.approval import ABORT, APPROVE
from modelrollout.core.model import Decision, Event
from modelrollout.core.notifications import NOTIFY_EVENTS, Notice, notices
from modelrollout.core.transitions import approvals_consumed, completed_steps
from modelrollout.notify import Delivery, Notifier, Response, Target, redact, retry_after

from .sim import T0, World, released

STEPS = [{"setWeight": 20}, {"approval": {"reason": "look"}}, {"pause": {"duration": "10s"}}, {"setWeight": 100}]


def transitions(w: World, start: int) -> list[tuple[api.ModelRolloutStatus, Decision]]:
    out = []
    for i in range(start, len(w.decisions)):
        old = w.decisions[i - 1].status if i > 0 else api.ModelRolloutStatus()
        out.append((old, w.decisions[i]))
    return out


def sent(w: World, start: int, wanted: tuple[str, ...] = ()) -> list[Notice]:
    out: list[Notice] = []
    for old, d in transitions(w, start):
        out += notices(namespace="ns", name="m", uid="u-1", revision=w.revision, old=old, new=d.status,
                       events=d.events, now=d.status.step_started_at or w.now, wanted=wanted)
    return out


def test_approval_promotion_and_abort_notices() -> None:
    w = released(STEPS, rollback={"scaleDownDelay": "5s"})
    start = len(w.decisions)
    w.set_image("img:2")
    w.run(until=lambda w: w.status.phase is api.Phase.AWAITING_APPROVAL)
    assert w.status.approval is not None
    token, since = w.status.approval.token, w.status.approval.since
    w.now += timedelta(minutes=7)
    w.annotations[APPROVE] = token
    w.run(until=lambda w: w.status.phase is api.Phase.SUCCEEDED)
    got = sent(w, start)
    kinds = [n.event for n in got]
    assert kinds.index("AwaitingApproval") < kinds.index("Approved") < kinds.index("Promoting") \
        < kinds.index("Promoted")
    assert "Succeeded" not in kinds and "RollingBack" not in kinds
    waiting = next(n.payload for n in got if n.event == "AwaitingApproval")
    assert waiting["approval"]["token"] == token and "kubectl annotate" in waiting["approval"]["command"]
    assert waiting["rollout"] == {"namespace": "ns", "name": "m", "uid": "u-1"} and waiting["phase"] == \
        "AwaitingApproval"
    promoted = next(n.payload for n in got if n.event == "Promoted")
    assert promoted["stableRevision"] == w.revision == promoted["revision"] and promoted["weight"] == 0
    assert "approval" not in promoted
    assert len({n.id for n in got}) == len(got), "one delivery id per event"
    # the filter
    assert [n.event for n in sent(w, start, ("Promoted",))] == ["Promoted"]

    # transition metrics of the same run: each step once, the approval wait from approval.since
    steps = [s for old, d in transitions(w, start) for s in completed_steps(w.spec, old, d.status, w_now(d, w))]
    assert [s.index for s in steps] == [0, 1, 2, 3]
    assert [s.kind for s in steps] == ["setWeight", "approval", "pause", "setWeight"]
    assert steps[2].seconds >= 10
    waits = [a for old, d in transitions(w, start) for a in approvals_consumed(old, d.status, w_now(d, w))]
    assert len(waits) == 1 and waits[0].action == "continue"
    assert since is not None and waits[0].seconds >= 7 * 60

    # an abort: RollingBack and RolledBack with the reason; the dropped gate is no approval
    start = len(w.decisions)
    w.set_image("img:3")
    w.run(until=lambda w: w.status.phase is api.Phase.AWAITING_APPROVAL)
    w.annotations[ABORT] = "true"
    w.run(until=lambda w: w.status.phase is api.Phase.ROLLED_BACK)
    got = sent(w, start)
    back = [n.payload for n in got if n.event in ("RollingBack", "RolledBack")]
    assert [p["event"] for p in back] == ["RollingBack", "RolledBack"]
    assert all(p["rollback"]["outcome"] == "Aborted" and p["rollback"]["reason"] == "aborted by user" for p in back)
    assert not [a for old, d in transitions(w, start) for a in approvals_consumed(old, d.status, w_now(d, w))]


def w_now(d: Decision, w: World) -> Any:
    """The decision's clock: every decision that moves a step stamps stepStartedAt with its now."""
    return d.status.step_started_at or w.now


def test_every_notify_event_is_reachable_from_an_event_reason() -> None:
    from modelrollout.core.notifications import EVENT_BY_REASON

    assert set(EVENT_BY_REASON.values()) | {"Promoted", "Succeeded"} == set(NOTIFY_EVENTS)


# ------------------------------------------------------------------------------------------ Notifier


class Recorder:
    def __init__(self, answers: list[Response | Exception]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, dict[str, Any], dict[str, str], float]] = []
        self.waits: list[float] = []

    def post(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> Response:
        import json

        self.calls.append((url, json.loads(body), headers, timeout))
        answer = self.answers.pop(0) if self.answers else Response(200)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        return False


def delivery(url: str = "https://user:pw@hooks.example:8443/path/x?token=s3cret#frag") -> Delivery:
    return Delivery(Target(url, 2.0), Notice("Promoted", "id-1", {"event": "Promoted", "id": "id-1"}))


def test_retries_with_exponential_backoff_and_honours_retry_after(caplog: pytest.LogCaptureFixture) -> None:
    rec = Recorder([Response(500), OSError("connection refused"), Response(429, retry_after=7.0), Response(200)])
    n = Notifier(post=rec.post, wait=rec.wait, backoff=0.5, max_attempts=5)
    with caplog.at_level(logging.DEBUG, logger="modelrollout.notify"):
        assert n.deliver(delivery())
    assert len(rec.calls) == 4 and rec.waits == [0.5, 1.0, 7.0]
    assert {c[2]["X-ModelRollout-Delivery"] for c in rec.calls} == {"id-1"}
    assert all(c[1] == {"event": "Promoted", "id": "id-1"} for c in rec.calls)
    assert "s3cret" not in caplog.text and "pw" not in caplog.text and "user" not in caplog.text
    assert "https://hooks.example:8443/path/x" in caplog.text


def test_gives_up_after_max_attempts_and_on_a_final_answer() -> None:
    rec = Recorder([Response(503)] * 10)
    assert not Notifier(post=rec.post, wait=rec.wait, max_attempts=3, backoff=1, max_backoff=1.5).deliver(delivery())
    assert len(rec.calls) == 3 and rec.waits == [1, 1.5]
    rec = Recorder([Response(404)])
    assert not Notifier(post=rec.post, wait=rec.wait).deliver(delivery())
    assert len(rec.calls) == 1 and rec.waits == []


def test_redact_and_retry_after() -> None:
    assert redact("https://u:p@h.example:8443/a/b?token=x#f") == "https://h.example:8443/a/b"
    assert redact("http://[::1]:9/x?y") == "http://[::1]:9/x"
    assert retry_after("3", 0) == 3.0 and retry_after("100000", 0) == 120.0 and retry_after(None, 0) is None
    assert retry_after("Thu, 01 Jan 1970 00:00:10 GMT", 4.0) == 6.0
    assert retry_after("garbage", 0) is None
    assert "s3cret" not in repr(delivery().target)


def test_a_full_queue_drops_instead_of_blocking() -> None:
    gate, posting = threading.Event(), threading.Event()

    def stuck(url: str, body: bytes, headers: dict[str, str], timeout: float) -> Response:
        posting.set()
        gate.wait(30)
        return Response(200)

    n = Notifier(post=stuck, queue_size=1)
    try:
        first = n.submit(delivery())
        assert posting.wait(30), "the worker took the first notification"
        results = [n.submit(delivery()) for _ in range(4)]  # one queued behind the stuck one, the rest dropped
        assert first and results == [True, False, False, False]
    finally:
        gate.set()
        n.close()


def test_the_spec_webhook_replaces_the_default_and_filters() -> None:
    n = Notifier("http://default.example/hook", post=Recorder([]).post)
    spec = World({"replicas": 1, "selector": {"matchLabels": {"app": "m"}},
                  "template": {"metadata": {"labels": {"app": "m"}}, "spec": {"containers": [{"name": "m",
                                                                                                "image": "i"}]}},
                  "traffic": {"service": {"name": "m"}}, "strategy": {"canary": {"steps": [{"setWeight": 100}]}},
                  "notify": {"webhook": {"url": "https://mine.example/x", "events": ["RolledBack"],
                                         "timeout": "90s"}}}).spec
    target = n.target_for(spec)
    assert target is not None and target.url == "https://mine.example/x" and target.events == {"RolledBack"}
    assert target.timeout == 60.0
    assert n.target_for(None) == Target("http://default.example/hook", 5.0)
    assert Notifier().target_for(None) is None
    old = api.ModelRolloutStatus()
    new = api.ModelRolloutStatus(phase=api.Phase.SUCCEEDED)
    assert n.notify({"metadata": {"name": "m"}}, spec, "r", old, new, [Event("Normal", "PhaseSucceeded", "x")],
                    T0) == 0  # filtered out
