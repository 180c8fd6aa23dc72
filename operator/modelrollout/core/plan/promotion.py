"""Promotion: stable takes the new revision, and ``promote=TOKEN`` skips the remaining steps."""

from __future__ import annotations

from modelrollout.api import Phase
from modelrollout.core import actions as act
from modelrollout.core.approval import PROMOTE, build_token, check_token
from modelrollout.core.plan.evaluation import missing_evidence, receives_traffic
from modelrollout.core.plan.prewarm import trim_prewarm
from modelrollout.core.plan.roles import keep_for
from modelrollout.core.plan.shape import replica_ratio
from modelrollout.core.plan.state import POLL_SECONDS, Plan
from modelrollout.core.preflight import snapshot
from modelrollout.core.prewarm import kept, remember
from modelrollout.core.steps import step_of, steps_of

SKIP_ANALYSIS = "+skip-analysis"
"""Suffix of a promote token that promotes without the analysis evidence (``promote=TOKEN+skip-analysis``)."""


def promote(p: Plan) -> None:
    """The canary revision's pods, at full size, become stable: ``NAME-stable`` selects them (:func:`.roles.tend`)
    and the router takes the canary's share back. The previous stable's pods stay up for the switch-back window."""
    obs, want = p.obs, p.spec.replicas
    canary = obs.canary
    p.status.approval = None
    if canary is None or canary.revision != obs.revision:  # lost, or a rollback-to past the switch-back window
        p.actions.append(act.EnsureCanary(obs.revision, want))
        p.phase(Phase.PROMOTING, f"promoting: starting revision {obs.revision} at full size ({want} replicas)")
        p.again(POLL_SECONDS)
        return
    if canary.replicas < want:
        p.actions.append(act.ScaleCanary(want))
    if canary.ready < want or not canary.updated:
        p.phase(Phase.PROMOTING, f"promoting: waiting for revision {obs.revision} at full size, "
                f"{canary.ready}/{want} ready")
        p.await_pods()
        return
    if canary.replicas > want:
        p.actions.append(act.ScaleCanary(want))
    if not replica_ratio(p.spec):  # the Service router's share is the replicas: the previous stable goes (tend)
        p.router_to_stable()
    previous = p.old.stable_revision
    history = remember(p.old.revision_images, obs.revision, obs.images, p.spec.rollback.prewarm.keep_revisions)
    p.actions.append(act.RecordRevision(obs.revision, p.spec.rollback.prewarm.keep_revisions))
    p.status.stable_revision = obs.revision
    p.status.previous_revision = previous if previous != obs.revision else None
    p.status.scale_down_at = p.now + keep_for(p.spec)
    p.status.canary_revision = None
    p.status.current_step = None
    p.status.current_weight = 0
    p.status.approval = None
    p.status.approved_step = None
    p.status.progress_since = None
    p.status.stable_model = snapshot(p.spec.model)
    p.status.preflight = None
    p.status.revision_images = history
    p.status.prewarm = None
    p.status.fast_path_revision = None
    trim_prewarm(p, kept(history, p.spec.rollback.prewarm.keep_revisions))
    p.phase(Phase.SUCCEEDED, f"revision {obs.revision} promoted: its {want} analysed pods serve 100% as stable")
    p.history("Succeeded", "promoted")


def promote_annotation(p: Plan) -> bool:
    """``promote=TOKEN`` skips the remaining steps, not the analysis evidence promotion needs; True when the
    promotion starts now. ``promote=TOKEN+skip-analysis`` skips the evidence too."""
    value = p.obs.annotations.get(PROMOTE)
    if value is None:
        return False
    p.consume(PROMOTE)
    step = p.status.current_step or 0
    token = build_token(p.obs.revision, step)
    forced = value.strip().endswith(SKIP_ANALYSIS)
    total = len(steps_of(p.spec))
    check = check_token(value.strip().removesuffix(SKIP_ANALYSIS), revision=p.obs.revision, step=step, total=total,
                        what="promote")
    if not check.opens:
        p.event("PromoteRejected", f"{check.reason}; the current token is {token}", warning=True)
        return False
    missing = None if forced else missing_evidence(p)
    if missing is not None and not receives_traffic(p.spec, p.obs, p.status.traffic_started_at):
        p.event("PromoteRejected", f"promotion with {token} refused: {missing}. Annotate "
                f"{PROMOTE}={token}{SKIP_ANALYSIS} to promote without analysis evidence", warning=True)
        return False
    skipped = "remaining steps and analysis skipped" if forced and p.spec.analysis else "remaining steps skipped"
    p.history("Promoted", skipped, step=step, token=token, by=p.by(PROMOTE))
    p.status.approval = None
    p.status.approved_step = None
    steps = f"steps {step_of(step, total)}-{total}" if step < total else "no step (all were done)"
    if missing is not None:
        p.event("Promote", f"promotion requested with {token}: skipping {steps}; it waits for the analysis evidence")
        p.status.current_step = total
        p.status.step_started_at = p.now
        p.status.analysis_passes = 0
        return False
    p.event("Promote", f"promotion requested with {token}: skipping {steps}"
            + ("; analysis skipped" if forced and p.spec.analysis else ""), warning=forced and bool(p.spec.analysis))
    p.phase(Phase.PROMOTING, f"promoting revision {p.obs.revision} ({skipped} by request)")
    return True
