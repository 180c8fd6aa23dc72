"""Carry out one Decision (I/O): actions in order, the status written once, annotations consumed, events.

The status is written after the actions and before control annotations are removed, so a crash at
any point leaves either the old status (the decision is made again; writes the world already shows
are not repeated) or the new one with the annotation still there (it is recognised as consumed).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, assert_never

from modelrollout import api, drills, telemetry
from modelrollout.context import RolloutContext
from modelrollout.core import actions as act
from modelrollout.core.model import Decision, Event
from modelrollout.core.refusal import Refusal, classify, finite_status
from modelrollout.kube import ApiError, Body, Kube, api_message, api_reason
from modelrollout.prewarm import apply_daemonset, delete_daemonset
from modelrollout.revisions import record, restore
from modelrollout.routers.base import Router
from modelrollout.workloads import (
    apply_deployment,
    delete_config_map,
    delete_deployment,
    ensure_config_map,
    ensure_services,
    scale,
    select_revision,
)

log = logging.getLogger("modelrollout.apply")


RENDERED = (act.EnsureServices, act.EnsureStable, act.EnsureCanary, act.EnsurePrewarm, act.RecordRevision,
            act.EnsureDrill)
"""Actions that create or apply objects rendered from the spec (a permanent refusal of one: the spec is Invalid)."""


class WriteRefused(Exception):
    """The apiserver refused a write with a 4xx no retry outlives by itself (``core.refusal.classify``)."""

    def __init__(self, refusal: Refusal, done: str = "") -> None:
        super().__init__(refusal.describe())
        self.refusal = refusal
        self.done = done
        """What was carried out but could not be recorded (a refused status update), in words."""


def refusal_of(exc: ApiError, what: str, *, rendered: bool = False) -> Refusal:
    return Refusal(int(exc.status or 0), api_reason(exc), api_message(exc), what, rendered)


def status_body(status: api.ModelRolloutStatus) -> Body:
    """The status as JSON for a merge patch (None values delete fields); a non-finite float (no JSON form: the
    apiserver would refuse the whole patch) is written as null and named in the message instead."""
    out = status.model_dump(by_alias=True, mode="json")
    assert isinstance(out, dict)
    return finite_status(out)


def carry_out(kube: Kube, rollout: Body, old_status: Body, decision: Decision, ctx: RolloutContext | None,
              router: Router | None, *, write_status: bool = True,
              status: tuple[Body, Mapping[str, tuple[Any, Any]]] | None = None) -> None:
    """Carry out ``decision`` (each write to the rollout records its echo in the port as soon as it is answered,
    before the Events are posted: the watch may deliver the echo meanwhile). ``write_status=False``: the status
    is left as stored (the caller writes a change that is progress only later, ``Engine``). ``status``: the
    decision's :func:`status_body` and its :func:`changed_fields` from ``old_status``, when the caller has them."""
    meta = rollout["metadata"]
    name, namespace = meta["name"], meta.get("namespace", "default")
    removals: tuple[str, ...] = ()
    template = (rollout.get("spec") or {}).get("template") or {}
    for action in decision.actions:
        kind = type(action).__name__
        if isinstance(action, act.RemoveAnnotations):  # consumed after the status write
            removals = action.keys
            continue
        if isinstance(action, act.DeleteDrill):  # the one action an Invalid spec can carry
            telemetry.WRITES.labels(kind).inc()
            log.info("%s/%s: %s", namespace, name, action)
            drills.delete(kube, namespace, action)
            continue
        assert ctx is not None and router is not None, f"{kind} needs a valid spec"
        telemetry.WRITES.labels(kind).inc()
        log.info("%s/%s: %s", namespace, name, action)
        try:
            _carry(action, ctx, router, rollout, template)
        except ApiError as exc:
            if classify(exc.status) == "transient":
                raise
            raise WriteRefused(refusal_of(exc, f"the {kind} write", rendered=isinstance(action, RENDERED))) from exc
    if status is None:
        body = status_body(decision.status)
        status = body, changed_fields(body, old_status)
    new_status, changes = status
    if write_status and changes:
        try:
            kube.patch_rollout_status(namespace, name, new_status)
        except ApiError as exc:
            if classify(exc.status) == "transient":
                raise
            done = f"{decision.status.phase.value if decision.status.phase else ''}: {decision.status.message}"
            raise WriteRefused(refusal_of(exc, "the status update"), done.strip(": ")) from exc
    seen = meta.get("annotations") or {}
    for key in removals:
        if key in seen:
            kube.consume_annotation(namespace, name, key, seen[key])
    for event in decision.events:
        emit(kube, rollout, event)


