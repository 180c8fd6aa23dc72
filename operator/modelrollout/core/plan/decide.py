"""``decide``: the whole rollout state machine as one pure function.

``decide(spec, status, observed, now)`` reads the spec, the status the operator wrote last time, and
what it observed now, and returns a :class:`~modelrollout.core.model.Decision`: the actions to carry
out, the one status to write, the events, and when to look again. It never repeats a write that the
world already shows (a router already at the weight is not written again), so a reconcile cut short
at any point is simply decided again.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from modelrollout import api
from modelrollout.api import Phase
from modelrollout.core import actions as act
from modelrollout.core import consumed as cons
from modelrollout.core.approval import ABORT, APPROVE, PROMOTE, RETRY, ROLLBACK_TO
from modelrollout.core.model import Decision, Observed
from modelrollout.core.phases import ACTIVE
from modelrollout.core.plan.canary import run_step
from modelrollout.core.plan.drills import sweep_drills
from modelrollout.core.plan.evaluation import canary_deadline, evaluate
from modelrollout.core.plan.promotion import promote, promote_annotation
from modelrollout.core.plan.roles import tend
from modelrollout.core.plan.rollback import finish_rollback, rollback, rollback_to
from modelrollout.core.plan.shape import sizes_at
from modelrollout.core.plan.state import PLACEHOLDER, POLL_SECONDS, Plan
from modelrollout.core.preflight import preflight, snapshot
from modelrollout.core.prewarm import remember
from modelrollout.core.scale import follow
from modelrollout.core.steps import RouteState, steps_of


def decide(spec: api.ModelRolloutSpec | None, status: api.ModelRolloutStatus, obs: Observed, now: datetime) -> Decision:
    """The next move of one rollout. Pure: the same inputs give the same Decision."""
    if obs.invalid is not None or spec is None:
        p = Plan(PLACEHOLDER, status, obs, now)
        p.phase(Phase.INVALID, obs.invalid or "spec: invalid")
        sweep_drills(p)  # a drill does not outlive a spec turned invalid
        return p.done()
    seen = obs.annotations
    obs = replace(obs, annotations=cons.unconsumed(seen, status.consumed_annotations, obs.revision))
    p = Plan(spec, status, obs, now, seen=seen)
    if status.stable_revision is None:
        _first_release(p)
    elif obs.revision == status.stable_revision:
        _steady(p)
    else:
        _rollout(p)
    tend(p)
    sweep_drills(p)
    return p.done()


def _first_release(p: Plan) -> None:
    """No stable yet: the template becomes stable directly, no steps."""
    obs, want = p.obs, p.spec.replicas
    stable = obs.stable
    if stable is None or stable.revision != obs.revision:
        p.actions.append(act.EnsureStable(obs.revision, want))
        p.phase(Phase.PROGRESSING, f"creating stable revision {obs.revision}")
        p.status.progress_since = p.now
        p.again(POLL_SECONDS)
        return
    if stable.replicas != want:
        p.actions.append(act.ScaleStable(want))
    if stable.ready < want or not stable.updated:
        p.phase(Phase.PROGRESSING, f"waiting for stable revision {obs.revision}: {stable.ready}/{want} ready"
                + (f" ({stable.failure})" if stable.failure else ""))
        since = p.status.progress_since or p.now
        p.status.progress_since = since
        if (p.now - since).total_seconds() > p.spec.progress_deadline_seconds:
            p.phase(Phase.FAILED, f"stable revision {obs.revision} not ready after "
                    f"{p.spec.progress_deadline_seconds}s: {stable.failure or 'pods not ready'}")
            return
        p.await_pods()
        return
    p.actions.append(act.RecordRevision(obs.revision, p.spec.rollback.prewarm.keep_revisions))
    p.status.stable_revision = obs.revision
    p.status.progress_since = None
    p.status.current_weight = 0
    p.status.current_step = None
    p.status.stable_model = snapshot(p.spec.model)
    p.status.revision_images = remember(p.old.revision_images, obs.revision, obs.images,
                                        p.spec.rollback.prewarm.keep_revisions)
    p.phase(Phase.SUCCEEDED, f"revision {obs.revision} is stable and serves 100% ({want} replicas)")
    p.history("Succeeded", "first release")
    _ignore_idle_annotations(p)


def _ignore_idle_annotations(p: Plan) -> None:
    """Control annotations that need a rollout in progress are consumed with a warning when there is none."""
    for key in (ABORT, RETRY, PROMOTE, APPROVE):
        if key in p.obs.annotations:
            p.consume(key)
            p.event("AnnotationIgnored", f"{key} ignored: no rollout in progress", warning=True)


def _steady(p: Plan) -> None:
    """The spec asks for the stable revision: nothing to roll out; undo any canary left over."""
    obs, want = p.obs, p.spec.replicas
    _ignore_idle_annotations(p)
    if ROLLBACK_TO in obs.annotations:
        rollback_to(p, obs.annotations[ROLLBACK_TO].strip())
    canary_rev = p.old.canary_revision
    p.router_to_stable()  # a canary left over is deleted once no role needs it (roles.tend)
    if obs.stable is None or obs.stable.revision != obs.revision:
        p.actions.append(act.EnsureStable(obs.revision, want))
    elif obs.stable.replicas != want:
        p.actions.append(act.ScaleStable(want))
    if canary_rev is not None:
        if p.old.phase in ACTIVE or p.old.phase is Phase.PROMOTING:
            p.history("Superseded", "spec returned to the stable revision", revision=canary_rev)
        p.status.canary_revision = None
        p.status.current_step = None
        _clear_run(p)
    stable = obs.stable
    if stable is None or stable.revision != obs.revision or stable.replicas != want or stable.ready < want \
            or not stable.updated:  # Succeeded (Ready) only while the world shows it: stable whole and ready
        ready = stable.ready if stable is not None and stable.revision == obs.revision else 0
        p.phase(Phase.PROGRESSING, f"restoring stable revision {obs.revision}: {ready}/{want} ready")
        p.again(POLL_SECONDS)
        return
    p.phase(Phase.SUCCEEDED, f"revision {obs.revision} is stable and serves 100% ({want} replicas)")


def _rollout(p: Plan) -> None:
    obs, old = p.obs, p.old
    rev = obs.revision
    # a rolled-back revision is not retried on its own
    if old.rolled_back_revision == rev and old.canary_revision == rev:
        if obs.annotations.get(RETRY, "").lower() == "true" and old.phase in (Phase.ROLLED_BACK, Phase.FAILED):
            p.consume(RETRY)
            if ABORT not in p.seen:  # not held in git: a later abort (kubectl) of this attempt is acted on
                p.status.consumed_annotations = cons.forget(old.consumed_annotations, ABORT)
            p.history("Retried", "retry requested", by=p.by(RETRY))
            p.event("Retry", f"retrying revision {rev} from the first step")
            p.status.rolled_back_revision = None
            p.status.canary_revision = None
            _start(p)
            return
        for key in (ABORT, PROMOTE, APPROVE, RETRY):
            if key in obs.annotations:
                p.consume(key)
                p.event("AnnotationIgnored", f"{key} ignored: revision {rev} is {old.phase.value if old.phase else ''}"
                        f"; annotate {RETRY}=true to try it again", warning=True)
        if old.phase is Phase.ROLLING_BACK:
            finish_rollback(p)
        else:
            p.router_to_stable()
            if obs.canary is not None and obs.canary.replicas > 0:
                p.actions.append(act.ScaleCanary(0))
            if obs.stable is not None and obs.stable.replicas != p.spec.replicas:  # scaled while rolled back
                p.actions.append(act.ScaleStable(p.spec.replicas))
        return
    if old.canary_revision != rev:
        _start(p)
        return
    abort = obs.annotations.get(ABORT)
    if abort is not None and abort.strip().lower() in ("true", rev):
        p.consume(ABORT)
        if old.phase is not Phase.PROMOTING:
            rollback(p, "aborted by user", outcome="Aborted", by=p.by(ABORT))
            return
        p.event("AnnotationIgnored", f"{ABORT} ignored: promotion already under way", warning=True)
    elif abort is not None:
        p.consume(ABORT)
        p.event("AnnotationIgnored", f"{ABORT}={abort!r} ignored: use {ABORT}={rev} (or {ABORT}=true)", warning=True)
    if RETRY in obs.annotations:
        p.consume(RETRY)
        p.event("AnnotationIgnored", f"{RETRY} ignored: revision {rev} was not rolled back", warning=True)
    if ROLLBACK_TO in obs.annotations:
        p.consume(ROLLBACK_TO)
        p.event("AnnotationIgnored", f"{ROLLBACK_TO} ignored: a rollout is in progress; use {ABORT}=true",
                warning=True)
    if old.phase is Phase.PROMOTING:
        promote(p)
        return
    _follow_scale(p)
    if canary_deadline(p):
        return
    if obs.samples is not None and evaluate(p):
        return
    if promote_annotation(p):
        promote(p)
        return
    run_step(p)


def _start(p: Plan) -> None:
    """A new revision (or a changed template mid-rollout): start over from step 0."""
    obs, old = p.obs, p.old
    if old.canary_revision is not None and old.canary_revision != obs.revision and (
            old.phase in ACTIVE or old.phase is Phase.PROMOTING):
        p.history("Superseded", f"replaced by revision {obs.revision} before promotion",
                  revision=old.canary_revision)
        p.event("Superseded", f"template changed mid-rollout: revision {old.canary_revision} abandoned, "
                f"starting over with {obs.revision}")
    _bind_to_revision(p)
    p.router_to_stable()
    fast = old.fast_path_revision == obs.revision or switch_back(p)
    if obs.canary is None or obs.canary.revision != obs.revision:
        p.actions.append(act.EnsureCanary(obs.revision, p.spec.replicas if fast else 0))
    elif obs.canary.replicas > 0 and not fast:
        p.actions.append(act.ScaleCanary(0))
    check = preflight(old.stable_model, p.spec.model)
    p.status.preflight = api.PreflightStatus(
        dependency_changes=check.dependency_changes, dependency_jumps=check.dependency_jumps,
        removed_config_keys=check.removed_config_keys, renamed_config_keys=check.renamed_config_keys,
        added_config_keys=check.added_config_keys)
    if check.reasons:
        p.event("PreflightGate", "first traffic step waits for approval: " + "; ".join(check.reasons), warning=True)
    p.status.canary_revision = obs.revision
    p.status.current_step = 0
    p.status.step_started_at = p.now
    p.status.traffic_started_at = None
    p.status.last_analysis_at = None
    p.status.rollback_at = None
    p.status.prewarm = None
    _clear_run(p)
    if fast:
        how = "rollback-to" if old.fast_path_revision == obs.revision else "switch back to the previous stable"
        p.phase(Phase.PROMOTING, f"{how}: revision {obs.revision} becomes stable without steps")
        p.history("Started", f"fast path ({how}) over stable {old.stable_revision}")
        promote(p)  # its pods may be up and ready already: then this decision switches
        return
    p.phase(Phase.PROGRESSING, f"rolling out revision {obs.revision} over stable {old.stable_revision}")
    p.history("Started", f"stable {old.stable_revision}")
    run_step(p)  # the first step starts in the same reconcile (its canary pods are asked for with the Deployment)


def switch_back(p: Plan) -> bool:
    """The spec asks for the previous stable revision again while its pods are still up (the switch-back window
    after a promotion): it becomes stable again without steps, by one write of NAME-stable's selector."""
    old = p.old
    return (old.previous_revision == p.obs.revision and old.scale_down_at is not None and p.now < old.scale_down_at
            and p.obs.canary is not None and p.obs.canary.revision == p.obs.revision)


