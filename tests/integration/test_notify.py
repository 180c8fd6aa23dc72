"""Webhook notifications from the real operator to a real HTTP receiver on 127.0.0.1.

The receiver answers 500 to the first attempt of every delivery (half of them with ``Retry-After: 1``) and 200
to the next, so every notification is retried once. The operator posts from one worker thread in order, so
once a later notification has arrived every earlier one is finished: that is how the tests know no duplicate
can still come, without waiting for a while.
"""

from __future__ import annotations

import base64
import json
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from devenv.localenv.controlplane import ControlPlane
from devenv.localenv.procs import LOCALHOST, ManagedProcess, wait_until
from devenv.localenv.prometheus import Prometheus

from .conftest import running_operator
from .exporters import exporters
from .kube import Kubectl
from .manifests import ingress, nginx, rollout, service

APPROVE = "modelrollout.io/approve"
SPEC_SECRET = "spec-token-4f1c9e2a7b"
DEFAULT_SECRET = "default-token-9d3e5b1f0c"
DEFAULT_PASSWORD = "hunter2-pw-7a6b"
COMPAT = 'min(model_api_compatibility_score{rollout="{{rollout}}",track="{{track}}"})'


@dataclass
class Attempt:
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    """Lower-cased names."""
    body: dict[str, Any]
    status: int