def _carry(action: act.Action, ctx: RolloutContext, router: Router, rollout: Body, template: Body) -> None:
    """Carry out one action (RemoveAnnotations and DeleteDrill are carried out by :func:`carry_out`)."""
    match action:
        case act.EnsureServices():
            ensure_services(ctx, action.revision)
        case act.SelectRevision():
            select_revision(ctx, action.track, action.revision)
        case act.DeleteWorkload():
            delete_deployment(ctx, action.name)
            if action.revision is not None and ctx.spec.model.config:
                delete_config_map(ctx, action.revision)
        case act.EnsureStable():
            ensure_config_map(ctx, action.revision)
            apply_deployment(ctx, template, "stable", action.revision, action.replicas)
        case act.EnsureCanary():
            ensure_config_map(ctx, action.revision)
            apply_deployment(ctx, template, "canary", action.revision, action.replicas)
        case act.ScaleStable():
            scale(ctx, "stable", action.replicas)
        case act.ScaleCanary():
            scale(ctx, "canary", action.replicas)
        case act.SetWeight():
            router.set_weight(ctx, action.weight, action.features)
        case act.ResetRouter():
            router.reset(ctx)
        case act.EnsurePrewarm():
            apply_daemonset(ctx, template, action.images)
        case act.DeletePrewarm():
            delete_daemonset(ctx)
        case act.RecordRevision():
            record(ctx, rollout, action.revision, action.keep)
        case act.RestoreRevision():
            restore(ctx, rollout, action.revision)
        case act.EnsureDrill():
            drills.create(ctx, action)
        case act.RemoveAnnotations() | act.DeleteDrill():
            raise AssertionError(f"{type(action).__name__} is carried out by carry_out")
        case _:
            assert_never(action)


def changed_fields(new: Body, old: Body) -> dict[str, tuple[Any, Any]]:
    """The top-level status fields whose value to write differs from the stored one, as (new, old) (the apiserver
    drops nulls, so compared without them; an empty list or 0 where nothing is stored is no change). Pure."""
    pruned_new, pruned_old = _prune(new), _prune(old)
    keys = set(pruned_new) | set(pruned_old)
    return {k: (pruned_new.get(k), pruned_old.get(k)) for k in keys
            if pruned_new.get(k) != pruned_old.get(k) and not (pruned_new.get(k) in ([], 0) and k not in pruned_old)}


def _prune(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _prune(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_prune(v) for v in value]
    return value


def emit(kube: Kube, rollout: Body, event: Event) -> None:
    """A core/v1 Event on the ModelRollout; failures to emit are logged, never raised."""
    meta = rollout["metadata"]
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{meta['name']}.{time.time_ns():x}{uuid.uuid4().hex[:4]}",
                     "namespace": meta.get("namespace", "default")},
        "involvedObject": {"apiVersion": f"{api.GROUP}/{api.VERSION}", "kind": api.KIND, "name": meta["name"],
                           "namespace": meta.get("namespace", "default"), "uid": meta.get("uid"),
                           "resourceVersion": meta.get("resourceVersion")},
        "reason": event.reason,
        "message": event.message[:1024],
        "type": event.type,
        "source": {"component": "modelrollout"},
        "reportingComponent": "modelrollout.io/operator",
        "reportingInstance": "modelrollout",
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
    try:
        kube.create_event(body)
    except Exception as exc:
        log.warning("could not emit event %s: %s", event.reason, exc)
