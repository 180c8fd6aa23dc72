"""The operator SIGKILLed at every step of one rollout with analysis and an approval gate, and once between a
router write and the status write that records it. Real control plane, real Prometheus, real exporters.

Invariants (the same as an undisturbed run, derived from the plan): the rollout ends Succeeded with the
revision the spec asks for; every weight of the plan is written to the router exactly once, in plan order
(apiserver audit log); no weight moves before the analysis step passed and before the approval; the approval
token is the same before and after a restart; weights stay in 0..100; status.currentStep never goes back and
skips none; history records each gate once.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from devenv.localenv.operatorproc import kill_hard
from devenv.localenv.procs import ManagedProcess, wait_until
from devenv.localenv.prometheus import Prometheus
from modelrollout.core.revision import revision_of

from .exporters import exporters
from .kube import Json, Kubectl, RefuseStatus, Watch, audit_events, wait_audit
from .manifests import ingress, rollout, service

NAME = "crash"
APPROVE = "modelrollout.io/approve"
COMPAT = 'min(model_api_compatibility_score{rollout="{{rollout}}",track="{{track}}"})'
STEPS: list[dict[str, Any]] = [
    {"setWeight": 10},
    {"analysis": {"passes": 2}},
    {"setWeight": 30},
    {"approval": {"reason": "look at the dashboards"}},
    {"setWeight": 60},
    {"pause": {"duration": "2s"}},
    {"setWeight": 100},
]
WEIGHTS = [str(s["setWeight"]) for s in STEPS if "setWeight" in s]
HELD_WEIGHT = 30
"""While the admission policy (``RefuseStatus``) is bound, a status write recording this weight is refused."""
REFUSED = "test: status write refused"
CANARY_WEIGHT = "{.metadata.annotations.nginx\\.ingress\\.kubernetes\\.io/canary-weight}"


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def ingress_patch_times(k: Kubectl, name: str) -> list[datetime]:
    """When the apiserver received each successful patch of one Ingress (audit log, in order)."""
    return [ts(ev["requestReceivedTimestamp"]) for ev in audit_events(k.cp, k.ns, "ingresses", name)
            if ev["verb"] == "patch"]


class Progress(Watch):
    """``kubectl get -w`` of the rollout's status that wakes a waiter on every new version (a kill follows a step
    change within milliseconds, long before the step's pods, evaluations or pause could complete)."""

    def __init__(self, k: Kubectl) -> None:
        super().__init__(k, ["mro", NAME], "{.status.currentStep},{.status.currentWeight},{.status.stepStartedAt},"
                                           "{.status.canaryRevision},{.status.phase}")
        self.cursor = 0

    def __enter__(self) -> Progress:
        super().__enter__()
        return self

    def wait_step(self, step: int, revision: str, timeout: float = 90) -> None:
        """Until a status version with ``revision`` at ``step`` or later appears (from the cursor on)."""
        def seen() -> bool:
            for i in range(self.cursor, len(self.values)):
                row = self.values[i].split(",")
                if row[3] == revision and row[0] and int(row[0]) >= step:
                    self.cursor = i + 1
                    return True
            return False

        self.wait_for(seen, timeout, f"no status at step {step}")

    def rows(self) -> list[list[str]]:
        return [v.split(",") for v in self.values]


def restart(operator: ManagedProcess, k: Kubectl) -> Json:
    """SIGKILL the operator; the status it left (nothing writes it while it is down); start it again."""
    kill_hard(operator)
    left = k.status(NAME)
    operator.start()
    return left


