"""Which steps wait for a person, how steps are named in messages, and the wait at a gate for ``approve=TOKEN``."""

from __future__ import annotations

from collections.abc import Sequence

from modelrollout import api
from modelrollout.api import Phase
from modelrollout.core import chaos
from modelrollout.core.approval import APPROVE, approve_command, build_token, check_token
from modelrollout.core.plan.state import Plan
from modelrollout.core.steps import blue_green, first_traffic_step, risky_above, step_of, steps_of
from modelrollout.durations import format_duration


def preflight_reasons(status: api.PreflightStatus | None) -> list[str]:
    """The preflight findings that gate the first traffic step."""
    if status is None:
        return []
    return [*status.dependency_jumps,
            *(f"config key {k} removed without a migration rule" for k in status.removed_config_keys)]


def gate_reason(spec: api.ModelRolloutSpec, step: int, preflight: Sequence[str] = ()) -> str | None:
    """Why the step at ``step`` waits for a person before it runs, or None."""
    steps = steps_of(spec)
    if step >= len(steps):
        return None
    if preflight and step == first_traffic_step(spec):
        return "preflight: " + "; ".join(preflight)
    s = steps[step]
    if isinstance(s, api.ApprovalStep):
        return s.approval.reason
    if isinstance(s, api.PauseStep) and s.pause.duration is None:
        return "indefinite pause"
    risky = risky_above(spec)
    if isinstance(s, api.SetWeightStep) and risky is not None and s.set_weight > risky:
        return f"setWeight {s.set_weight} is above riskyAbove {risky}"
    if isinstance(s, api.ChaosStep):
        return chaos.gate_reason(spec, step, s.chaos)
    return None


def gate_steps(spec: api.ModelRolloutSpec, preflight: Sequence[str] = ()) -> frozenset[int]:
    """The steps at which the rollout will wait for an approval (a metric that pauses it adds a gate at the
    step it is at, which no token can foresee)."""
    return frozenset(i for i in range(len(steps_of(spec))) if gate_reason(spec, i, preflight) is not None)


def describe_step(spec: api.ModelRolloutSpec, step: int) -> str:
    """``setWeight 25``, ``pause 2m``, ``approval``, ``analysis x2`` for messages."""
    steps = steps_of(spec)
    if step >= len(steps):
        return "promotion"
    s = steps[step]
    if isinstance(s, api.SetWeightStep):
        if blue_green(spec):
            return "preview" if s.set_weight == 0 else "switch"
        return f"setWeight {s.set_weight}"
    if isinstance(s, api.SetHeaderRouteStep):
        h = s.set_header_route
        return "setHeaderRoute (remove)" if h.name is None else f"setHeaderRoute {h.name}: {h.value}"
    if isinstance(s, api.SetMirrorStep):
        return "setMirror (remove)" if s.set_mirror.percent == 0 else f"setMirror {s.set_mirror.percent}%"
    if isinstance(s, api.PauseStep):
        if s.pause.duration is None:
            return "pause (until approved)"
        if blue_green(spec):
            return f"scaleDownDelay {format_duration(s.pause.duration)}"
        return f"pause {format_duration(s.pause.duration)}"
    if isinstance(s, api.ApprovalStep):
        return "approval"
    if isinstance(s, api.ChaosStep):
        return chaos.describe(s.chaos)
    return f"analysis x{s.analysis.passes}"


def step_label(spec: api.ModelRolloutSpec, step: int) -> str:
    """``step 2/5 (pause 1m)``: how every message names a step (1-based, as ``status.stepProgress`` shows it)."""
    return f"step {step_of(step, len(steps_of(spec)))} ({describe_step(spec, step)})"


def gate(p: Plan, step: int, reason: str, action: str) -> bool:
    """Wait at a gate for ``approve=TOKEN``; True when it is opened now."""
    token = build_token(p.obs.revision, step)
    given = p.obs.annotations.get(APPROVE)
    if given:
        check = check_token(given, revision=p.obs.revision, step=step, total=len(steps_of(p.spec)),
                            gates=gate_steps(p.spec, preflight_reasons(p.status.preflight)))
        if check.opens:
            p.consume(APPROVE)
            p.history("Approved", reason, step=step, token=token, by=p.by(APPROVE))
            p.event("Approved", f"gate at {step_label(p.spec, step)} ({reason}) approved with {token}"
                    + (f" by {p.by(APPROVE)}" if p.by(APPROVE) else ""))
            p.status.approval = None
            return True
        if not check.pending:
            p.consume(APPROVE)
            p.event("ApprovalRejected", f"{check.reason}; the current token is {token}", warning=True)
    current = p.status.approval
    since = current.since if current is not None and current.token == token else p.now
    p.status.approval = api.ApprovalStatus(
        step=step, token=token, reason=reason, action=action,
        command=approve_command(p.obs.name, p.obs.namespace, token), since=since)
    phase = Phase.PAUSED if action == "resume" else Phase.AWAITING_APPROVAL
    preview = f"; the preview is on Service {p.obs.name}-canary" if blue_green(p.spec) else ""
    p.phase(phase, f"waiting for approval before step {step_of(step, len(steps_of(p.spec)))} "
            f"({describe_step(p.spec, step)}; {reason}{preview}): run "
            f"`{approve_command(p.obs.name, p.obs.namespace, token)}`")
    return False
