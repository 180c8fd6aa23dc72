"""Image pre-pull before any traffic moves, and its trimming to the revisions kept."""

from __future__ import annotations

from collections.abc import Sequence

from modelrollout import api
from modelrollout.api import Phase
from modelrollout.core import actions as act
from modelrollout.core.approval import RETRY
from modelrollout.core.plan.state import POLL_SECONDS, Plan
from modelrollout.core.prewarm import kept, wanted
from modelrollout.durations import format_duration


def trim_prewarm(p: Plan, images: Sequence[str]) -> None:
    """Keep only ``images`` pre-pulled (none: remove the DaemonSet)."""
    current = p.obs.prewarm
    if current is None:
        return
    want = wanted(images)
    if not want or not p.spec.rollback.prewarm.enabled:
        p.actions.append(act.DeletePrewarm())
    elif want != tuple(sorted(current.images)):
        p.actions.append(act.EnsurePrewarm(want))


def prewarmed(p: Plan) -> bool:
    """Pre-pull the canary's and stable's images (and the last revisions') on every node; True when done."""
    obs, policy = p.obs, p.spec.rollback.prewarm
    stable_images = obs.stable.images if obs.stable is not None else ()
    want = wanted(obs.images, stable_images, kept(p.old.revision_images, policy.keep_revisions))
    old = p.status.prewarm
    since = old.since if old is not None and old.since is not None else p.now
    state = obs.prewarm
    if state is None or tuple(sorted(state.images)) != want:
        p.actions.append(act.EnsurePrewarm(want))
        p.status.prewarm = api.PrewarmStatus(images=list(want), since=since)
        p.phase(Phase.PREWARMING, f"pre-pulling {len(want)} images on the nodes before any traffic moves")
        p.again(POLL_SECONDS)
        return False
    p.status.prewarm = api.PrewarmStatus(images=list(want), since=since, ready=state.ready, desired=state.desired)
    if state.updated and state.desired > 0 and state.ready >= state.desired:
        if p.old.phase is Phase.PREWARMING:
            p.event("Prewarmed", f"{len(want)} images pulled on {state.ready} nodes")
            p.phase(Phase.PROGRESSING, f"images pre-pulled on {state.ready} nodes")
        return True
    waited = (p.now - since).total_seconds()
    if waited > policy.timeout.total_seconds():
        nodes = "; ".join(state.failures) or (
            "no node matches the pod template's scheduling constraints" if state.desired == 0
            else f"{state.desired - state.ready} nodes not ready")
        reason = f"images not pre-pulled within {format_duration(policy.timeout)}: {nodes}; no traffic moved"
        p.status.rolled_back_revision = obs.revision
        p.status.progress_since = None
        if obs.canary is not None and obs.canary.replicas > 0:
            p.actions.append(act.ScaleCanary(0))
        trim_prewarm(p, [*stable_images, *kept(p.old.revision_images, policy.keep_revisions)])
        p.phase(Phase.FAILED, f"revision {obs.revision} failed before any traffic: {reason}. Fix the image or the "
                f"nodes, then change the template or annotate {RETRY}=true")
        p.history("Failed", reason)
        return False
    detail = f"; failing: {'; '.join(state.failures)}" if state.failures else ""
    p.phase(Phase.PREWARMING, f"pre-pulling {len(want)} images: {state.ready}/{state.desired} nodes ready{detail}")
    p.again(min(POLL_SECONDS, policy.timeout.total_seconds() - waited + 0.01))
    return False