def test_sigkill_at_every_step_changes_nothing(
        k: Kubectl, operator: ManagedProcess, prometheus: Prometheus, tmp_path: Path) -> None:
    spec: dict[str, Any] = {
        "traffic": {"service": {"name": NAME}, "ingress": {"name": NAME}},
        "analysis": {"interval": "1s", "prometheus": {"address": prometheus.url, "timeout": "2s"},
                     "inconclusive": {"limit": 3, "action": "pause"},
                     "metrics": [{"name": "api-compatibility", "query": COMPAT, "min": 0.99}]},
    }
    k.apply(service(NAME) + "\n---\n" + ingress(NAME, f"{NAME}-stable"))
    k.apply(rollout(NAME, steps=STEPS, **spec))
    first = k.wait_phase(NAME, "Succeeded", 90)["stableRevision"]
    manifest = json.loads(rollout(NAME, image="model:2", steps=STEPS, **spec))
    expected = revision_of(manifest["spec"]["template"], manifest["spec"].get("model"))
    left: dict[int, Json] = {}  # the status each SIGKILL left, by the step it waited for

    def kill_at(step: int) -> Json:
        """SIGKILL as soon as the status shows ``step``; the status the operator left must still be at it."""
        progress.wait_step(step, expected)
        left[step] = restart(operator, k)
        assert left[step].get("currentStep") == step and left[step]["canaryRevision"] == expected, left[step]
        return left[step]

    refuse = RefuseStatus(k, NAME, "!has(object.status) || !has(object.status.currentWeight) || "
                          f"object.status.currentWeight != {HELD_WEIGHT}", {"currentWeight": HELD_WEIGHT}, REFUSED)
    refuse.enforce()
    with exporters(prometheus, tmp_path, NAME), Progress(k) as progress, \
            Watch(k, ["ingress", "-l", "modelrollout.io/track=canary"], CANARY_WEIGHT) as router:
        try:
            k.apply(json.dumps(manifest))
            kill_at(0)  # setWeight 10
            kill_at(1)  # analysis
            kill_at(2)  # setWeight 30; then the router write lands and the status write is refused:
            wait_until(lambda: str(HELD_WEIGHT) in router.values, 60, 0.05, what=f"router at {HELD_WEIGHT}")
            wait_until(lambda: REFUSED in operator.log.read_text(errors="replace"), 30, 0.1,
                       what="the operator's status write refused")
            kill_hard(operator)
            behind = k.status(NAME)
            assert behind["currentStep"] == 2 and behind["currentWeight"] == 10, "status is behind the router"
        finally:
            refuse.remove()
        # the restarted operator finds the router at 30 already and records it without writing it again
        operator.start()
        kill_at(3)  # approval
        gate = k.wait_phase(NAME, "AwaitingApproval", 60)
        token = gate["approval"]["token"]
        restart(operator, k)  # and once more while it waits at the gate
        # a reconcile by the restarted operator: it rejects a wrong token and names the same current one
        k.annotate(NAME, APPROVE, "not-the-token")
        wait_until(lambda: any(e["reason"] == "ApprovalRejected" and token in e["message"] for e in k.events(NAME)),
                   60, 0.1, what="the wrong token rejected after the restart")
        st = k.status(NAME)
        assert st["phase"] == "AwaitingApproval" and st["approval"]["token"] == token
        assert st["currentStep"] == 3 and st["currentWeight"] == HELD_WEIGHT
        k.annotate(NAME, APPROVE, token)
        kill_at(4)  # setWeight 60
        kill_at(5)  # pause 2s
        kill_at(6)  # setWeight 100
        kill_at(7)  # promotion (test_promotion_roles kills at each of its transitions)
        done = k.wait(NAME, lambda s: s.get("phase") == "Succeeded" and s.get("stableRevision") == expected, 120,
                      "Succeeded")
        writes = wait_audit(k.cp, k.ns, "ingresses", f"{NAME}-canary", lambda w: w[-1:] == ["delete"])

    # the revision the spec asks for is stable; every weight written once, in plan order
    assert first != expected and done.get("currentWeight", 0) == 0
    assert writes == ["patch"] * len(WEIGHTS) + ["delete"], writes
    assert _dedupe([v for v in router.values if v]) == WEIGHTS, router.values

    # status: currentStep never goes back and skips none; weights within 0..100, never lowered mid-rollout
    parsed = progress.rows()
    assert _dedupe([int(r[0]) for r in parsed if r[0]]) == list(range(len(STEPS) + 1)), progress.values
    weights = [int(r[1]) for r in parsed if r[1]]
    assert all(0 <= w <= 100 for w in weights), weights
    rolling = [int(r[1]) for r in parsed if r[0] and r[1]]
    assert rolling == sorted(rolling), rolling
    # the timed pause kept its start across the SIGKILL and held its 2 s
    started = {i: {ts(r[2]) for r in parsed if r[0] == str(i) and r[2]} for i in (5, 6)}
    assert len(started[5]) == 1, f"the pause restarted: {started[5]}"
    assert (min(started[6]) - min(started[5])).total_seconds() >= 2.0, started

    # gates: one of each; the analysis passed before weight 30 was written, the approval before weight 60
    history = [h for h in done["history"] if h["revision"] == expected]
    outcomes = [(h["outcome"], h.get("step")) for h in history]
    assert outcomes == [("Started", None), ("AnalysisPassed", 1), ("Approved", 3), ("Succeeded", None)], outcomes
    at = {h["outcome"]: ts(h["at"]) for h in history}
    patches = ingress_patch_times(k, f"{NAME}-canary")
    assert len(patches) == len(WEIGHTS), patches
    assert at["AnalysisPassed"] <= patches[1] and at["Approved"] <= patches[2], (at, patches)
    assert [h.get("token") for h in history if h["outcome"] == "Approved"] == [token]


def _dedupe(values: list[Any]) -> list[Any]:
    """Values in order with consecutive repeats folded."""
    out: list[Any] = []
    for v in values:
        if not out or out[-1] != v:
            out.append(v)
    return out
