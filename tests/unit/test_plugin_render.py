"""``kubectl-modelrollout get``: render() turns a ModelRollout dict into the status view (pure, no cluster)."""

from __future__ import annotations

from typing import Any

import pytest

from modelrollout.api import Phase
from modelrollout.plugin import main, render

from .sim import released, spec_dict

STEPS = [{"setWeight": 25}, {"approval": {"reason": "check dashboards"}}, {"setWeight": 100}]
ANALYSIS = {
    "interval": "15s",
    "prometheus": {"address": "http://prometheus:9090"},
    "metrics": [
        {"name": "error-rate", "query": "sum(rate(errors[1m]))", "max": 0.01},
        {"name": "p99-latency", "query": "p99", "max": 500},
        {"name": "compat", "query": "score", "min": 1},
    ],
}


def mro(status: dict[str, Any], *, steps: list[dict[str, Any]] | None = None, namespace: str = "ml",
        generation: int = 2, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "modelrollout.io/v1alpha1", "kind": "ModelRollout",
        "metadata": {"name": "chat", "namespace": namespace, "generation": generation, "resourceVersion": "7"},
        "spec": spec_dict(steps or STEPS, **spec), "status": status,
    }


def line_with(text: str, needle: str) -> str:
    found = [line for line in text.splitlines() if needle in line]
    assert found, f"no line with {needle!r} in:\n{text}"
    return found[0]


