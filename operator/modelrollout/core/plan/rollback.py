"""Rolling back: all traffic to stable, stable back to full size first, the canary scaled down after the delay;
and ``rollback-to=REVISION`` after promotion.
"""

from __future__ import annotations

from modelrollout.api import Phase
from modelrollout.core import actions as act
from modelrollout.core import consumed as cons
from modelrollout.core.approval import RETRY, ROLLBACK_TO
from modelrollout.core.plan.prewarm import trim_prewarm
from modelrollout.core.plan.shape import dynamic_stable, replica_ratio
from modelrollout.core.plan.state import POLL_SECONDS, Plan
from modelrollout.core.prewarm import kept


def rollback(p: Plan, reason: str, *, outcome: str = "RolledBack", by: str | None = None) -> None:
    p.status.rolled_back_revision = p.obs.revision
    p.status.rollback_at = p.now
    p.status.current_weight = 0
    p.status.approval = None
    p.status.approved_step = None
    p.status.progress_since = None
    p.phase(Phase.ROLLING_BACK, f"rolling back revision {p.obs.revision}: {reason}")
    if RETRY not in p.seen:  # not held in git: a later retry=true (kubectl) retries again
        p.status.consumed_annotations = cons.forget(p.status.consumed_annotations, RETRY)
    p.history(outcome, reason, by=by)
    p.event("RollingBack", f"all traffic back to stable {p.old.stable_revision}: {reason}",
            warning=True)
    finish_rollback(p)


def finish_rollback(p: Plan) -> None:
    stable, want = p.obs.stable, p.spec.replicas
    shrunk = dynamic_stable(p.spec) or replica_ratio(p.spec)
    if shrunk and stable is not None and (stable.replicas < want or stable.ready < want):
        # stable was scaled down as the canary grew: it must be ready at full size before traffic moves back
        if stable.replicas < want:
            p.actions.append(act.ScaleStable(want))
        if "waiting for stable" not in (p.status.message or ""):
            p.status.message = (f"{p.status.message} (waiting for stable: {stable.ready}/{want} ready "
                                "before moving traffic back)")
        p.again(POLL_SECONDS)
        return
    p.router_to_stable()
    at = p.status.rollback_at or p.now
    wait = (at + p.spec.rollback.scale_down_delay - p.now).total_seconds()
    if wait > 0:
        p.again(wait)
        return
    canary = p.obs.canary
    if canary is not None and canary.replicas > 0 and not p.reset_scales_canary():
        p.actions.append(act.ScaleCanary(0))
    stable_images = p.obs.stable.images if p.obs.stable is not None else ()
    trim_prewarm(p, [*stable_images, *kept(p.old.revision_images,
                                           p.spec.rollback.prewarm.keep_revisions)])
    reason = (p.status.message or "").split(": ", 1)[-1]
    p.phase(Phase.ROLLED_BACK, f"revision {p.obs.revision} rolled back: {reason}; "
            f"stable {p.old.stable_revision} serves 100%. Change the template, or annotate "
            f"{RETRY}=true to try it again")


def rollback_to(p: Plan, target: str) -> None:
    """``rollback-to=REVISION`` after promotion: restore a recorded revision and promote it without steps."""
    p.consume(ROLLBACK_TO)
    obs = p.obs
    if target == obs.revision:
        p.event("AnnotationIgnored", f"{ROLLBACK_TO}={target} ignored: it is the stable revision", warning=True)
        return
    if target not in obs.recorded:
        known = ", ".join(r for r in obs.recorded if r != obs.revision) or "none"
        p.event("AnnotationIgnored", f"{ROLLBACK_TO}={target} ignored: not a recorded revision (recorded: {known})",
                warning=True)
        return
    p.actions.append(act.RestoreRevision(target))
    p.status.fast_path_revision = target
    p.status.rolled_back_revision = None if p.old.rolled_back_revision == target else p.old.rolled_back_revision
    p.history("RollbackTo", f"from {obs.revision}", revision=target, by=p.by(ROLLBACK_TO))
    p.event("RollbackTo", f"restoring revision {target} (its template is back in the spec); steps skipped")
