"""The operator's own Prometheus metrics (served on /metrics by ``modelrollout run --metrics-port``)."""

from __future__ import annotations

from datetime import datetime

from prometheus_client import Counter, Gauge, Histogram

from modelrollout import api
from modelrollout.core.transitions import approvals_consumed, completed_steps

EVALUATIONS = Counter("modelrollout_analysis_evaluations_total", "Metric evaluations by verdict",
                      ["namespace", "rollout", "metric", "verdict"])
ROLLBACKS = Counter("modelrollout_rollbacks_total", "Rollbacks by reason", ["namespace", "rollout", "reason"])
RECONCILE_ERRORS = Counter("modelrollout_reconcile_errors_total", "Reconciles that raised", ["namespace", "rollout"])
RECONCILES = Counter("modelrollout_reconciles_total", "Reconciles done", ["namespace"])
PHASE = Gauge("modelrollout_rollout_phase", "1 for the current phase of each rollout",
              ["namespace", "rollout", "phase"])
WEIGHT = Gauge("modelrollout_rollout_weight", "Percent of traffic on the canary", ["namespace", "rollout"])
WRITES = Counter("modelrollout_api_writes_total", "API writes by kind of action", ["action"])
RECONCILE_SECONDS = Histogram("modelrollout_reconcile_seconds", "Time of one reconcile")
STEP_SECONDS = Histogram("modelrollout_step_duration_seconds", "Time a canary step took, observed when it completes",
                         ["namespace", "rollout", "kind"],
                         buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400))
APPROVAL_WAIT_SECONDS = Histogram("modelrollout_approval_wait_seconds",
                                  "Time an approval gate waited, observed when its token is consumed",
                                  ["namespace", "rollout", "action"],
                                  buckets=(5, 30, 60, 300, 900, 1800, 3600, 7200, 14400, 43200, 86400, 259200))
NOTIFICATIONS = Counter("modelrollout_notifications_total", "Webhook notifications by event and result "
                        "(delivered, failed, dropped)", ["event", "result"])


def record_transition(namespace: str, name: str, spec: api.ModelRolloutSpec | None, old: api.ModelRolloutStatus,
                      new: api.ModelRolloutStatus, now: datetime) -> None:
    """Observe the steps completed and the approvals consumed between the old and the new status."""
    for step in completed_steps(spec, old, new, now):
        STEP_SECONDS.labels(namespace, name, step.kind).observe(step.seconds)
    for gate in approvals_consumed(old, new, now):
        APPROVAL_WAIT_SECONDS.labels(namespace, name, gate.action).observe(gate.seconds)
