"""High availability: two operator processes with ``--leader-elect`` against the local control plane.

Each operator has its own client certificate (``/O=system:masters/CN=...``), so the apiserver's audit log tells
their requests apart. One leads and writes; the other stands by (it only reads the Lease) and answers its
liveness URL. Killing the leader (SIGKILL) hands over after the lease duration and the rollout goes on from
where it was, every weight written once; stopping it (SIGTERM) releases the Lease and hands over at once.
"""

from __future__ import annotations

import json
import os
import signal
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from bench.common import AuditLog, Request

from devenv.localenv.controlplane import ControlPlane, client_kubeconfig
from devenv.localenv.operatorproc import kill_hard, operator_process
from devenv.localenv.procs import ManagedProcess, free_port, wait_until

from .kube import Kubectl, Watch, release_behind_nginx, wait_audit
from .manifests import nginx, rollout

LEASE = "modelrollout-leader"
WRITES = ("create", "update", "patch", "delete")


# ------------------------------------------------------------------------------------------------ audit log


def requests_in(cp: ControlPlane, namespace: str) -> list[Request]:
    """Every completed resource request in ``namespace``, in the order the apiserver received them."""
    return sorted(AuditLog(cp.audit_log).since_mark(namespace), key=lambda r: r.received)


def writes(requests: list[Request], user: str, *, leases: bool = False) -> list[Request]:
    """The successful writes of ``user`` (to the Lease only, or to everything else); dry runs write nothing."""
    return [r for r in requests if r.user == user and r.verb in WRITES and 200 <= r.code < 300 and not r.dry_run
            and (r.resource == "leases") == leases]


# ------------------------------------------------------------------------------------------------ operators


