"""One reconcile of one rollout: observe -> decide -> carry out. Synchronous; run it in a thread."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from modelrollout import api, telemetry
from modelrollout.apply import WriteRefused, carry_out, changed_fields, emit, refusal_of, status_body
from modelrollout.core.approval import CONTROL_ANNOTATIONS
from modelrollout.core.model import Event
from modelrollout.core.plan import decide
from modelrollout.core.refusal import STALL_KEYS, backoff, classify, stalled_message, stalled_status
from modelrollout.kube import ApiError, Body, Kube
from modelrollout.metrics.base import MetricSource
from modelrollout.metrics.prometheus import PrometheusSource
from modelrollout.notify import Notifier
from modelrollout.observe import observe, parse_status, recheck

log = logging.getLogger("modelrollout.engine")

Clock = Callable[[], datetime]

PROGRESS_FIELDS = frozenset({"message", "conditions", "replicas"})
"""Status fields that report progress within a phase and step (the message's ready counts, the pods asked for);
a status that changes only these, with its conditions' type, status and reason as stored, is progress only."""
PROGRESS_WRITE_EVERY = 5.0
"""Seconds after a status write within which a progress-only change is not written but left for the next
reconcile (at most this much later): a transition or evaluation meanwhile writes it along, one patch for both."""

def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Stall:
    """A rollout whose last reconcile had a write refused (``core.refusal``): no new attempt before ``until``
    while the spec and its control annotations stay as they were (``on``)."""

    on: Hashable
    attempts: int
    until: datetime


def _stall_key(meta: Mapping[str, Any]) -> Hashable:
    """What, when it changes, makes a refused write worth trying again at once: the spec's generation and the
    control annotations (an abort or an approval is not kept waiting for a backoff)."""
    annotations = meta.get("annotations") or {}
    return (int(meta.get("generation") or 0),
            tuple(sorted((k, v) for k, v in annotations.items() if k in CONTROL_ANNOTATIONS)))


class Engine:
    """Reconciles rollouts; holds the clients and a metric source per Prometheus address."""

    def __init__(self, kube: Kube, *, clock: Clock = utcnow, default_prometheus: str | None = None,
                 notifier: Notifier | None = None) -> None:
        self.kube = kube
        self.notifier = notifier if notifier is not None else Notifier()
        """Webhook notifications of the events a carried-out decision emitted (queued; never blocks)."""
        self.clock = clock
        self.default_prometheus = default_prometheus
        self._sources: dict[tuple[str, float], MetricSource] = {}
        self.stalls: dict[tuple[str, str], Stall] = {}
        """(namespace, name) -> the backoff of a rollout whose writes the apiserver refuses."""
        self.status_written: dict[tuple[str, str], datetime] = {}
        """(namespace, name) -> when the operator last wrote the rollout's status (dropped when it is gone)."""
        self._lock = threading.Lock()

    def own_write(self, namespace: str, name: str, resource_version: str | None) -> bool:
        """The watch event is the echo of one of the operator's own last status or annotation writes (nothing new
        to react to)."""
        return self.kube.quiet_echo(namespace, name, resource_version)

    def source_for(self, analysis: api.Analysis) -> MetricSource:
        if analysis.prometheus is not None:
            key = (analysis.prometheus.address, analysis.prometheus.timeout.total_seconds())
        else:
            key = (self.default_prometheus or "", 5.0)
        with self._lock:
            if key not in self._sources:
                self._sources[key] = PrometheusSource(key[0], timeout=key[1])
            return self._sources[key]

    def reconcile(self, namespace: str, name: str) -> float | None:
        """Reconcile once; the seconds until the next look (None: only on a change)."""
        rollout = self.kube.rollout(namespace, name)
        if rollout is None or rollout["metadata"].get("deletionTimestamp"):
            self.stalls.pop((namespace, name), None)
            self.status_written.pop((namespace, name), None)
            return None
        now = self.clock()
        stall = self.stalls.get((namespace, name))
        if stall is not None and stall.on == _stall_key(rollout["metadata"]) and now < stall.until:
            return (stall.until - now).total_seconds()  # backing off: a wake-up does not retry a refused write
        with telemetry.RECONCILE_SECONDS.time():
            try:
                seen = observe(self.kube, rollout, now, self.source_for, default_prometheus=self.default_prometheus)
                decision = decide(seen.spec, seen.status, seen.observed, now)
                body = status_body(decision.status)
                changes = changed_fields(body, rollout.get("status") or {})
                later = self._progress_later(namespace, name, changes, now)
                carry_out(self.kube, rollout, rollout.get("status") or {}, decision, seen.ctx, seen.router,
                          write_status=later is None, status=(body, changes))
            except WriteRefused as exc:
                recheck(self.kube, rollout)
                return self._stalled(rollout, exc, now)
            except ApiError as exc:
                recheck(self.kube, rollout)  # the user's Ingress or Service may be gone: the next reconcile says so
                if classify(exc.status) == "transient":
                    raise
                return self._stalled(rollout, WriteRefused(refusal_of(exc, "a request (reading the world)")), now)
            except Exception:
                recheck(self.kube, rollout)
                raise
        self.stalls.pop((namespace, name), None)
        if changes and later is None:
            self.status_written[(namespace, name)] = now
        telemetry.RECONCILES.labels(namespace).inc()
        self._record(namespace, name, decision.status, seen.observed.samples is not None,
                     [e.reason for e in decision.events])
        telemetry.record_transition(namespace, name, seen.spec, seen.status, decision.status, now)
        self.notifier.notify(rollout, seen.spec, seen.observed.revision, seen.status, decision.status,
                             decision.events, now)
        if later is not None:  # the progress left unwritten is written by then at the latest
            return later if decision.requeue_after is None else min(decision.requeue_after, later)
        return decision.requeue_after

    def _progress_later(self, namespace: str, name: str, changes: Mapping[str, tuple[Any, Any]],
                        now: datetime) -> float | None:
        """The seconds until a progress-only status change (:func:`progress_only`) is due to be written, when the
        last status write is less than ``PROGRESS_WRITE_EVERY`` ago; else None (write it now)."""
        last = self.status_written.get((namespace, name))
        if last is None or not progress_only(changes):
            return None
        left = PROGRESS_WRITE_EVERY - (now - last).total_seconds()
        return left if left > 0 else None

    def _stalled(self, rollout: Body, exc: WriteRefused, now: datetime) -> float:
        """Make a refused write visible: a minimal status (phase, message, observedGeneration, conditions with
        Stalled=True and Ready=False), a Warning Event and the log; then back off (capped, doubling per refusal in
        a row). The seconds until the next attempt."""
        meta = rollout["metadata"]
        namespace, name = meta.get("namespace", "default"), meta["name"]
        on = _stall_key(meta)
        before = self.stalls.get((namespace, name))
        attempts = before.attempts + 1 if before is not None and before.on == on else 1
        retry_in = backoff(attempts)
        self.stalls[(namespace, name)] = Stall(on, attempts, now + timedelta(seconds=retry_in))
        telemetry.RECONCILE_ERRORS.labels(namespace, name).inc()
        status = stalled_status(parse_status(rollout.get("status")), exc.refusal,
                                generation=int(meta.get("generation") or 0), now=now, retry_in=retry_in,
                                done=exc.done)
        message = stalled_message(exc.refusal, retry_in, exc.done)  # (a rollback keeps its status message)
        log.warning("%s/%s: %s (refusal %d in a row)", namespace, name, message, attempts)
        body = {k: v for k, v in status_body(status).items() if k in STALL_KEYS}
        try:
            self.kube.patch_rollout_status(namespace, name, body)
        except Exception as failed:  # even the stall is refused (403 on status): the Event and the log remain
            log.warning("%s/%s: could not record the stall in status either: %s", namespace, name,
                        refusal_of(failed, "the stalled status").describe() if isinstance(failed, ApiError)
                        else failed)
        emit(self.kube, rollout, Event("Warning", "WriteRefused", message))
        return retry_in

    def _record(self, namespace: str, name: str, status: api.ModelRolloutStatus, evaluated: bool,
                reasons: list[str]) -> None:
        phase = status.phase or api.Phase.PENDING
        for p in api.Phase:
            telemetry.PHASE.labels(namespace, name, p.value).set(1 if p is phase else 0)
        telemetry.WEIGHT.labels(namespace, name).set(status.current_weight)
        if evaluated:
            for m in status.analysis:
                telemetry.EVALUATIONS.labels(namespace, name, m.name, m.verdict.value).inc()
        if "RollingBack" in reasons and status.history:
            telemetry.ROLLBACKS.labels(namespace, name, status.history[-1].outcome).inc()


def progress_only(changes: Mapping[str, tuple[Any, Any]]) -> bool:
    """The status changes (``apply.changed_fields``) are progress only: some, all in ``PROGRESS_FIELDS``, and the
    conditions' type, status, reason and observedGeneration unchanged (only their message or time differ). Pure."""
    if not changes or not set(changes) <= PROGRESS_FIELDS:
        return False
    if "conditions" in changes:
        new, old = changes["conditions"]
        return _condition_states(new) == _condition_states(old)
    return True


def _condition_states(conditions: Any) -> list[tuple[Any, ...]]:
    return [(c.get("type"), c.get("status"), c.get("reason"), c.get("observedGeneration"))
            for c in conditions or [] if isinstance(c, Mapping)]