def _clear_run(p: Plan) -> None:
    """No weight, gate, pods awaited or analysis evidence carried over: a run starts, or the spec left it."""
    p.status.current_weight = 0
    p.status.approval = None
    p.status.approved_step = None
    p.status.progress_since = None
    p.status.analysis = []
    p.status.analysis_passes = 0
    p.status.consecutive_passes = 0
    p.status.inconclusive_count = 0


def _follow_scale(p: Plan) -> None:
    """spec.replicas changed mid-rollout (kubectl scale, an HPA, KEDA): both tracks are resized at the weight the
    router carries now; no step restarts and no traffic moves."""
    steps, i = steps_of(p.spec), p.status.current_step or 0
    moving = i < len(steps) and isinstance(steps[i], api.SetWeightStep | api.SetHeaderRouteStep | api.SetMirrorStep)
    route = p.obs.route or RouteState(0)
    p.actions.extend(follow(p.obs, sizes_at(p.spec, route.weight, route.features.any), grow_only=moving))


def _bind_to_revision(p: Plan) -> None:
    """A revision starts: control annotations consumed for an earlier one and still there (kept in git) are
    remembered for this one too, silently; an ``abort`` set before it started does not abort it (one Event)."""
    for key in cons.held_over(p.obs.annotations, p.old.consumed_annotations):
        if key not in p.held:
            p.held.append(key)
    abort = p.obs.annotations.get(ABORT)
    if abort is not None and ABORT not in p.held and abort.strip().lower() != p.obs.revision:
        p.consume(ABORT)
        p.event("AnnotationIgnored", f"{ABORT}={abort} ignored: it was set before revision {p.obs.revision} "
                f"started; annotate {ABORT}={p.obs.revision} to abort it", warning=True)