@dataclass
class Replica:
    identity: str
    """POD_NAME: the holderIdentity it writes into the Lease."""
    user: str
    """The CN of its client certificate: its username in the audit log."""
    process: ManagedProcess
    health: str

    def liveness(self) -> dict[str, Any] | None:
        """The liveness URL's JSON when it answers 200, else None."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(self.health, timeout=2) as resp:
                return dict(json.loads(resp.read() or b"{}")) if resp.status == 200 else None
        except (OSError, ValueError):
            return None


class Pair:
    """Two operators watching the test namespace, electing a leader through a Lease there."""

    def __init__(self, cp: ControlPlane, namespace: str, tmp: Path) -> None:
        self.cp, self.namespace, self.tmp = cp, namespace, tmp
        self.replicas: list[Replica] = []

    def add(self, identity: str, *timing: str) -> Replica:
        user = f"modelrollout-{identity}-{uuid.uuid4().hex[:6]}"
        kubeconfig = client_kubeconfig(self.cp, user, self.tmp / f"{identity}.kubeconfig")
        health = f"http://127.0.0.1:{free_port()}/healthz"
        proc = operator_process(kubeconfig, self.tmp / f"{identity}.log", namespaces=[self.namespace], extra=[
            "--leader-elect", "--leader-elect-namespace", self.namespace, "--leader-elect-lease-name", LEASE,
            "--liveness", health, *timing])
        proc.env = {**(proc.env or {}), "POD_NAME": identity}
        replica = Replica(identity, user, proc, health)
        self.replicas.append(replica)
        return replica

    def holder(self) -> str:
        res = self.cp.kubectl("-n", self.namespace, "get", "lease", LEASE, "-o", "json", check=False)
        return str(json.loads(res.stdout)["spec"].get("holderIdentity") or "") if res.returncode == 0 else ""

    def wait_holder(self, identity: str, timeout: float) -> None:
        def held() -> bool:
            for r in self.replicas:
                if r.identity == identity:
                    r.process.check_alive()
            return self.holder() == identity

        wait_until(held, timeout, 0.1, what=f"Lease {LEASE} held by {identity}")

    def start(self, *timing: str) -> tuple[Replica, Replica]:
        """Operator a, leading once it holds the Lease, then operator b, a standby that answers liveness."""
        a, b = self.add("op-a", *timing), self.add("op-b", *timing)
        a.process.start()
        self.wait_holder("op-a", 60)
        wait_until(lambda: a.liveness() is not None, 30, 0.1, what="the leader's liveness (kopf)")
        b.process.start()
        self.wait_standby(b, "op-a")
        return a, b

    def wait_standby(self, r: Replica, holder: str) -> None:
        """Until ``r`` answers its liveness URL as a standby that has seen ``holder`` hold the Lease."""
        def standing_by() -> bool:
            r.process.check_alive()
            body = r.liveness()
            return body is not None and body.get("standby") is True and body.get("holder") == holder

        wait_until(standing_by, 30, 0.1, what=f"{r.identity}'s liveness answer as a standby")

    def close(self) -> None:
        for r in self.replicas:
            r.process.stop()
            print(f"--- {r.identity} log tail ({r.process.log})\n{r.process.log_tail(40)}")


@pytest.fixture
def pair(crd: ControlPlane, namespace: str, tmp_path: Path) -> Iterator[Pair]:
    p = Pair(crd, namespace, tmp_path)
    try:
        yield p
    finally:
        p.close()


def release_first(k: Kubectl, name: str, steps: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    spec = nginx(name)
    return release_behind_nginx(k, name, steps, **spec), spec


# ---------------------------------------------------------------------------------------------------- tests


def test_killed_leader_hands_over_mid_rollout_and_no_weight_is_written_twice(k: Kubectl, pair: Pair) -> None:
    # Short durations for the test; the renew deadline leaves room for a slow shared machine.
    a, b = pair.start("--leader-elect-lease-duration", "6s", "--leader-elect-renew-deadline", "4s",
                      "--leader-elect-retry-period", "500ms")
    steps: list[dict[str, Any]] = [{"setWeight": 20}, {"pause": {"duration": "2s"}}, {"setWeight": 40}, {"pause": {}},
             {"setWeight": 60}, {"setWeight": 80}, {"setWeight": 100}]
    first, spec = release_first(k, "ha", steps)
    with Watch(k, ["ingress", "-l", "modelrollout.io/track=canary"],
               "{.metadata.annotations.nginx\\.ingress\\.kubernetes\\.io/canary-weight}") as w:
        k.apply(rollout("ha", image="model:2", steps=steps, **spec))
        st = k.wait(name="ha", predicate=lambda s: s.get("phase") == "AwaitingApproval"
                    and s.get("currentWeight") == 40, timeout=90)

        before = requests_in(k.cp, k.ns)
        assert writes(before, a.user), "the leader did the work"
        assert not writes(before, b.user), f"the standby wrote: {writes(before, b.user)}"
        assert not writes(before, b.user, leases=True), "the standby never wrote the Lease while it was held"
        assert any(r.user == b.user and r.resource == "leases" and r.verb == "get" for r in before), \
            "the standby was reading the Lease"
        assert b.process.running

        kill_hard(a.process)  # mid-rollout, at the approval gate after weight 40
        k.annotate("ha", "modelrollout.io/approve", st["approval"]["token"])  # while nobody leads
        pair.wait_holder("op-b", 60)
        done = k.wait(name="ha", predicate=lambda s: s.get("phase") == "Succeeded"
                      and s.get("stableRevision") != first, timeout=120)
    assert w.distinct() == ["20", "40", "60", "80", "100"], "every step, in order"
    assert any(h["outcome"] == "Approved" for h in done["history"])

    canary = wait_audit(k.cp, k.ns, "ingresses", "ha-canary", lambda ws: ws[-1:] == ["delete"])
    assert canary == ["patch"] * 5 + ["delete"], f"one write per weight: {canary}"
    after = requests_in(k.cp, k.ns)
    by = {r.user: [x.verb for x in writes(after, r.user) if (x.resource, x.name) == ("ingresses", "ha-canary")]
          for r in (a, b)}
    assert by == {a.user: ["patch", "patch"], b.user: ["patch", "patch", "patch", "delete"]}, by
    # b acted only once it held the Lease, and only after a's last request
    takeover = writes(after, b.user, leases=True)[0]
    assert takeover.verb == "update" and takeover.code == 200, takeover
    b_writes = writes(after, b.user)
    assert b_writes and b_writes[0].received >= takeover.received
    a_last = max(r.received for r in after if r.user == a.user)
    assert takeover.received > a_last
    lease = json.loads(k.run("get", "lease", LEASE, "-o", "json"))["spec"]
    assert lease["holderIdentity"] == "op-b" and lease["leaseTransitions"] == 1
    body = b.liveness()
    assert body is not None and "standby" not in body, "the new leader's liveness URL is kopf's now"


def test_sigterm_releases_the_lease_and_the_standby_takes_over_at_once(k: Kubectl, pair: Pair) -> None:
    # A long lease duration: within the deadline below, only a release explains the handover.
    a, b = pair.start("--leader-elect-lease-duration", "90s", "--leader-elect-renew-deadline", "60s",
                      "--leader-elect-retry-period", "500ms")
    steps: list[dict[str, Any]] = [{"setWeight": 50}, {"pause": {}}, {"setWeight": 100}]
    first, spec = release_first(k, "grace", steps)
    k.apply(rollout("grace", image="model:2", steps=steps, **spec))
    st = k.wait(name="grace", predicate=lambda s: s.get("phase") == "AwaitingApproval", timeout=90)

    a.process.stop(timeout=30)
    assert a.process.proc is not None and a.process.proc.returncode == 0, a.process.log_tail()
    pair.wait_holder("op-b", 30)
    k.annotate("grace", "modelrollout.io/approve", st["approval"]["token"])
    k.wait(name="grace", predicate=lambda s: s.get("phase") == "Succeeded" and s.get("stableRevision") != first,
           timeout=90)

    reqs = requests_in(k.cp, k.ns)
    a_lease = writes(reqs, a.user, leases=True)
    assert a_lease[0].verb == "create" and a_lease[-1].verb == "update", "a created the Lease, renewed it ..."
    assert "released Lease" in a.process.log.read_text(), "... and released it"
    a_last = max(r.received for r in reqs if r.user == a.user)
    assert writes(reqs, b.user)[0].received > a_last, "b wrote nothing before a had stopped"
    wait_until(lambda: b.liveness() is not None, 30, 0.1, what="the new leader's liveness (kopf)")

    # a third replica stands by, and a SIGTERM while standing by ends it cleanly without a write
    c = pair.add("op-c", "--leader-elect-lease-duration", "90s", "--leader-elect-renew-deadline", "60s",
                 "--leader-elect-retry-period", "500ms")
    c.process.start()
    pair.wait_standby(c, "op-b")
    c.process.stop(timeout=30)
    assert c.process.proc is not None and c.process.proc.returncode == 0, c.process.log_tail()
    reqs = requests_in(k.cp, k.ns)
    assert not writes(reqs, c.user) and not writes(reqs, c.user, leases=True)
    assert pair.holder() == "op-b"


def test_a_frozen_leader_that_lost_the_lease_exits_when_it_wakes(k: Kubectl, pair: Pair) -> None:
    """SIGSTOP stands for a long GC pause, a frozen VM or a partition: the standby takes over after the lease
    duration; when the old leader wakes, its watchdog finds the renew deadline long past and ends the process
    (exit code 1) before it writes anything."""
    a, b = pair.start("--leader-elect-lease-duration", "6s", "--leader-elect-renew-deadline", "4s",
                      "--leader-elect-retry-period", "500ms")
    steps: list[dict[str, Any]] = [{"setWeight": 20}, {"pause": {"duration": "3s"}}, {"setWeight": 40},
                                   {"setWeight": 100}]
    first, spec = release_first(k, "frz", steps)
    with Watch(k, ["ingress", "-l", "modelrollout.io/track=canary"],
               "{.metadata.annotations.nginx\\.ingress\\.kubernetes\\.io/canary-weight}") as w:
        k.apply(rollout("frz", image="model:2", steps=steps, **spec))
        k.wait(name="frz", predicate=lambda s: s.get("phase") == "Paused" and s.get("currentWeight") == 20, timeout=90)
        os.kill(a.process.pid, signal.SIGSTOP)  # its pause ends while it is frozen: a reconcile is due on waking
        try:
            pair.wait_holder("op-b", 60)
        finally:
            os.kill(a.process.pid, signal.SIGCONT)
        wait_until(lambda: not a.process.running, 30, 0.1, what="the old leader to exit")
        assert a.process.proc is not None and a.process.proc.returncode == 1, a.process.log_tail()
        assert "lost the lead" in a.process.log.read_text()
        k.wait(name="frz", predicate=lambda s: s.get("phase") == "Succeeded" and s.get("stableRevision") != first,
               timeout=90)
    assert w.distinct() == ["20", "40", "100"]
    assert wait_audit(k.cp, k.ns, "ingresses", "frz-canary", lambda ws: ws[-1:] == ["delete"]) == \
        ["patch"] * 3 + ["delete"]
    reqs = requests_in(k.cp, k.ns)
    takeover = writes(reqs, b.user, leases=True)[0]
    assert all(r.received < takeover.received for r in writes(reqs, a.user) + writes(reqs, a.user, leases=True)), \
        "the old leader wrote nothing once the standby held the Lease"
