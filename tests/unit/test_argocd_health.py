"""docs/argocd-health.lua, the Argo CD health check, run by a real Lua 5.1 interpreter (lupa; Argo CD's gopher-lua
is Lua 5.1) on ModelRollouts whose status is built by the operator's own code: the pydantic status model dumped as
the operator writes it, and statuses produced by ``decide`` in the simulated world."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import lupa.lua51 as lupa  # the test extra; bundles Lua 5.1, the version of Argo CD's gopher-lua
import pytest

from modelrollout import api
from modelrollout.apply import status_body
from modelrollout.core.approval import ABORT
from modelrollout.core.plan import conditions

from .sim import T0, released

SCRIPT = (Path(__file__).resolve().parents[2] / "docs" / "argocd-health.lua").read_text()

EXPECTED: dict[api.Phase, str] = {
    api.Phase.PENDING: "Progressing",
    api.Phase.PREWARMING: "Progressing",
    api.Phase.PROGRESSING: "Progressing",
    api.Phase.PAUSED: "Suspended",
    api.Phase.AWAITING_APPROVAL: "Suspended",
    api.Phase.PROMOTING: "Progressing",
    api.Phase.SUCCEEDED: "Healthy",
    api.Phase.ROLLING_BACK: "Progressing",
    api.Phase.ROLLED_BACK: "Degraded",
    api.Phase.FAILED: "Degraded",
    api.Phase.INVALID: "Degraded",
}
"""The Argo CD health of every phase: a phase added to api.Phase without a mapping here (and in the Lua) fails."""


def _strip_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_strip_nulls(v) for v in value]
    return value


def health(obj: dict[str, Any]) -> dict[str, str]:
    """Run the Lua health check as Argo CD does: the object as the global ``obj``, the script's return value."""
    lua = lupa.LuaRuntime()
    lua.globals().obj = lua.table_from(_strip_nulls(obj), recursive=True)
    result = lua.execute(SCRIPT)
    assert result is not None, "the script returned nothing"
    return {k: result[k] for k in ("status", "message")}


def rollout(status: api.ModelRolloutStatus | dict[str, Any] | None, generation: int = 3) -> dict[str, Any]:
    obj: dict[str, Any] = {"apiVersion": f"{api.GROUP}/{api.VERSION}", "kind": api.KIND,
                           "metadata": {"name": "summarize", "namespace": "serving", "generation": generation}}
    if status is not None:
        obj["status"] = status_body(status) if isinstance(status, api.ModelRolloutStatus) else status
    return obj


def status_for(phase: api.Phase, message: str, generation: int = 3) -> api.ModelRolloutStatus:
    """A status as the operator writes it: phase, message, observedGeneration and the kstatus conditions."""
    st = api.ModelRolloutStatus(phase=phase, message=message, observed_generation=generation,
                                stable_revision="5d8f9c01aa", canary_revision="7f2a1b0c9d", current_step=1,
                                current_weight=25)
    return st.model_copy(update={"conditions": conditions(st, [], T0, generation)})


def test_every_phase_has_a_health() -> None:
    assert set(EXPECTED) == set(api.Phase)


@pytest.mark.parametrize("phase", list(api.Phase), ids=str)
def test_phase_health_and_message(phase: api.Phase) -> None:
    got = health(rollout(status_for(phase, f"what {phase.value} means here")))
    assert got == {"status": EXPECTED[phase], "message": f"what {phase.value} means here"}


@pytest.mark.parametrize("phase", list(api.Phase), ids=str)
def test_message_falls_back_to_the_conditions(phase: api.Phase) -> None:
    st = status_for(phase, "from the conditions")
    body = status_body(st)
    body["message"] = ""
    got = health(rollout(body))
    assert got == {"status": EXPECTED[phase], "message": "from the conditions"}


@pytest.mark.parametrize("phase", [api.Phase.SUCCEEDED, api.Phase.ROLLED_BACK, api.Phase.AWAITING_APPROVAL])
def test_a_spec_change_not_yet_observed_is_progressing(phase: api.Phase) -> None:
    got = health(rollout(status_for(phase, "old news", generation=3), generation=4))
    assert got["status"] == "Progressing" and "generation 4" in got["message"]


def test_no_status_or_no_phase_yet_is_progressing() -> None:
    assert health(rollout(None))["status"] == "Progressing"
    assert health(rollout({"observedGeneration": 3}))["status"] == "Progressing"
    assert health(rollout({"phase": "Succeeded", "message": "x"}))["status"] == "Progressing"  # no observedGeneration


def test_an_unknown_phase_is_unknown() -> None:
    got = health(rollout({"phase": "Teleporting", "message": "beam me up", "observedGeneration": 3}))
    assert got == {"status": "Unknown", "message": "Unknown phase Teleporting: beam me up"}


def test_statuses_produced_by_decide() -> None:
    """Every status of simulated rollouts (approval, promotion, abort, rollback) maps to its phase's health."""
    steps = [{"setWeight": 20}, {"approval": {"reason": "look"}}, {"pause": {"duration": "10s"}}, {"setWeight": 100}]
    seen: dict[api.Phase, int] = {}

    def check(st: api.ModelRolloutStatus) -> None:
        assert st.phase is not None
        obj = rollout(st, generation=st.observed_generation or 1)
        got = health(obj)
        assert got["status"] == EXPECTED[st.phase], (st.phase, got)
        assert got["message"] == st.message
        seen[st.phase] = seen.get(st.phase, 0) + 1

    w = released(steps, rollback={"scaleDownDelay": "5s"})
    check(w.status)
    w.set_image("img:2")
    w.run(until=lambda w: w.status.phase is api.Phase.AWAITING_APPROVAL)
    check(w.status)
    assert w.status.approval is not None
    w.annotations["modelrollout.io/approve"] = w.status.approval.token
    w.run(until=lambda w: w.status.phase is api.Phase.PAUSED)
    check(w.status)
    w.now += timedelta(seconds=11)
    w.run(until=lambda w: w.status.phase is api.Phase.SUCCEEDED)
    for d in w.decisions:
        check(d.status)
    w.set_image("img:3")
    w.run(until=lambda w: w.status.phase is api.Phase.AWAITING_APPROVAL)
    w.annotations[ABORT] = "true"
    w.run(until=lambda w: w.status.phase is api.Phase.ROLLED_BACK)
    for d in w.decisions:
        check(d.status)
    assert {api.Phase.SUCCEEDED, api.Phase.PROGRESSING, api.Phase.AWAITING_APPROVAL, api.Phase.PAUSED,
            api.Phase.ROLLING_BACK, api.Phase.ROLLED_BACK} <= set(seen), seen
