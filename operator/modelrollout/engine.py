"""One reconcile of one rollout: observe -> decide -> carry out. Synchronous; run it in a thread."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from modelrollout import api, telemetry
from modelrollout.apply import carry_out
from modelrollout.core.plan import decide
from modelrollout.kube import Kube
from modelrollout.metrics.base import MetricSource
from modelrollout.metrics.prometheus import PrometheusSource
from modelrollout.notify import Notifier
from modelrollout.observe import observe, recheck

log = logging.getLogger("modelrollout.engine")

Clock = Callable[[], datetime]

OWN_WRITES_KEPT = 4
"""resourceVersions of its own writes remembered per rollout, to tell their echoes from other changes."""


def utcnow() -> datetime:
    return datetime.now(UTC)


class Engine:
    """Reconciles rollouts; holds the clients and a metric source per Prometheus address."""

    def __init__(self, kube: Kube, *, clock: Clock = utcnow, default_prometheus: str | None = None,
                 notifier: Notifier | None = None) -> None:
        self.kube = kube
        self.notifier = notifier if notifier is not None else Notifier()
        """Webhook notifications of the events a carried-out decision emitted (queued; never blocks)."""
        self.clock = clock
        self.default_prometheus = default_prometheus
        self.written: dict[tuple[str, str], tuple[str, ...]] = {}
        """(namespace, name) -> resourceVersions of the operator's own last writes (a few: under load the echo of
        one write can arrive after the next write), to ignore its own echo."""
        self._sources: dict[tuple[str, float], MetricSource] = {}
        self._lock = threading.Lock()

    def own_write(self, namespace: str, name: str, resource_version: str | None) -> bool:
        """The watch event is the echo of one of the operator's own last writes (nothing new to react to)."""
        return resource_version is not None and resource_version in self.written.get((namespace, name), ())

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
        rollout = self.kube.get_rollout(namespace, name)
        if rollout is None or rollout["metadata"].get("deletionTimestamp"):
            self.written.pop((namespace, name), None)  # bounded by the live rollouts, not every one ever seen
            return None
        with telemetry.RECONCILE_SECONDS.time():
            now = self.clock()
            seen = observe(self.kube, rollout, now, self.source_for, default_prometheus=self.default_prometheus)
            decision = decide(seen.spec, seen.status, seen.observed, now)
            try:
                carry_out(self.kube, rollout, rollout.get("status") or {}, decision, seen.ctx, seen.router,
                          lambda version: self._wrote(namespace, name, version))
            except Exception:
                recheck(rollout)  # the user's Ingress or Service may be gone: the next reconcile checks and says so
                raise
        telemetry.RECONCILES.labels(namespace).inc()
        self._record(namespace, name, decision.status, seen.observed.samples is not None,
                     [e.reason for e in decision.events])
        telemetry.record_transition(namespace, name, seen.spec, seen.status, decision.status, now)
        self.notifier.notify(rollout, seen.spec, seen.observed.revision, seen.status, decision.status,
                             decision.events, now)
        return decision.requeue_after

    def _wrote(self, namespace: str, name: str, resource_version: str) -> None:
        recent = self.written.get((namespace, name), ())[-(OWN_WRITES_KEPT - 1):]
        self.written[(namespace, name)] = (*recent, resource_version)

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
