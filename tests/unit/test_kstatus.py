"""kstatus, computed by the real library Flux's kustomize-controller uses for ``wait: true`` and ``healthChecks``
(``github.com/fluxcd/cli-utils`` ``status.Compute``) and by its upstream (``sigs.k8s.io/cli-utils``), for every
phase of the operator's status, next to the Argo CD health of docs/argocd-health.lua (they must agree). The
checker is hack/kstatus/main.go, built once into the cache by hack/kstatus/build.sh (bootstrap builds it).

The table in docs/gitops.md between the ``kstatus:table`` markers is this test's output: it fails when the docs
differ; ``MODELROLLOUT_UPDATE_DOCS=1`` rewrites them.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from modelrollout import api
from modelrollout.core.approval import ABORT

from ..conftest import REQUIRE_CLUSTER
from .sim import released
from .test_argocd_health import EXPECTED, health, rollout, status_for

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "gitops.md"
BEGIN, END = "<!-- BEGIN kstatus:table -->", "<!-- END kstatus:table -->"

KSTATUS: dict[api.Phase, str] = {
    api.Phase.PENDING: "InProgress",
    api.Phase.PREWARMING: "InProgress",
    api.Phase.PROGRESSING: "InProgress",
    api.Phase.PAUSED: "InProgress",
    api.Phase.AWAITING_APPROVAL: "InProgress",
    api.Phase.PROMOTING: "InProgress",
    api.Phase.SUCCEEDED: "Current",
    api.Phase.ROLLING_BACK: "InProgress",
    api.Phase.ROLLED_BACK: "Failed",
    api.Phase.FAILED: "Failed",
    api.Phase.INVALID: "Failed",
}
"""What issue #23 asks kstatus to say for every phase: a rolled-back revision is a desired state the cluster does
not run (Failed, with the reason), not Current and not InProgress forever."""

ARGO_AGREES = {"Current": {"Healthy"}, "InProgress": {"Progressing", "Suspended"}, "Failed": {"Degraded"}}


@pytest.fixture(scope="module")
def kstatus() -> Path:
    res = subprocess.run(["bash", str(ROOT / "hack" / "kstatus" / "build.sh")], capture_output=True, text=True,
                         check=False, timeout=1200)
    if res.returncode != 0:
        reason = f"hack/kstatus/build.sh failed: {res.stderr[-2000:]}"
        if REQUIRE_CLUSTER:
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return Path(res.stdout.strip().splitlines()[-1])


def compute(binary: Path, objects: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """kstatus of each object, by the real library (one process for all of them)."""
    res = subprocess.run([str(binary)], input="".join(json.dumps(o) + "\n" for o in objects), capture_output=True,
                         text=True, check=True, timeout=60)
    out = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(out) == len(objects)
    for r in out:
        assert not r.get("error") and not r["upstream"].get("error"), r
        assert (r["upstream"]["status"], r["upstream"]["message"]) == (r["status"], r["message"]), r
    return out


def test_every_phase_has_a_kstatus() -> None:
    assert set(KSTATUS) == set(api.Phase)


def test_kstatus_of_every_phase_by_the_real_library(kstatus: Path) -> None:
    phases = list(api.Phase)
    got = compute(kstatus, [rollout(status_for(p, f"why {p.value}")) for p in phases])
    for phase, r in zip(phases, got, strict=True):
        assert r["status"] == KSTATUS[phase], (phase, r)
        if r["status"] == "Failed":  # Stalled=True carries the reason in words
            assert r["message"] == f"why {phase.value}", (phase, r)
        assert EXPECTED[phase] in ARGO_AGREES[r["status"]], (phase, r, EXPECTED[phase])


def test_a_spec_change_not_yet_observed_is_in_progress(kstatus: Path) -> None:
    phases = [api.Phase.SUCCEEDED, api.Phase.ROLLED_BACK, api.Phase.FAILED]
    got = compute(kstatus, [rollout(status_for(p, "old news", generation=3), generation=4) for p in phases])
    assert [r["status"] for r in got] == ["InProgress"] * len(phases)


def test_statuses_produced_by_decide(kstatus: Path) -> None:
    """The statuses of a simulated rollout (approval, promotion, abort, rollback) as ``decide`` wrote them."""
    w = released([{"setWeight": 20}, {"approval": {"reason": "look"}}, {"setWeight": 100}],
                 rollback={"scaleDownDelay": "5s"})
    w.set_image("img:2")
    w.run(until=lambda w: w.status.phase is api.Phase.AWAITING_APPROVAL)
    assert w.status.approval is not None
    w.annotations["modelrollout.io/approve"] = w.status.approval.token
    w.run(until=lambda w: w.status.phase is api.Phase.SUCCEEDED)
    w.set_image("img:3")
    w.run(until=lambda w: w.status.phase is api.Phase.AWAITING_APPROVAL)
    w.annotations[ABORT] = "true"
    w.now += timedelta(seconds=1)
    w.run(until=lambda w: w.status.phase is api.Phase.ROLLED_BACK)
    statuses = [d.status for d in w.decisions]
    got = compute(kstatus, [rollout(st, generation=st.observed_generation or 1) for st in statuses])
    seen = set()
    for st, r in zip(statuses, got, strict=True):
        assert st.phase is not None
        assert r["status"] == KSTATUS[st.phase], (st.phase, r)
        seen.add(st.phase)
    assert {api.Phase.PROGRESSING, api.Phase.AWAITING_APPROVAL, api.Phase.SUCCEEDED, api.Phase.ROLLING_BACK,
            api.Phase.ROLLED_BACK} <= seen
    assert got[-1]["message"] == w.status.message and "rolled back" in w.status.message


def table(kstatus: Path) -> str:
    """docs/gitops.md's table: phases with the same conditions and verdicts on one row, in api.Phase order."""
    phases = list(api.Phase)
    got = compute(kstatus, [rollout(status_for(p, "m")) for p in phases])
    rows: dict[tuple[str, ...], list[str]] = {}
    for phase, r in zip(phases, got, strict=True):
        conds = {c.type: c.status for c in status_for(phase, "m").conditions}
        key = (conds["Ready"], conds["Reconciling"], conds["Stalled"], r["status"], health(rollout(
            status_for(phase, "m")))["status"])
        rows.setdefault(key, []).append(f"`{phase.value}`")
    stale = compute(kstatus, [rollout(status_for(api.Phase.SUCCEEDED, "m", generation=3), generation=4)])[0]
    lines = ["| `status.phase` | `Ready` | `Reconciling` | `Stalled` | kstatus (Flux) | Argo CD health |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {', '.join(names)} | {' | '.join(key)} |" for key, names in rows.items()]
    lines.append(f"| any, with `status.observedGeneration` < `metadata.generation` | | | | {stale['status']} "
                 "| Progressing |")
    return "\n".join(lines)


def test_the_table_in_the_docs_is_this_tests_output(kstatus: Path) -> None:
    text = DOCS.read_text()
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    want = f"{head}{BEGIN}\n{table(kstatus)}\n{END}{tail}"
    if os.environ.get("MODELROLLOUT_UPDATE_DOCS") == "1":
        DOCS.write_text(want)
        text = DOCS.read_text()
    assert text == want, "docs/gitops.md's kstatus table is stale: run this test with MODELROLLOUT_UPDATE_DOCS=1"
