"""Verdicts: judge metric samples against thresholds. No data is never a failure.

``judge`` decides one sample; ``assess`` turns one evaluation of every metric into new metric
statuses, the consecutive-failure counters, and what (if anything) must happen: a breach that rolls
back or pauses, alerts, or an inconclusive evaluation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from modelrollout import api
from modelrollout.api import Verdict


@dataclass(frozen=True)
class Sample:
    """One query's answer: a number, or no data with the reason."""

    value: float | None
    query: str
    error: str | None = None


def judge(metric: api.Metric, sample: Sample) -> tuple[Verdict, str]:
    """Pass, Fail or Inconclusive for one sample, with a sentence saying why."""
    value = sample.value
    if value is None or math.isnan(value):
        why = sample.error or ("NaN" if value is not None else "no data")
        return Verdict.INCONCLUSIVE, f"{metric.name}: no usable value ({why}) from query {sample.query}"
    if metric.min is not None and value < metric.min:
        return Verdict.FAIL, f"{metric.name} = {value:g} is below min {metric.min:g} (query: {sample.query})"
    if metric.max is not None and value > metric.max:
        return Verdict.FAIL, f"{metric.name} = {value:g} is above max {metric.max:g} (query: {sample.query})"
    return Verdict.PASS, f"{metric.name} = {value:g} within bounds"


@dataclass(frozen=True)
class Breach:
    """A metric that failed more often in a row than its failureLimit allows."""

    metric: str
    action: str  # "rollback" | "pause"
    message: str


@dataclass(frozen=True)
class Assessment:
    """The outcome of one evaluation of every metric."""

    metrics: tuple[api.MetricStatus, ...]
    all_pass: bool
    """Every judged metric that gates (not alert-only) passed, and at least one was judged."""
    inconclusive: bool
    """A gating metric had no data, and nothing failed past its limit."""
    breach: Breach | None
    alerts: tuple[str, ...]
    """Messages of alert-only metrics that just crossed their failureLimit."""


def delayed(metric: api.Metric, traffic_started_at: datetime | None, now: datetime) -> bool:
    """The metric is still inside its initialDelay."""
    if metric.initial_delay is None or traffic_started_at is None:
        return False
    return now < traffic_started_at + metric.initial_delay


def assess(
    analysis: api.Analysis,
    samples: Mapping[str, Sample],
    previous: Sequence[api.MetricStatus],
    now: datetime,
) -> Assessment:
    """Judge the samples of one evaluation. Metrics without a sample (initial delay) keep their status."""
    before = {m.name: m for m in previous}
    statuses: list[api.MetricStatus] = []
    breaches: list[Breach] = []
    alerts: list[str] = []
    judged = 0
    gating_pass = True
    inconclusive = False
    for metric in analysis.metrics:
        old = before.get(metric.name)
        sample = samples.get(metric.name)
        if sample is None:
            if old is not None:
                statuses.append(old)
            continue
        verdict, message = judge(metric, sample)
        failures = old.failures if old is not None else 0
        if verdict is Verdict.FAIL:
            failures += 1
        elif verdict is Verdict.PASS:
            failures = 0
        statuses.append(
            api.MetricStatus(name=metric.name, value=sample.value if verdict is not Verdict.INCONCLUSIVE else None,
                             verdict=verdict, failures=failures, message=message, at=now)
        )
        acting = verdict is Verdict.FAIL and failures > metric.failure_limit
        if metric.on_failure == "alert":
            if acting and failures == metric.failure_limit + 1:
                alerts.append(message)
            continue
        judged += 1
        if verdict is not Verdict.PASS:
            gating_pass = False
        if verdict is Verdict.INCONCLUSIVE:
            inconclusive = True
        if acting:
            breaches.append(Breach(metric.name, metric.on_failure, message))
    breach = next((b for b in breaches if b.action == "rollback"), breaches[0] if breaches else None)
    return Assessment(
        metrics=tuple(statuses),
        all_pass=gating_pass and judged > 0,
        inconclusive=inconclusive and breach is None,
        breach=breach,
        alerts=tuple(alerts),
    )


def last_all_pass(analysis: api.Analysis, statuses: Sequence[api.MetricStatus]) -> bool:
    """The latest evaluation passed for every gating metric that has been evaluated (at least one)."""
    gating = {m.name for m in analysis.metrics if m.on_failure != "alert"}
    judged = [s for s in statuses if s.name in gating]
    return bool(judged) and all(s.verdict is Verdict.PASS for s in judged)


def analysis_due(
    analysis: api.Analysis | None, last: datetime | None, traffic_started_at: datetime | None, now: datetime
) -> bool:
    """An evaluation is due: analysis is configured, traffic has started, and the interval has passed."""
    if analysis is None or traffic_started_at is None:
        return False
    return last is None or now >= last + analysis.interval


def next_analysis_in(analysis: api.Analysis | None, last: datetime | None, now: datetime) -> timedelta | None:
    """Time until the next evaluation, for scheduling."""
    if analysis is None:
        return None
    if last is None:
        return timedelta(0)
    return max(timedelta(0), last + analysis.interval - now)


def due_metrics(
    analysis: api.Analysis, traffic_started_at: datetime | None, now: datetime
) -> tuple[api.Metric, ...]:
    """The metrics to query now (those past their initialDelay)."""
    return tuple(m for m in analysis.metrics if not delayed(m, traffic_started_at, now))
