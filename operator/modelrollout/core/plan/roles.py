"""Roles: which revision's pods each per-track Service selects, and which Deployments are still needed.

Every revision runs in its own Deployment (``NAME-REVISION``); a role is a Service's selector. Every decision ends
with :func:`tend`, which derives from the status being written what the world must show:

- ``NAME-stable`` selects the stable revision and ``NAME-canary`` the canary revision (a missing one is created).
  The stable selector is written before any router write of the decision, so a promotion moves traffic onto the
  analysed pods before the router takes the canary's share back; the canary selector after them, so a new canary
  is selected only once the router no longer sends the previous one a share.
- A Deployment is kept while it runs the stable or canary revision, the revision the spec asks for, or the previous
  stable revision until ``scaleDownAt``; any other Deployment of the rollout is deleted, after the router writes.
"""

from __future__ import annotations

from datetime import timedelta

from modelrollout import api
from modelrollout.core import actions as act
from modelrollout.core.plan.shape import replica_ratio
from modelrollout.core.plan.state import Plan


def keep_for(spec: api.ModelRolloutSpec) -> timedelta:
    """How long the previous stable revision stays up after a promotion: the canary strategy's scaleDownDelay;
    none after a blue-green switch (its pause after ``setWeight 100`` kept it up already) or with the Service
    router (its pods would share the root Service with the new stable)."""
    canary = spec.strategy.canary
    if canary is None or replica_ratio(spec):
        return timedelta(0)
    return canary.scale_down_delay


def tend(p: Plan) -> None:
    """Per-track Services select their revisions; no Deployment outlives its role. Pure."""
    obs, status = p.obs, p.status
    stable = status.stable_revision or obs.revision
    canary = status.canary_revision if status.canary_revision not in (None, stable) else None
    if "stable" not in obs.selects or "canary" not in obs.selects:
        p.actions.insert(0, act.EnsureServices(stable))
    elif obs.selects["stable"] != stable:
        p.actions.insert(0, act.SelectRevision("stable", stable))
    if canary is not None and obs.selects.get("canary", stable) != canary:
        p.actions.append(act.SelectRevision("canary", canary))
    previous = status.previous_revision
    if previous is not None and (status.scale_down_at is None or p.now >= status.scale_down_at):
        status.previous_revision = previous = None
        status.scale_down_at = None
    elif status.scale_down_at is not None:
        p.again((status.scale_down_at - p.now).total_seconds())
    wanted = {r for r in (stable, canary, obs.revision, previous) if r is not None}
    tracks = {t.name for t in (obs.stable, obs.canary) if t is not None and t.revision in wanted}
    named = {f"{obs.name}-{r}" for r in wanted}
    for name, revision in obs.workloads:
        if name in tracks or name in named or revision is None:
            continue
        if revision in wanted and not any(n in named for n, r in obs.workloads if r == revision):
            continue  # the only Deployment of a wanted revision (made before promotion by role)
        p.actions.append(act.DeleteWorkload(name, revision))
