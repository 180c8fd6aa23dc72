"""The operator's own Prometheus metrics (served on /metrics by ``modelrollout run --metrics-port``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
