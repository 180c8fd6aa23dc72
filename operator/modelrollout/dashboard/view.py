"""What the dashboard shows, from a ModelRollout as the apiserver returns it, its Events and what the dashboard
recorded while it ran. Pure: no I/O, no clock (``now`` is passed in)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from modelrollout.core.compat import SELECTOR, effective
from modelrollout.core.queries import TemplateError, render
from modelrollout.core.steps import step_of
from modelrollout.plugin import (
    Action,
    Obj,
    PluginError,
    parse_spec,
    plan_abort,
    plan_approve,
    plan_promote,
    plan_retry,
    plan_rollback_to,
    plugin_command,
    rollback_candidates,
    step_rows,
)

ACTIONS: dict[str, Callable[[str, Obj], Action]] = {
    "approve": lambda name, obj: plan_approve(name, obj),
    "abort": plan_abort,
    "retry": plan_retry,
    "promote": plan_promote,
    "rollback-to": lambda name, obj: plan_rollback_to(name, obj),
}
RISKY = frozenset({"abort", "promote", "rollback-to"})
"""Actions the page asks to confirm: they move all traffic at once or skip the remaining checks."""

_WEIGHT_EVENT = re.compile(r"(\d+)% of traffic")
_ZERO_OUTCOMES = frozenset({"Started", "RolledBack", "Aborted", "Succeeded", "Superseded", "Retried"})
"""History outcomes after which no traffic is on a canary (a promoted revision is the stable one)."""


def parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        at = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def key_of(obj: Obj) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or "default"), str(meta.get("name") or "")


def waiting_for(obj: Obj) -> str:
    """What the rollout waits for, in a few words (empty when nothing)."""
    status: Obj = obj.get("status") or {}
    approval = status.get("approval")
    if approval:
        return f"approval at step {_shown(approval.get('step'))}: {approval.get('reason') or 'approval'}"
    phase = status.get("phase")
    if phase == "Paused":
        return str(status.get("message") or "paused")
    if phase == "Prewarming" and status.get("prewarm"):
        pre = status["prewarm"]
        return f"images on {pre.get('ready', 0)}/{pre.get('desired', 0)} nodes"
    if phase in ("Progressing", "Pending", "Promoting", "RollingBack"):
        return str(status.get("message") or "")
    return ""


def _shown(index: Any) -> int | None:
    """A 0-based step index (status.currentStep, approval.step) as people count steps: 1-based, like the STEP
    column and every message."""
    return index + 1 if isinstance(index, int) else None


def _progress(index: Any, steps: int) -> str | None:
    return step_of(index, steps) if isinstance(index, int) else None


def summary(obj: Obj) -> Obj:
    """One row of the overview."""
    namespace, name = key_of(obj)
    status: Obj = obj.get("status") or {}
    _, rows = step_rows(obj)
    steps = sum(1 for r in rows if r.index is not None)
    return {"namespace": namespace, "name": name, "phase": status.get("phase") or "Pending",
            "weight": int(status.get("currentWeight") or 0), "step": _progress(status.get("currentStep"), steps),
            "steps": steps,
            "stable": status.get("stableRevision"), "canary": status.get("canaryRevision"),
            "waiting": waiting_for(obj), "message": status.get("message") or "",
            "resourceVersion": (obj.get("metadata") or {}).get("resourceVersion")}


def actions(obj: Obj) -> dict[str, Obj]:
    """Every action with what it would write (the plugin's decision) or why it is refused now."""
    _, name = key_of(obj)
    out: dict[str, Obj] = {}
    for verb, plan in ACTIONS.items():
        try:
            action = plan(name, obj)
        except PluginError as exc:
            out[verb] = {"allowed": False, "reason": str(exc), "risky": verb in RISKY}
            continue
        out[verb] = {"allowed": True, "annotation": action.key, "value": action.value, "risky": verb in RISKY}
    out["rollback-to"]["candidates"] = rollback_candidates(obj)
    return out


def weight_points(obj: Obj, events: Iterable[Obj],
                  recorded: Iterable[tuple[datetime, int]]) -> list[tuple[datetime, int]]:
    """The canary weight over time: the operator's Events (SetWeight, Switched, RollingBack), status.history
    outcomes after which no canary serves, and the weights the dashboard saw itself; sorted, consecutive
    repeats dropped.

    Event times have whole seconds, so every time is cut to the second and, within one second, history comes
    first, then Events, then what the dashboard saw (a revision's ``Started`` precedes its first ``SetWeight``)."""
    points: list[tuple[datetime, int, int]] = []
    for entry in (obj.get("status") or {}).get("history") or []:
        at = parse_time(entry.get("at"))
        if at is not None and entry.get("outcome") in _ZERO_OUTCOMES:
            points.append((at, 0, 0))
    for ev in events:
        at = parse_time(ev.get("lastTimestamp") or ev.get("eventTime") or ev.get("firstTimestamp"))
        if at is None:
            continue
        reason, message = ev.get("reason"), str(ev.get("message") or "")
        match = _WEIGHT_EVENT.search(message)
        if reason in ("SetWeight", "Switched") and match:
            points.append((at, 1, int(match.group(1))))
        elif reason == "RollingBack":
            points.append((at, 1, 0))
    points += [(at, 2, weight) for at, weight in recorded]
    points.sort(key=lambda p: (p[0].replace(microsecond=0), p[1]))
    out: list[tuple[datetime, int]] = []
    for at, _, weight in points:
        if not out or out[-1][1] != weight:
            out.append((at.replace(microsecond=0), weight))
    return out


def metric_queries(obj: Obj) -> list[Obj]:
    """Each metric the operator judges (compat-probe defaults included) with its query rendered for the canary,
    its band and what a breach does."""
    spec = parse_spec(obj.get("spec"))
    if spec is None or spec.analysis is None:
        return []
    spec = effective(spec)
    assert spec.analysis is not None
    out = []
    for metric in spec.analysis.metrics:
        try:
            query: str | None = render(metric.query, query_values(obj))
        except TemplateError:
            query = None
        out.append({"name": metric.name, "query": query, "min": metric.min, "max": metric.max,
                    "onFailure": metric.on_failure, "failureLimit": metric.failure_limit})
    return out


def query_values(obj: Obj) -> dict[str, str]:
    namespace, name = key_of(obj)
    status: Obj = obj.get("status") or {}
    return {"rollout": name, "namespace": namespace, "revision": str(status.get("canaryRevision") or ""),
            "track": "canary"}


def compat_failing_query(obj: Obj) -> str | None:
    """The PromQL listing the canary's failing compat-probe checks, when the rollout runs the probe."""
    spec = parse_spec(obj.get("spec"))
    if spec is None or spec.compat_probe is None or not (obj.get("status") or {}).get("canaryRevision"):
        return None
    return f"model_compat_check_passed{{{render(SELECTOR, query_values(obj))}}} == 0"


def prometheus_address(obj: Obj) -> str | None:
    spec = parse_spec(obj.get("spec"))
    if spec is None or spec.analysis is None or spec.analysis.prometheus is None:
        return None
    return str(spec.analysis.prometheus.address).rstrip("/")


def series_window(obj: Obj, now: datetime) -> tuple[datetime, datetime]:
    """From the canary's first traffic (else the current step's start, else 15 minutes ago) to now."""
    status: Obj = obj.get("status") or {}
    start = parse_time(status.get("trafficStartedAt")) or parse_time(status.get("stepStartedAt"))
    if start is None or start >= now:
        start = datetime.fromtimestamp(now.timestamp() - 900, UTC)
    return start, now


def detail(obj: Obj, *, events: Sequence[Obj], recorded_weights: Iterable[tuple[datetime, int]],
           recorded_evals: Mapping[str, Sequence[Obj]], prometheus: Mapping[str, Obj], compat: Obj | None,
           now: datetime) -> Obj:
    """A rollout's page. ``prometheus`` maps a metric name to ``{"points": [[t, v]...]}`` or ``{"error": ...}``;
    ``recorded_evals`` maps a metric name to the evaluations the dashboard saw (``at``, ``value``, ``verdict``)."""
    namespace, name = key_of(obj)
    status: Obj = obj.get("status") or {}
    in_progress, rows = step_rows(obj)
    start, end = series_window(obj, now)
    last = {str(m.get("name")): m for m in status.get("analysis") or []}
    metrics = []
    for m in metric_queries(obj):
        evals = {str(e["at"]): e for e in recorded_evals.get(m["name"], [])}
        current = last.get(m["name"])
        if current and current.get("at"):
            evals[str(current["at"])] = {"at": current["at"], "value": current.get("value"),
                                         "verdict": current.get("verdict"), "message": current.get("message")}
        prom = prometheus.get(m["name"]) or {}
        metrics.append({**m, "last": current, "evaluations": sorted(evals.values(), key=lambda e: str(e["at"])),
                        "series": prom.get("points"), "seriesError": prom.get("error"),
                        "source": "prometheus" if prom.get("points") is not None else "status"})
    weights = weight_points(obj, events, recorded_weights)
    return {
        "summary": summary(obj),
        "inProgress": in_progress,
        "steps": [asdict(r) for r in rows],
        "approval": status.get("approval"),
        "approveCommand": plugin_command("approve", name, namespace),
        "weights": [[iso(at), w] for at, w in weights],
        "window": [iso(start), iso(end)],
        "metrics": metrics,
        "analysis": {"passes": status.get("analysisPasses") or 0, "inconclusive": status.get("inconclusiveCount") or 0,
                     "lastAt": status.get("lastAnalysisAt")},
        "compat": compat,
        "preflight": status.get("preflight"),
        "conditions": status.get("conditions") or [],
        "history": list(reversed(status.get("history") or [])),
        "events": [{"type": e.get("type"), "reason": e.get("reason"), "message": e.get("message"),
                    "count": e.get("count"),
                    "at": e.get("lastTimestamp") or e.get("eventTime") or e.get("firstTimestamp")}
                   for e in sorted(events, key=_event_time, reverse=True)],
        "actions": actions(obj),
        "spec": {"replicas": (obj.get("spec") or {}).get("replicas"), "prometheus": prometheus_address(obj)},
    }


def _event_time(ev: Obj) -> str:
    return str(ev.get("lastTimestamp") or ev.get("eventTime") or ev.get("firstTimestamp") or "")


def evaluation_of(metric: Obj) -> Obj | None:
    """An entry of status.analysis as one recorded evaluation (None without its time)."""
    if not metric.get("at"):
        return None
    return {"at": metric["at"], "value": metric.get("value"), "verdict": metric.get("verdict"),
            "message": metric.get("message")}

