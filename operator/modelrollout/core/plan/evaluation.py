"""Evidence from the canary: the progress deadline of its pods, the metrics' evaluation folded into status, and
what promotion still waits for.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from modelrollout import api
from modelrollout.api import Phase
from modelrollout.core import analysis as an
from modelrollout.core.model import Observed
from modelrollout.core.phases import ACTIVE
from modelrollout.core.plan.gates import gate
from modelrollout.core.plan.rollback import rollback
from modelrollout.core.plan.state import Plan
from modelrollout.core.steps import blue_green


def canary_deadline(p: Plan) -> bool:
    """Roll back when canary pods stay unready past the progress deadline; runs even while pods fail."""
    canary = p.obs.canary
    if canary is None or canary.replicas == 0 or (canary.ready >= canary.replicas and canary.updated):
        if p.status.progress_since is not None and p.old.phase in ACTIVE:
            p.status.progress_since = None
        return False
    since = p.status.progress_since or p.now
    p.status.progress_since = since
    waited = (p.now - since).total_seconds()
    limit = p.spec.progress_deadline_seconds
    if waited > limit:
        why = canary.failure or "pods not ready"
        rollback(p, f"canary pods not ready after {limit}s: {why} ({canary.ready}/{canary.replicas} ready)")
        return True
    p.await_pods()
    return False


def evaluate(p: Plan) -> bool:
    """Fold this evaluation into status; True when it rolled back or paused the rollout."""
    analysis = p.spec.analysis
    assert analysis is not None and p.obs.samples is not None
    result = an.assess(analysis, p.obs.samples, p.old.analysis, p.now, traffic_started_at=p.old.traffic_started_at)
    passes, consecutive = p.old.analysis_passes, p.old.consecutive_passes
    if not result.all_pass:
        passes = consecutive = 0
    elif result.fresh and receives_traffic(p.spec, p.obs, p.status.traffic_started_at):
        passes, consecutive = passes + 1, consecutive + 1
    # else: every metric passed, but on a repeated sample or while no traffic reached the canary: not evidence
    inconclusive = p.old.inconclusive_count + 1 if result.inconclusive else 0
    p.status.analysis = list(result.metrics)
    p.status.analysis_passes = passes
    p.status.consecutive_passes = consecutive
    p.status.inconclusive_count = inconclusive
    p.status.last_analysis_at = p.now
    for message in result.alerts:
        p.event("AnalysisAlert", message, warning=True)
    if result.breach is not None:
        breach = result.breach
        if breach.action == "rollback" and p.spec.rollback.automatic:
            rollback(p, f"metric {breach.message}")
            return True
        action = "rollback" if breach.action == "rollback" else "resume"
        what = "approve to roll back" if action == "rollback" else "approve to resume"
        p.event("AnalysisFailed", f"{breach.message}; {what}", warning=True)
        gate(p, p.status.current_step or 0, f"metric {breach.message}; {what}", action)
        return True
    if result.inconclusive and inconclusive >= analysis.inconclusive.limit:
        last = "; ".join(m.message or "" for m in result.metrics if m.verdict is api.Verdict.INCONCLUSIVE)
        if analysis.inconclusive.action == "rollback":
            rollback(p, f"analysis inconclusive {inconclusive} times in a row: {last}")
            return True
        p.phase(Phase.PAUSED, f"analysis inconclusive {inconclusive} times in a row, holding until metrics "
                f"return: {last}")
        if inconclusive == analysis.inconclusive.limit:
            p.event("AnalysisInconclusive", f"holding: {last}", warning=True)
        schedule_analysis(p)
        return True
    return False


def receives_traffic(spec: api.ModelRolloutSpec, obs: Observed, traffic_started_at: datetime | None) -> bool:
    """The canary receives traffic now: a weight above zero, a header route or a mirror on the router, or the
    blue-green preview."""
    if blue_green(spec):
        return traffic_started_at is not None
    return obs.route is not None and (obs.route.weight > 0 or obs.route.features.any)


def evidence_missing(spec: api.ModelRolloutSpec, obs: Observed, *, consecutive: int,
                     statuses: Sequence[api.MetricStatus], traffic_started_at: datetime | None) -> str | None:
    """Why analysis does not yet allow promotion (None: it does, or no metric gates). Promotion needs
    ``spec.analysis.passes`` evaluations in a row in which every gating metric passed on new samples while the
    canary received traffic."""
    analysis = spec.analysis
    if analysis is None or not any(m.on_failure != "alert" for m in analysis.metrics):
        return None
    if consecutive >= analysis.passes and an.last_all_pass(analysis, statuses):
        return None
    why = (f"promotion waits for {analysis.passes} passing evaluation(s) of every metric in a row, each on new "
           f"samples while the canary receives traffic ({consecutive}/{analysis.passes} so far)")
    if not receives_traffic(spec, obs, traffic_started_at):
        why += "; no traffic reaches the canary now, so no evaluation can count"
    return why


def missing_evidence(p: Plan) -> str | None:
    return evidence_missing(p.spec, p.obs, consecutive=p.status.consecutive_passes, statuses=p.status.analysis,
                            traffic_started_at=p.status.traffic_started_at)


def schedule_analysis(p: Plan) -> None:
    nxt = an.next_analysis_in(p.spec.analysis, p.status.last_analysis_at, p.now)
    if nxt is not None and p.status.traffic_started_at is not None:
        p.again(nxt.total_seconds())