class Receiver:
    """A webhook receiver: 500 to the first attempt of each delivery id, 200 to the rest; records every attempt."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.attempts: list[Attempt] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                parts = urllib.parse.urlsplit(self.path)
                with receiver.lock:
                    first = all(a.body.get("id") != body.get("id") for a in receiver.attempts)
                    status = 500 if first else 200
                    receiver.attempts.append(Attempt(parts.path, urllib.parse.parse_qs(parts.query),
                                                     {k.lower(): v for k, v in self.headers.items()}, body,
                                                     status))
                    slow = first and len(receiver.attempts) % 2 == 0
                self.send_response(status)
                if slow:
                    self.send_header("Retry-After", "1")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((LOCALHOST, 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str, query: str = "", userinfo: str = "") -> str:
        return f"http://{userinfo + '@' if userinfo else ''}{LOCALHOST}:{self.port}{path}{'?' + query if query else ''}"

    def accepted(self, name: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return [a.body for a in self.attempts if a.status == 200
                    and (name is None or a.body.get("rollout", {}).get("name") == name)]

    def all_attempts(self) -> list[Attempt]:
        with self.lock:
            return list(self.attempts)

    def wait_for(self, name: str, event: str, revision: str, timeout: float = 90) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            return next((b for b in self.accepted(name) if b["event"] == event and b["revision"] == revision), None)

        return wait_until(found, timeout, 0.1, what=f"webhook {event} of {name} revision {revision}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.close()


@pytest.fixture
def notifying_operator(crd: ControlPlane, namespace: str, tmp_path: Path,
                       receiver: Receiver) -> Iterator[ManagedProcess]:
    """The operator with an operator-wide webhook (env MODELROLLOUT_NOTIFY_WEBHOOK, as the chart sets it) whose
    URL carries a password and a token."""
    url = receiver.url("/hooks/default", f"token={DEFAULT_SECRET}", f"ops:{DEFAULT_PASSWORD}")
    with running_operator(crd, namespace, tmp_path / "operator.log", MODELROLLOUT_NOTIFY_WEBHOOK=url) as proc:
        yield proc


def check_deliveries(receiver: Receiver, sentinel: dict[str, Any]) -> None:
    """At least once, and exactly once accepted: every delivery up to the sentinel was answered 500 once, then
    accepted once, and none of them was posted again after it (later ones may still be under way)."""
    attempts = receiver.all_attempts()
    end = next(i for i, a in enumerate(attempts) if a.status == 200 and a.body["id"] == sentinel["id"])
    by_id: dict[str, list[int]] = {}
    for a in attempts[:end + 1]:
        by_id.setdefault(a.body["id"], []).append(a.status)
        assert a.headers["x-modelrollout-delivery"] == a.body["id"]
        assert a.headers["x-modelrollout-event"] == a.body["event"]
        assert a.headers["content-type"] == "application/json"
    assert by_id and all(statuses == [500, 200] for statuses in by_id.values()), by_id
    assert not [a.body for a in attempts[end + 1:] if a.body["id"] in by_id], "posted again after it was accepted"


def assert_not_logged(proc: ManagedProcess, *secrets: str) -> None:
    text = proc.log.read_text(errors="replace")
    assert "notification" in text and "delivered" in text, proc.log_tail(40)
    for secret in secrets:
        assert secret not in text, f"{secret!r} leaked into the operator log"


def test_approval_and_promotion_are_posted_once_each_after_a_retry(
        k: Kubectl, notifying_operator: ManagedProcess, receiver: Receiver) -> None:
    url = receiver.url("/hooks/spec", f"token={SPEC_SECRET}")
    steps = [{"setWeight": 20}, {"approval": {"reason": "look at the dashboards"}}, {"setWeight": 100}]
    spec = {**nginx("hook"), "rollback": {"scaleDownDelay": "1s"},
            "notify": {"webhook": {"url": url, "events": ["AwaitingApproval", "Approved", "Promoted"],
                                   "timeout": "3s"}}}
    k.apply(service("hook") + "\n---\n" + ingress("hook", "hook-stable"))
    k.apply(rollout("hook", steps=steps, **spec))
    first = str(k.wait_phase("hook", "Succeeded", 90)["stableRevision"])
    k.apply(rollout("hook", image="model:2", steps=steps, **spec))
    st = k.wait_phase("hook", "AwaitingApproval", 90)
    rev2, token = st["canaryRevision"], st["approval"]["token"]

    waiting = receiver.wait_for("hook", "AwaitingApproval", rev2)
    assert waiting["approval"]["token"] == token and waiting["approval"]["command"] == st["approval"]["command"]
    assert waiting["rollout"]["namespace"] == k.ns and waiting["rollout"]["name"] == "hook"
    assert waiting["phase"] == "AwaitingApproval" and waiting["weight"] == 20 and waiting["step"] == 1
    assert waiting["stableRevision"] == first and waiting["time"].endswith("Z")

    k.annotate("hook", APPROVE, token)
    promoted = receiver.wait_for("hook", "Promoted", rev2)
    assert promoted["stableRevision"] == rev2 and promoted["phase"] == "Succeeded" and "approval" not in promoted
    assert k.status("hook")["stableRevision"] == rev2

    # a sentinel: the next revision's gate. Posted after everything above, so nothing above can still arrive.
    k.apply(rollout("hook", image="model:3", steps=steps, **spec))
    rev3 = k.wait(name="hook", predicate=lambda s: s.get("phase") == "AwaitingApproval" and s["canaryRevision"]
                  not in (rev2, first), timeout=90)["canaryRevision"]
    sentinel = receiver.wait_for("hook", "AwaitingApproval", rev3)

    check_deliveries(receiver, sentinel)
    got = [(b["event"], b["revision"]) for b in receiver.accepted("hook")]
    # the first release is "Succeeded" (filtered out); SetWeight, Promoting, ... are filtered out too
    assert got == [("AwaitingApproval", rev2), ("Approved", rev2), ("Promoted", rev2), ("AwaitingApproval", rev3)]
    for a in receiver.all_attempts():
        assert a.path == "/hooks/spec" and a.query == {"token": [SPEC_SECRET]}
        assert "authorization" not in a.headers
    assert_not_logged(notifying_operator, SPEC_SECRET)
    assert f"{LOCALHOST}:{receiver.port}/hooks/spec" in notifying_operator.log.read_text()


def test_a_breach_rollback_goes_to_the_operator_wide_webhook(
        k: Kubectl, notifying_operator: ManagedProcess, receiver: Receiver, prometheus: Prometheus,
        tmp_path: Path) -> None:
    steps = [{"setWeight": 20}, {"analysis": {"passes": 1}}, {"setWeight": 50}, {"pause": {}}, {"setWeight": 100}]
    spec = {**nginx("brk"), "rollback": {"scaleDownDelay": "1s"},
            "analysis": {"interval": "1s", "prometheus": {"address": prometheus.url, "timeout": "2s"},
                         "metrics": [{"name": "api-compatibility", "query": COMPAT, "min": 0.99}]}}
    with exporters(prometheus, tmp_path, "brk") as ex:
        k.apply(service("brk") + "\n---\n" + ingress("brk", "brk-stable"))
        k.apply(rollout("brk", steps=steps, **spec))
        first = str(k.wait_phase("brk", "Succeeded", 90)["stableRevision"])
        k.apply(rollout("brk", image="model:2", steps=steps, **spec))
        st = k.wait(name="brk", predicate=lambda s: s.get("phase") == "AwaitingApproval" and s.get("currentWeight")
                    == 50, timeout=120)
        rev2 = st["canaryRevision"]
        waiting = receiver.wait_for("brk", "AwaitingApproval", rev2)
        assert waiting["approval"]["token"] == st["approval"]["token"]
        ex["canary"].set_score(0.5)
        k.wait_phase("brk", "RolledBack", 90)
        rolled = receiver.wait_for("brk", "RolledBack", rev2)
        # the sentinel: a new revision's first step (the canary's score is still 0.5: it rolls back too)
        k.apply(rollout("brk", image="model:3", steps=steps, **spec))
        rev3 = k.wait(name="brk", predicate=lambda s: s.get("canaryRevision") not in (None, rev2, first),
                      timeout=90)["canaryRevision"]
        sentinel = receiver.wait_for("brk", "SetWeight", rev3)

    assert rolled["phase"] == "RolledBack" and rolled["stableRevision"] == first and rolled["weight"] == 0
    assert rolled["rollback"]["outcome"] == "RolledBack" and "api-compatibility" in rolled["rollback"]["reason"]
    assert rolled["rollback"]["revision"] == rev2
    check_deliveries(receiver, sentinel)
    events = [(b["event"], b["revision"]) for b in receiver.accepted("brk")]
    assert events[0] == ("Succeeded", first)  # the first release, to the operator-wide webhook (no filter)
    for event in ("AwaitingApproval", "RollingBack", "RolledBack"):  # (AnalysisFailed is for a breach that pauses)
        assert events.count((event, rev2)) == 1, (event, events)
    order = [e for e, r in events if r == rev2]
    assert order.index("AwaitingApproval") < order.index("RollingBack") < order.index("RolledBack")
    rolling = next(b for b in receiver.accepted("brk") if b["event"] == "RollingBack")
    assert "api-compatibility" in rolling["message"] and rolling["rollback"]["outcome"] == "RolledBack"
    basic = base64.b64encode(f"ops:{DEFAULT_PASSWORD}".encode()).decode()
    for a in receiver.all_attempts():
        assert a.path == "/hooks/default" and a.query == {"token": [DEFAULT_SECRET]}
        assert a.headers["authorization"] == f"Basic {basic}"
    assert_not_logged(notifying_operator, DEFAULT_SECRET, DEFAULT_PASSWORD, basic)


@pytest.mark.parametrize(("url", "message"), [
    ("ftp://hooks.example/x", "spec.notify.webhook.url"),
    ("http:///no-host", "spec.notify.webhook.url"),
    ("hooks.example/x", "spec.notify.webhook.url"),
])
def test_the_apiserver_rejects_a_bad_webhook_url(k: Kubectl, url: str, message: str) -> None:
    res = k.cp.kubectl("-n", k.ns, "apply", "-f", "-", check=False,
                       input=rollout("bad", notify={"webhook": {"url": url}}))
    assert res.returncode != 0 and message in res.stderr, (res.stdout, res.stderr)
    res = k.cp.kubectl("-n", k.ns, "apply", "-f", "-", check=False,
                       input=rollout("bad", notify={"webhook": {"url": "https://hooks.example/x", "events": ["Nope"]}}))
    assert res.returncode != 0 and "spec.notify.webhook.events" in res.stderr, res.stderr
