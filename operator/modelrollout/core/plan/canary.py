"""The steps of a rollout, canary and blue-green alike: the step at ``status.currentStep`` is carried out, and a
step that completes leads into the next in the same decision. Blue-green is the same walk with a full-size
preview and one switch (its wording and sizes come from :mod:`.shape`).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from modelrollout import api
from modelrollout.api import Phase
from modelrollout.core import actions as act
from modelrollout.core import analysis as an
from modelrollout.core import chaos
from modelrollout.core.approval import APPROVE, build_token, check_token
from modelrollout.core.plan.evaluation import missing_evidence, schedule_analysis
from modelrollout.core.plan.gates import describe_step, gate, gate_reason, gate_steps, preflight_reasons, step_label
from modelrollout.core.plan.prewarm import prewarmed
from modelrollout.core.plan.promotion import promote
from modelrollout.core.plan.rollback import rollback
from modelrollout.core.plan.shape import dynamic_stable, sizes_at, switch_back_window
from modelrollout.core.plan.state import POLL_SECONDS, Plan
from modelrollout.core.steps import RouteState, blue_green, features_at, step_of, steps_of
from modelrollout.durations import format_duration


def run_step(p: Plan) -> None:
    spec, obs = p.spec, p.obs
    steps = steps_of(spec)
    i = p.status.current_step or 0
    held = p.status.approval
    if held is not None and held.action in ("resume", "rollback"):
        if not gate(p, held.step, held.reason, held.action):
            return
        if held.action == "rollback":
            rollback(p, f"rollback approved: {held.reason}")
            return
        p.status.analysis = [m.model_copy(update={"failures": 0}) for m in p.status.analysis]
    schedule_analysis(p)
    if spec.rollback.prewarm.enabled and p.status.traffic_started_at is None and not prewarmed(p):
        return
    analysis_ok = spec.analysis is None or an.last_all_pass(spec.analysis, p.status.analysis)
    if p.status.inconclusive_count >= (spec.analysis.inconclusive.limit if spec.analysis else 1 << 30):
        return
    if i >= len(steps):
        missing = missing_evidence(p)
        if missing is not None:
            p.phase(Phase.PROGRESSING, f"all {len(steps)} steps done; {missing}")
            schedule_analysis(p)
            return
        p.phase(Phase.PROMOTING, f"all {len(steps)} steps done; promoting revision {obs.revision}")
        p.event("Promoting", f"all steps done for revision {obs.revision}")
        promote(p)
        return
    reason = gate_reason(spec, i, preflight_reasons(p.status.preflight))
    if reason is not None and p.status.approved_step != i:
        if not gate(p, i, reason, "continue"):
            return
        p.status.approved_step = i
    elif obs.annotations.get(APPROVE) and APPROVE not in p.consumed and APPROVE not in p.held:
        check = check_token(obs.annotations[APPROVE], revision=obs.revision, step=i, total=len(steps),
                            gates=gate_steps(spec, preflight_reasons(p.status.preflight)))
        if check.opens and p.status.approved_step == i:
            p.consume(APPROVE)  # this gate was approved already; the annotation was not removed yet
        elif not check.pending:
            p.consume(APPROVE)
            why = check.reason or (f"approval {obs.annotations[APPROVE]} is for step {step_of(i, len(steps))}, "
                                   "which is not a gate")
            p.event("ApprovalRejected", f"{why}; no gate is waiting, the current token is "
                    f"{build_token(obs.revision, i)}", warning=True)
    step = steps[i]
    label = step_label(spec, i)
    if isinstance(step, api.SetWeightStep):
        set_weight(p, i, step.set_weight, analysis_ok, label, "SetWeight")
    elif isinstance(step, api.SetHeaderRouteStep):
        set_weight(p, i, p.status.current_weight, analysis_ok, label, "SetHeaderRoute")
    elif isinstance(step, api.SetMirrorStep):
        set_weight(p, i, p.status.current_weight, analysis_ok, label, "SetMirror")
    elif isinstance(step, api.PauseStep):
        if step.pause.duration is None:
            advance(p, i + 1)
            run_step(p)
            return
        started = p.status.step_started_at or p.now
        left = (started + step.pause.duration - p.now).total_seconds()
        if left <= 0:
            advance(p, i + 1)
            run_step(p)  # the next step starts in the same reconcile: no second round trip for a step that is due
            return
        remaining = format_duration(timedelta(seconds=round(left)))
        if blue_green(spec):
            p.phase(Phase.PAUSED, f"{label}: switched, 100% on revision {obs.revision}; stable "
                    f"{p.old.stable_revision} stays at full size for an instant switch-back, {remaining} left")
        else:
            p.phase(Phase.PAUSED, f"{label}: paused, {remaining} left at weight {p.status.current_weight}")
        p.again(left)
    elif isinstance(step, api.ApprovalStep):
        advance(p, i + 1)
        run_step(p)  # the approved gate leads straight into the next step, in the same reconcile
    elif isinstance(step, api.ChaosStep):
        run_drill(p, i, step.chaos, label)
    else:
        need = step.analysis.passes
        have = p.status.analysis_passes
        if have >= need:
            p.history("AnalysisPassed", f"{have} passing evaluations", step=i)
            advance(p, i + 1)
            run_step(p)  # the step the passes unlock (a weight, say) is carried out by this same reconcile
            return
        p.phase(Phase.PROGRESSING, f"{label}: {have}/{need} passing evaluations")


def set_weight(p: Plan, i: int, weight: int, analysis_ok: bool, label: str, reason: str) -> None:
    """Carry out a route step: ``weight`` with the features in force after step ``i``; ``reason`` names its
    Event."""
    obs, spec = p.obs, p.spec
    current = p.status.current_weight
    if weight > current > 0 and not analysis_ok:
        p.phase(Phase.PROGRESSING, f"{label}: holding weight {current} until every metric passes")
        return
    stable = obs.stable
    if weight > current and stable is not None:
        floor = spec.rollback.stable_min_ready if spec.rollback.stable_min_ready is not None else spec.replicas
        must = min(floor, stable.replicas)
        if dynamic_stable(spec):
            must = stable.replicas
        if stable.ready < must:
            p.phase(Phase.PROGRESSING, f"{label}: holding weight {current}: stable has {stable.ready}/{must} ready "
                    "pods and could not take all traffic back")
            p.again(POLL_SECONDS)
            return
    features = features_at(spec, i)
    preview = blue_green(spec)
    size = sizes_at(spec, weight, features.any)
    need = size.canary
    canary = obs.canary
    have_replicas = canary.replicas if canary is not None else 0
    if have_replicas > need and (weight > 0 or preview):  # spec.replicas went down while this step scaled it up
        p.actions.append(act.ScaleCanary(need))
    if have_replicas < need:
        _grow_canary(p, need)
        p.status.progress_since = p.now
        p.phase(Phase.PROGRESSING, f"{label}: scaling canary to {need} replicas before moving traffic")
        p.again(POLL_SECONDS)
        return
    ready = canary.ready if canary is not None else 0
    if ready < need or (canary is not None and not canary.updated):
        p.phase(Phase.PROGRESSING, f"{label}: waiting for canary pods, {ready}/{need} ready"
                + (f" ({canary.failure})" if canary is not None and canary.failure else ""))
        p.await_pods()
        return
    # A router sends the canary's share to the pods its Service lists: a weight, pin or mirror written before the
    # EndpointSlices list the ready pods is answered 503 by the router until they do.
    serving = canary.serving if canary is not None else None
    if (weight > 0 or features.any) and serving is not None and serving < need:
        p.phase(Phase.PROGRESSING, f"{label}: waiting for Service {obs.name}-canary to list the ready canary pods "
                f"({serving}/{need}) before moving traffic")
        p.await_pods()
        return
    if (obs.route or RouteState(0)) != RouteState(weight, features):
        p.actions.append(act.SetWeight(weight, features))
    if dynamic_stable(spec) and stable is not None and stable.replicas != size.stable:
        p.actions.append(act.ScaleStable(size.stable))
    if (weight > 0 or preview or features.any) and p.status.traffic_started_at is None:
        p.status.traffic_started_at = p.now
    p.status.current_weight = weight
    pinned = f"; requests with {features.header[0]}: {features.header[1]} pinned to it" if features.header else ""
    mirrored = f"; {features.mirror_percent}% mirrored to it" if features.mirror_percent else ""
    if preview and weight == 0:
        p.phase(Phase.PROGRESSING, f"{label}: revision {obs.revision} at full size ({need} ready) behind the preview "
                f"Service {obs.name}-canary{pinned}")
        p.event("Preview", f"revision {obs.revision} ready for preview on Service {obs.name}-canary{pinned}")
    elif preview:
        p.phase(Phase.PROGRESSING, f"{label}: switched, 100% of traffic on revision {obs.revision}")
        p.event("Switched", f"100% of traffic switched to revision {obs.revision} in one write; stable "
                f"{p.old.stable_revision} stays at full size for {switch_back_window(spec)}")
    else:
        p.phase(Phase.PROGRESSING, f"{label}: weight {weight}{pinned}{mirrored}")
        p.event(reason, f"{label}: {weight}% of traffic on revision {obs.revision}{pinned}{mirrored}")
    advance(p, i + 1)


def _grow_canary(p: Plan, need: int) -> None:
    """Ask for ``need`` canary replicas: a canary Deployment this decision creates is created at that size (one
    write, not a create and a scale), any other is scaled."""
    for k, action in enumerate(p.actions):
        if isinstance(action, act.EnsureCanary) and action.revision == p.obs.revision:
            p.actions[k] = replace(action, replicas=max(action.replicas, need))
            return
    p.actions.append(act.ScaleCanary(need))


def advance(p: Plan, to: int) -> None:
    # the message names the step that now runs (as status.stepProgress does), and what the one done did
    total, message = len(steps_of(p.spec)), p.status.message or ""
    done = f"{step_label(p.spec, to - 1)}: "
    detail = f": {message[len(done):]}" if p.status.was_assigned("message") and message.startswith(done) else ""
    after = (f"next: {step_label(p.spec, to)}" if to < total
             else f"all {total} steps done, promotion next")
    phase = p.status.phase
    p.phase(phase if phase is not None and phase not in (Phase.PAUSED, Phase.AWAITING_APPROVAL)
            else Phase.PROGRESSING,
            f"{describe_step(p.spec, to - 1)} done{detail}; {after}")
    p.status.current_step = to
    p.status.step_started_at = p.now
    p.status.approved_step = None
    p.status.approval = None
    p.status.analysis_passes = 0
    p.status.progress_since = None
    p.again(0)


def run_drill(p: Plan, i: int, drill: api.ChaosSpec, label: str) -> None:
    """A chaos step: create the experiment (once), wait its duration while analysis runs, then go on (the
    experiment is deleted by :func:`sweep_drills` as soon as the drill no longer runs)."""
    obs = p.obs
    d = p.status.drill
    if not (chaos.running(d) and d.step == i and d.revision == obs.revision):
        if obs.canary is None or obs.canary.ready < 1:
            p.phase(Phase.PROGRESSING, f"{label}: waiting for a ready canary pod to run the drill against")
            p.again(POLL_SECONDS)
            return
        name = chaos.experiment_name(obs.name, obs.revision, i, p.now)
        p.actions.append(act.EnsureDrill(name, i, drill, p.obs.revision))
        d = api.DrillStatus(name=name, kind=drill.kind, step=i, revision=obs.revision, weight=p.status.current_weight,
                            started_at=p.now, duration=format_duration(drill.duration),
                            last_analysis_at=p.status.last_analysis_at)
        p.status.drill = d
        p.history("DrillStarted", f"{drill.kind} {name} for {d.duration}", step=i)
        p.event("DrillStarted", f"{label}: {drill.kind} {name} started against the canary's pods (weight "
                f"{d.weight}) for {d.duration}")
    left = (d.started_at + drill.duration - p.now).total_seconds()
    if left <= 0:
        d = chaos.with_evaluation(d, p.status.analysis, p.status.last_analysis_at)
        p.status.drill = d.model_copy(update={"outcome": "Completed", "finished_at": p.now})
        p.history("DrillCompleted", f"{d.kind} {d.name} ran {d.duration}: {chaos.summary(d)}", step=i)
        p.event("DrillCompleted", f"{label}: {d.kind} {d.name} ran {d.duration} and was deleted; {chaos.summary(d)}")
        advance(p, i + 1)
        run_step(p)
        return
    remaining = format_duration(timedelta(seconds=round(left)))
    p.phase(Phase.PROGRESSING, f"{label}: {d.kind} {d.name} running against the canary's pods, {remaining} left "
            f"at weight {p.status.current_weight}")
    p.again(left)