def section(text: str, heading: str) -> list[str]:
    """The lines under the heading that starts with ``heading``, up to the next blank line."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(heading)), None)
    assert start is not None, f"no section {heading!r} in:\n{text}"
    out = []
    for line in lines[start + 1:]:
        if not line.strip():
            break
        out.append(line)
    return out


def step(text: str, needle: str) -> list[str]:
    """The cells of the step row that mentions ``needle``."""
    return line_with("\n".join(section(text, "Steps")), needle).split()


def test_awaiting_approval_marks_the_gate_and_shows_the_commands() -> None:
    command = "kubectl annotate mro chat -n ml modelrollout.io/approve=7f2a1b0c9d-1 --overwrite"
    out = render(mro({
        "phase": "AwaitingApproval", "observedGeneration": 2,
        "message": f"waiting for approval before step 2/3 (approval; check dashboards): run `{command}`",
        "stableRevision": "1a2b3c4d5e", "canaryRevision": "7f2a1b0c9d", "currentStep": 1, "currentWeight": 25,
        "approval": {"step": 1, "token": "7f2a1b0c9d-1", "reason": "check dashboards", "command": command,
                     "since": "2026-01-01T10:00:05.123456Z", "action": "continue"},
        "history": [{"revision": "7f2a1b0c9d", "outcome": "Started", "at": "2026-01-01T10:00:00Z",
                     "message": "stable 1a2b3c4d5e"}],
    }))
    assert out.startswith("ModelRollout ml/chat\n")
    assert line_with(out, "Phase:").split() == ["Phase:", "AwaitingApproval"]
    assert "1a2b3c4d5e" in line_with(out, "Stable:") and "7f2a1b0c9d" in line_with(out, "Canary:")
    assert "25% on canary" in line_with(out, "Weight:")
    assert step(out, "setWeight 25") == ["✓", "1", "setWeight", "25"]
    gate = " ".join(step(out, "approval"))
    assert gate.startswith("▶ 2 approval")
    assert "[gate: check dashboards]" in gate and "waiting for approval" in gate
    assert step(out, "setWeight 100") == ["3", "setWeight", "100"]
    assert step(out, "promotion") == ["promotion"]
    assert "Waiting for: approval at step 2/3 (check dashboards)" in out
    assert line_with(out, "Step:").split() == ["Step:", "2/3"]  # as the message says: "before step 2/3"
    assert "2026-01-01 10:00:05Z" in line_with(out, "since:")
    assert "7f2a1b0c9d-1" in line_with(out, "token:")
    assert line_with(out, "  approve: ").split(": ", 1)[1] == "kubectl modelrollout approve chat -n ml"
    assert command in line_with(out, "  or: ")
    assert "Analysis" not in out
    assert "History:" in out and "Started" in line_with(out, "stable 1a2b3c4d5e")


def test_rolled_back_shows_metric_verdicts_and_the_retry_command() -> None:
    out = render(mro({
        "phase": "RolledBack", "observedGeneration": 2,
        "message": "revision 7f2a1b0c9d rolled back: metric error-rate 0.05 > max 0.01; stable 1a2b3c4d5e serves "
                   "100%. Change the template, or annotate modelrollout.io/retry=true to try it again",
        "stableRevision": "1a2b3c4d5e", "canaryRevision": "7f2a1b0c9d", "rolledBackRevision": "7f2a1b0c9d",
        "currentStep": 2, "currentWeight": 0, "analysisPasses": 0, "lastAnalysisAt": "2026-01-01T10:03:00Z",
        "analysis": [
            {"name": "error-rate", "value": 0.0523, "verdict": "Fail", "failures": 1,
             "message": "0.0523 > max 0.01"},
            {"name": "p99-latency", "value": 312.5, "verdict": "Pass", "failures": 0},
            {"name": "compat", "verdict": "Inconclusive", "failures": 0, "message": "no data"},
        ],
        "history": [{"revision": "1a2b3c4d5e", "outcome": "Succeeded", "at": "2026-01-01T09:00:00Z",
                     "message": "first release"}]
        + [{"revision": "7f2a1b0c9d", "outcome": "Started", "at": f"2026-01-01T10:0{i}:00Z"} for i in range(5)]
        + [{"revision": "7f2a1b0c9d", "outcome": "RolledBack", "at": "2026-01-01T10:03:00Z",
            "message": "metric error-rate 0.05 > max 0.01"}],
    }, steps=[{"setWeight": 10}, {"analysis": {"passes": 2}}, {"setWeight": 50}, {"setWeight": 100}],
        analysis=ANALYSIS))
    assert line_with(out, "Phase:").split() == ["Phase:", "RolledBack"]
    assert "7f2a1b0c9d" in line_with(out, "Rolled back:")
    assert step(out, "analysis x2")[0] == "✓"
    assert step(out, "setWeight 50") == ["✗", "3", "setWeight", "50"]
    assert "▶" not in out
    table = [row.split() for row in section(out, "Analysis:")]
    assert table == [
        ["METRIC", "VALUE", "VERDICT", "FAILURES", "MESSAGE"],
        ["error-rate", "0.0523", "Fail", "1", "0.0523", ">", "max", "0.01"],
        ["p99-latency", "312.5", "Pass", "0"],
        ["compat", "-", "Inconclusive", "0", "no", "data"],
    ]
    assert "last at 2026-01-01 10:03:00Z" in line_with(out, "Analysis:")
    history = section(out, "History (last 5 of 7):")
    assert len(history) == 5 and "first release" not in out  # older than the last five
    assert history[-1].split()[3:5] == ["RolledBack", "metric"]
    assert "kubectl modelrollout retry chat -n ml" in line_with(out, "To try revision 7f2a1b0c9d again")
    assert "Waiting for" not in out


def test_succeeded_shows_no_rollout_in_progress_and_history() -> None:
    out = render(mro({
        "phase": "Succeeded", "observedGeneration": 2, "stableRevision": "7f2a1b0c9d",
        "message": "revision 7f2a1b0c9d promoted: stable serves 100% (4 replicas)",
        "history": [
            {"revision": "7f2a1b0c9d", "outcome": "Approved", "at": "2026-01-01T10:01:00Z", "step": 1,
             "token": "7f2a1b0c9d-1", "message": "check dashboards", "by": "kubectl-modelrollout"},
            {"revision": "7f2a1b0c9d", "outcome": "Succeeded", "at": "2026-01-01T10:02:00Z", "message": "promoted"},
        ],
    }, namespace="default"))
    assert line_with(out, "Phase:").split() == ["Phase:", "Succeeded"]
    assert line_with(out, "Canary:").split() == ["Canary:", "-"]
    assert "Steps (no rollout in progress):" in out
    assert not any(mark in out for mark in ("▶", "✓", "✗"))
    assert step(out, "approval") == ["2", "approval", "[gate:", "check", "dashboards]"]
    assert "Waiting for" not in out and "promotion" not in out
    approved, succeeded = section(out, "History:")
    assert "Approved   step 2/3  check dashboards (by kubectl-modelrollout)" in approved
    assert succeeded.split()[3:] == ["Succeeded", "promoted"]


def test_pending_object_without_status_and_a_spec_change_not_yet_seen() -> None:
    obj = mro({}, generation=3)
    out = render(obj)
    assert line_with(out, "Phase:").split() == ["Phase:", "Pending"]
    assert "has not reported" in line_with(out, "Message:")
    obj["status"] = {"phase": "Succeeded", "observedGeneration": 2, "stableRevision": "1a2b3c4d5e"}
    assert "generation 3; the operator has acted on 2" in line_with(render(obj), "Spec:")


def test_invalid_spec_still_lists_the_raw_steps() -> None:
    obj = mro({"phase": "Invalid", "message": "spec.replicas: must be at least 1"})
    obj["spec"]["replicas"] = 0
    out = render(obj)
    assert step(out, "setWeight 25") == ["1", "setWeight", "25"]
    assert "[gate: check dashboards]" in " ".join(step(out, "approval"))


def test_promoting_marks_skipped_steps_and_the_promotion() -> None:
    out = render(mro({"phase": "Promoting", "canaryRevision": "7f2a1b0c9d", "stableRevision": "1a2b3c4d5e",
                      "currentStep": 1, "currentWeight": 25,
                      "message": "promoting revision 7f2a1b0c9d (steps skipped by request)"}))
    assert step(out, "setWeight 25")[0] == "✓"
    assert step(out, "approval")[:4] == ["–", "2", "approval", "(skipped)"]
    assert step(out, "promotion") == ["▶", "promotion"]


def test_renders_the_status_the_engine_writes() -> None:
    """The sim's own status, dumped as the operator patches it, renders with the gate and its token."""
    w = released(STEPS)
    w.set_image("img:2")
    w.run(until=lambda w: w.status.phase is Phase.AWAITING_APPROVAL)
    status = w.status.model_dump(by_alias=True, mode="json")
    out = render({"metadata": {"name": "m", "namespace": "default", "generation": 1},
                  "spec": w.raw, "status": status})
    token = f"{w.revision}-1"
    assert step(out, "approval")[:2] == ["▶", "2"]
    assert token in line_with(out, "token:")
    assert line_with(out, "  approve: ").split(": ", 1)[1] == "kubectl modelrollout approve m"
    assert f"modelrollout.io/approve={token}" in line_with(out, "  or: ")


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate", "chat"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["approve"])
    assert exc.value.code == 2
    capsys.readouterr()


