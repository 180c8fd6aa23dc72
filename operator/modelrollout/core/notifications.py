"""Which webhook notifications one decision sends, and their JSON payloads.

A notification follows a Kubernetes Event the decision emits (one per transition), so a rollout event is
posted once per transition; the delivery id is derived from that Event and stays the same across retries,
which lets a receiver drop a repeat it already has.

Pure: no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, get_args

from modelrollout import api
from modelrollout.core.model import Event

NOTIFY_EVENTS: tuple[str, ...] = get_args(api.NotifyEvent)
"""Every event a webhook can receive (spec.notify.webhook.events filters them)."""

EVENT_BY_REASON: dict[str, str] = {
    "PhaseAwaitingApproval": "AwaitingApproval",
    "PhasePaused": "Paused",
    "Approved": "Approved",
    "SetWeight": "SetWeight",
    "Promoting": "Promoting",
    "RollingBack": "RollingBack",
    "PhaseRolledBack": "RolledBack",
    "AnalysisFailed": "AnalysisFailed",
    "AnalysisAlert": "AnalysisAlert",
    "AnalysisInconclusive": "AnalysisInconclusive",
    "Superseded": "Superseded",
    "PhaseFailed": "Failed",
    "PhaseInvalid": "Invalid",
}
"""Kubernetes Event reason -> webhook event. ``PhaseSucceeded`` is Promoted or Succeeded (see notify_event)."""

ROLLBACK_OUTCOMES = ("RolledBack", "Aborted")
"""history[].outcome of a rollback (plan.rollback): a breach or deadline, or an abort."""


@dataclass(frozen=True)
class Notice:
    """One webhook notification to deliver."""

    event: str
    """The webhook event (one of NOTIFY_EVENTS)."""
    id: str
    """Delivery id: the same for every attempt of this notification."""
    payload: dict[str, Any]
    """The JSON body."""


def notify_event(reason: str, old: api.ModelRolloutStatus, new: api.ModelRolloutStatus) -> str | None:
    """The webhook event that follows the Kubernetes Event ``reason``, or None when it has none."""
    if reason == "PhaseSucceeded":
        promoted = (old.canary_revision is not None and new.stable_revision == old.canary_revision
                    and old.stable_revision != new.stable_revision)
        return "Promoted" if promoted else "Succeeded"
    return EVENT_BY_REASON.get(reason)


def _time(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def _rollback(new: api.ModelRolloutStatus) -> dict[str, Any] | None:
    for entry in reversed(new.history):
        if entry.outcome in ROLLBACK_OUTCOMES:
            out: dict[str, Any] = {"outcome": entry.outcome, "reason": entry.message,
                                   "revision": entry.revision, "at": _time(entry.at)}
            if entry.by:
                out["by"] = entry.by
            return out
    return None


def delivery_id(uid: str, namespace: str, name: str, reason: str, revision: str, now: datetime, index: int) -> str:
    """A stable id for the notification of the ``index``-th Kubernetes Event of the decision made at ``now``."""
    text = "|".join((uid, namespace, name, reason, revision, _time(now), str(index)))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def notices(*, namespace: str, name: str, uid: str, revision: str, old: api.ModelRolloutStatus,
            new: api.ModelRolloutStatus, events: Sequence[Event], now: datetime,
            wanted: Collection[str] = ()) -> list[Notice]:
    """The notifications for a decision's ``events`` (``wanted`` empty: every event), in the events' order."""
    out = []
    for index, event in enumerate(events):
        kind = notify_event(event.reason, old, new)
        if kind is None or (wanted and kind not in wanted):
            continue
        payload: dict[str, Any] = {
            "id": delivery_id(uid, namespace, name, event.reason, revision, now, index),
            "event": kind,
            "kubernetesEvent": {"reason": event.reason, "type": event.type},
            "rollout": {"namespace": namespace, "name": name, "uid": uid},
            "revision": revision,
            "stableRevision": new.stable_revision,
            "canaryRevision": new.canary_revision,
            "step": new.current_step,
            "weight": new.current_weight,
            "phase": new.phase.value if new.phase is not None else None,
            "message": event.message,
            "time": _time(now),
        }
        if new.approval is not None:
            payload["approval"] = {"token": new.approval.token, "command": new.approval.command,
                                   "step": new.approval.step, "reason": new.approval.reason,
                                   "action": new.approval.action}
        if kind in ("RollingBack", "RolledBack"):
            payload["rollback"] = _rollback(new)
        out.append(Notice(kind, payload["id"], payload))
    return out
