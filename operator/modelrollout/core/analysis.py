"""Verdicts: judge metric samples against thresholds. No data is never a failure, and never a pass.

``judge`` decides one sample; ``assess`` turns one evaluation of every metric into new metric
statuses, the consecutive-failure counters, and what (if anything) must happen: a breach that rolls
back or pauses, alerts, or an inconclusive evaluation. What each Prometheus answer means is defined in
:mod:`modelrollout.core.answers`.

An evaluation counts as evidence only when it judged new samples: a metric's sample is new when the
newest raw sample its query read is newer than the one counted before and than the start of traffic
(``Sample.sample_at``; the evaluation time when the query reads no series). A repeat of the same sample
keeps its verdict in status but counts neither as a pass nor as a failure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from modelrollout import api
from modelrollout.api import Verdict


@dataclass(frozen=True)
class Series:
    """One series of a vector answer: its labels and its finite value."""

    labels: tuple[tuple[str, str], ...]
    value: float


@dataclass(frozen=True)
class Sample:
    """One query's answer: finite numbers (one per series), no usable value with the reason, or a query the
    metric source refused."""

    value: float | None
    """The value when the answer is one number (a scalar or a vector of one series)."""
    query: str
    error: str | None = None
    """Why there is no usable value (Inconclusive)."""
    series: tuple[Series, ...] = ()
    """Every series of the answer (finite values only); empty when ``value`` stands alone."""
    query_error: str | None = None
    """The metric source refused the query (a parse error, an unknown function): the user's to fix."""
    sample_at: datetime | None = None
    """When the newest raw sample the query read was scraped (None: not known)."""

    def values(self) -> tuple[Series, ...]:
        """The series to judge (``value`` alone as one unlabelled series)."""
        if self.series:
            return self.series
        if self.value is not None:
            return (Series((), self.value),)
        return ()


def _outside(metric: api.Metric, value: float) -> str | None:
    if metric.min is not None and value < metric.min:
        return f"is below min {metric.min:g}"
    if metric.max is not None and value > metric.max:
        return f"is above max {metric.max:g}"
    return None


def labels_text(labels: Sequence[tuple[str, str]]) -> str:
    """``{pod="a",revision="x"}``, or ``{}`` for a series without labels."""
    return "{" + ",".join(f'{k}="{v}"' for k, v in labels) + "}"


def worst(metric: api.Metric, series: tuple[Series, ...]) -> Series:
    """The series furthest beyond (or closest to) the metric's bounds."""
    def margin(s: Series) -> float:
        below = s.value - metric.min if metric.min is not None else math.inf
        above = metric.max - s.value if metric.max is not None else math.inf
        return min(below, above)
    return min(series, key=margin)


def judge(metric: api.Metric, sample: Sample) -> tuple[Verdict, str, float | None]:
    """Pass, Fail or Inconclusive for one sample, a sentence saying why, and the value to show (finite, or
    None). Every series of a vector answer is judged: one failing series fails the metric and is named."""
    if sample.query_error is not None:
        return Verdict.FAIL, f"{metric.name}: {sample.query_error} (query: {sample.query}); fix the query", None
    series = tuple(s for s in sample.values() if math.isfinite(s.value))
    if not series or len(series) != len(sample.values()):
        why = sample.error or ("not a finite number" if sample.values() else "no data")
        return Verdict.INCONCLUSIVE, f"{metric.name}: no usable value ({why}) from query {sample.query}", None
    bad = [s for s in series if _outside(metric, s.value) is not None]
    if bad:
        first = worst(metric, tuple(bad))
        where = "" if len(series) == 1 else (f" in series {labels_text(first.labels)} ({len(bad)} of {len(series)} "
                                              "series fail)")
        return (Verdict.FAIL, f"{metric.name} = {first.value:g}{where} {_outside(metric, first.value)} "
                f"(query: {sample.query})", first.value)
    shown = worst(metric, series)
    where = "" if len(series) == 1 else f" (worst of {len(series)} series, {labels_text(shown.labels)})"
    return Verdict.PASS, f"{metric.name} = {shown.value:g}{where} within bounds", shown.value


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
    fresh: bool
    """Every gating metric judged now read a new sample: the evaluation counts as evidence."""
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


def is_new(sample_at: datetime, old: api.MetricStatus | None, traffic_started_at: datetime | None) -> bool:
    """A sample scraped at ``sample_at`` is new evidence: newer than the one counted before and taken after
    traffic reached the canary."""
    if traffic_started_at is not None and sample_at <= traffic_started_at:
        return False
    return old is None or old.sample_at is None or sample_at > old.sample_at


def assess(
    analysis: api.Analysis,
    samples: Mapping[str, Sample],
    previous: Sequence[api.MetricStatus],
    now: datetime,
    *,
    traffic_started_at: datetime | None = None,
) -> Assessment:
    """Judge the samples of one evaluation. Metrics without a sample (initial delay) keep their status; a metric
    whose sample is not new keeps its failure count and its last counted sample time."""
    before = {m.name: m for m in previous}
    statuses: list[api.MetricStatus] = []
    breaches: list[Breach] = []
    alerts: list[str] = []
    judged = 0
    gating_pass = True
    fresh = True
    inconclusive = False
    for metric in analysis.metrics:
        old = before.get(metric.name)
        sample = samples.get(metric.name)
        if sample is None:
            if old is not None:
                statuses.append(old)
            continue
        verdict, message, value = judge(metric, sample)
        failures = old.failures if old is not None else 0
        sample_at = sample.sample_at or now
        new = verdict is Verdict.INCONCLUSIVE or is_new(sample_at, old, traffic_started_at)
        if not new:
            message += " (the same sample as before: not counted)"
            sample_at = old.sample_at if old is not None and old.sample_at is not None else sample_at
        elif verdict is Verdict.FAIL:
            failures += 1
        elif verdict is Verdict.PASS:
            failures = 0
        statuses.append(api.MetricStatus(
            name=metric.name, value=value, verdict=verdict, failures=failures, message=message, at=now,
            sample_at=sample_at if verdict is not Verdict.INCONCLUSIVE else (old.sample_at if old else None)))
        acting = new and verdict is Verdict.FAIL and failures > metric.failure_limit
        if metric.on_failure == "alert":
            if acting and failures == metric.failure_limit + 1:
                alerts.append(message)
            continue
        judged += 1
        fresh = fresh and new
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
        fresh=fresh and judged > 0,
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