def test_a_drill_shows_the_experiment_its_timing_and_what_the_metrics_did() -> None:
    steps = [{"setWeight": 25}, {"chaos": {"kind": "PodChaos", "spec": {"action": "pod-kill"}, "duration": "60s"}},
             {"setWeight": 100}]
    out = render(mro({
        "phase": "RollingBack", "stableRevision": "1a2b3c4d5e", "canaryRevision": "7f2a1b0c9d", "currentStep": 1,
        "drill": {"name": "chat-drill-1-0a1b2c3d", "kind": "PodChaos", "step": 1, "revision": "7f2a1b0c9d",
                  "weight": 25, "startedAt": "2026-01-01T10:00:00Z", "finishedAt": "2026-01-01T10:00:20Z",
                  "duration": "1m", "outcome": "Stopped", "message": "error-rate above 0.01",
                  "metrics": [{"name": "error-rate", "min": 0.001, "max": 0.2, "evaluations": 4, "failures": 1}]},
    }, steps=steps, analysis=ANALYSIS))
    drill = section(out, "Drill")
    head = line_with(out, "Drill (step 2/3)")
    assert "PodChaos chat-drill-1-0a1b2c3d for 1m at weight 25: Stopped" in head
    assert "started 2026-01-01 10:00:00Z, deleted 2026-01-01 10:00:20Z" in head
    assert drill[0].strip() == "error-rate above 0.01"
    assert drill[1].split() == ["error-rate", "0.001..0.2", "4", "evaluations", "1", "failing"]
    assert "chaos PodChaos pod-kill 1m" in " ".join(step(out, "chaos"))
