"""The dashboard's view (pure): overview rows, the actions the page offers, weight over time, metric bands."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from modelrollout.dashboard import view

from .test_plugin_render import ANALYSIS, mro

T0 = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
WAITING = {
    "phase": "AwaitingApproval", "observedGeneration": 2, "stableRevision": "1a2b3c4d5e",
    "canaryRevision": "7f2a1b0c9d", "currentStep": 1, "currentWeight": 25, "trafficStartedAt": "2026-01-01T10:00:05Z",
    "approval": {"step": 1, "token": "7f2a1b0c9d-1", "reason": "check dashboards", "command": "kubectl annotate …",
                 "since": "2026-01-01T10:01:00Z"},
    "analysis": [{"name": "error-rate", "value": 0.002, "verdict": "Pass", "at": "2026-01-01T10:00:50Z"}],
    "history": [{"revision": "1a2b3c4d5e", "outcome": "Succeeded", "at": "2026-01-01T09:00:00Z"},
                {"revision": "7f2a1b0c9d", "outcome": "Started", "at": "2026-01-01T10:00:00Z"}],
}


def event(reason: str, message: str, at: datetime) -> dict[str, Any]:
    return {"reason": reason, "message": message, "type": "Normal", "lastTimestamp": at.strftime("%Y-%m-%dT%H:%M:%SZ")}


def test_summary_says_where_the_rollout_is_and_what_it_waits_for() -> None:
    row = view.summary(mro(WAITING))
    assert (row["namespace"], row["name"], row["phase"], row["weight"], row["step"], row["steps"]) == \
        ("ml", "chat", "AwaitingApproval", 25, "2/3", 3)
    assert row["waiting"] == "approval at step 2: check dashboards"
    assert (row["stable"], row["canary"]) == ("1a2b3c4d5e", "7f2a1b0c9d")


def test_actions_are_the_plugins_decisions() -> None:
    acts = view.actions(mro(WAITING))
    assert acts["approve"] == {"allowed": True, "annotation": "modelrollout.io/approve", "value": "7f2a1b0c9d-1",
                               "risky": False}
    assert acts["promote"]["value"] == "7f2a1b0c9d-1" and acts["promote"]["risky"]
    assert acts["abort"]["allowed"] and acts["abort"]["value"] == "true"
    assert not acts["retry"]["allowed"] and "no rolled-back revision to retry" in acts["retry"]["reason"]
    assert not acts["rollback-to"]["allowed"] and "in progress" in acts["rollback-to"]["reason"]
    done = view.actions(mro({"phase": "Succeeded", "stableRevision": "7f2a1b0c9d", "history": [
        {"revision": "1a2b3c4d5e", "outcome": "Succeeded", "at": "2026-01-01T09:00:00Z"},
        {"revision": "7f2a1b0c9d", "outcome": "Succeeded", "at": "2026-01-01T10:09:00Z"}]}))
    assert not done["approve"]["allowed"] and "nothing waits for approval" in done["approve"]["reason"]
    assert done["rollback-to"]["allowed"] and done["rollback-to"]["value"] == "1a2b3c4d5e"
    assert done["rollback-to"]["candidates"] == ["1a2b3c4d5e"]


def test_weight_over_time_from_events_history_and_what_was_seen() -> None:
    rolled_back = {"revision": "7f2a1b0c9d", "outcome": "RolledBack", "at": "2026-01-01T10:05:00Z"}
    obj = mro({**WAITING, "history": [*WAITING["history"], rolled_back]})
    events = [event("SetWeight", "step 0: 25% of traffic on revision 7f2a1b0c9d", T0 + timedelta(seconds=10)),
              event("SetWeight", "step 2: 50% of traffic on revision 7f2a1b0c9d", T0 + timedelta(minutes=2)),
              event("Approved", "gate at step 1 approved", T0 + timedelta(minutes=1)),
              event("RollingBack", "all traffic back to stable", T0 + timedelta(minutes=4, seconds=50))]
    seen = [(T0 + timedelta(seconds=12), 25), (T0 + timedelta(minutes=3), 50)]
    same_second = [event("SetWeight", "step 0: 25% of traffic on revision 7f2a1b0c9d", T0),
                   event("SetWeight", "step 2: 50% of traffic on revision 7f2a1b0c9d", T0 + timedelta(minutes=2))]
    started = mro({**WAITING, "history": [{"revision": "7f2a1b0c9d", "outcome": "Started",
                                           "at": "2026-01-01T10:00:00.600000Z"}]})
    assert [w for _, w in view.weight_points(started, same_second, [])] == [0, 25, 50], \
        "a revision starts (history, sub-second) before its first weight (Event, whole seconds) in the same second"
    points = view.weight_points(obj, events, seen)
    assert [(int((at - T0).total_seconds()), w) for at, w in points] == [(-3600, 0), (10, 25), (120, 50), (290, 0)]


def test_detail_gives_each_metric_its_band_and_evaluations() -> None:
    obj = mro(WAITING, analysis=ANALYSIS)
    seen = {"error-rate": [{"at": "2026-01-01T10:00:35Z", "value": 0.02, "verdict": "Fail", "message": "0.02 > max"}]}
    page = view.detail(obj, events=[], recorded_weights=[], recorded_evals=seen,
                       prometheus={"error-rate": {"points": [[1.0, 0.5]]}, "compat": {"error": "refused"}},
                       compat=None, now=T0 + timedelta(minutes=5))
    metrics = {m["name"]: m for m in page["metrics"]}
    err = metrics["error-rate"]
    assert (err["min"], err["max"], err["source"], err["series"]) == (None, 0.01, "prometheus", [[1.0, 0.5]])
    assert [e["verdict"] for e in err["evaluations"]] == ["Fail", "Pass"]
    assert metrics["compat"]["min"] == 1 and metrics["compat"]["source"] == "status"
    assert metrics["compat"]["seriesError"] == "refused"
    assert page["window"] == ["2026-01-01T10:00:05Z", "2026-01-01T10:05:00Z"]
    assert [s["state"] for s in page["steps"]] == ["done", "current", "", ""]
    assert page["steps"][1]["gate"] == "check dashboards" and page["steps"][1]["waiting"]


def test_queries_are_rendered_for_the_canary_and_the_compat_probe_adds_its_metric() -> None:
    spec: dict[str, Any] = {"analysis": {**ANALYSIS, "metrics": [
        {"name": "errors", "query": 'sum(x{rollout="{{rollout}}",revision="{{revision}}",track="{{track}}"})',
         "max": 1}]}, "compatProbe": {"contract": {"name": "contract"}}}
    obj = mro(WAITING, **spec)
    queries = {m["name"]: m for m in view.metric_queries(obj)}
    assert queries["errors"]["query"] == 'sum(x{rollout="chat",revision="7f2a1b0c9d",track="canary"})'
    assert queries["api-compatibility"]["min"] == 0.99
    assert view.compat_failing_query(obj) == \
        'model_compat_check_passed{rollout="chat",revision="7f2a1b0c9d",track="canary"} == 0'
    assert view.prometheus_address(obj) == "http://prometheus:9090"
