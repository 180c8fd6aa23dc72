"""``decide``: the whole rollout state machine as one pure function.

``decide(spec, status, observed, now)`` reads the spec, the status the operator wrote last time, and
what it observed now, and returns a :class:`~modelrollout.core.model.Decision`: the actions to carry
out, the one status to write, the events, and when to look again. It never repeats a write that the
world already shows (a router already at the weight is not written again), so a reconcile cut short
at any point is simply decided again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import ConfigDict, PrivateAttr

from modelrollout import api
from modelrollout.api import Phase
from modelrollout.core import actions as act
from modelrollout.core import analysis as an
from modelrollout.core import chaos, routing
from modelrollout.core import consumed as cons
from modelrollout.core.approval import (
    ABORT,
    APPROVE,
    PROMOTE,
    RETRY,
    ROLLBACK_TO,
    approve_command,
    build_token,
    check_token,
)
from modelrollout.core.model import Decision, Event, Observed
from modelrollout.core.phases import ACTIVE
from modelrollout.core.preflight import preflight, snapshot
from modelrollout.core.prewarm import kept, remember, wanted
from modelrollout.core.scale import Sizes, follow, pods, selector, sizes
from modelrollout.core.steps import RouteState, blue_green, features_at, risky_above, step_of, steps_of
from modelrollout.durations import format_duration

SKIP_ANALYSIS = "+skip-analysis"
"""Suffix of a promote token that promotes without the analysis evidence (``promote=TOKEN+skip-analysis``)."""
HISTORY_LIMIT = 20
STALLED = "stalled: "
"""How the message of a status written for a refused write begins (``core.refusal``)."""
POLL_SECONDS = 5.0
"""How often a rollout that waits for pods looks again even without a watch event."""


def replica_ratio(spec: api.ModelRolloutSpec) -> bool:
    """Traffic is split by replica ratio: the spec's router cannot weight a route (the Service router)."""
    return not routing.selected(spec.traffic).weight


def dynamic_stable(spec: api.ModelRolloutSpec) -> bool:
    """Stable is scaled down as the canary grows (only meaningful with a router that splits by weight)."""
    return spec.rollback.dynamic_stable_scale and not replica_ratio(spec)


def first_traffic_step(spec: api.ModelRolloutSpec) -> int | None:
    """Index of the first setWeight above zero."""
    for i, s in enumerate(steps_of(spec)):
        if isinstance(s, api.SetWeightStep) and (s.set_weight > 0 or blue_green(spec)):
            return i
    return None


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


class Draft(api.ModelRolloutStatus):
    """The status a decision writes, edited field by field: ``p.status.current_weight = 25``.

    A copy of the status read, mutable and validated on assignment; a misspelled field is a mypy error (and a
    ValidationError at run time). It remembers which fields were assigned: the status written is the one read
    with those fields replaced (:meth:`assigned`), so a field never assigned stays as it was."""

    model_config = ConfigDict(frozen=False, validate_assignment=True)
    _assigned: set[str] = PrivateAttr(default_factory=set)

    @classmethod
    def of(cls, status: api.ModelRolloutStatus) -> Draft:
        return cls.model_construct(_fields_set=status.model_fields_set, **dict(status))

    def assigned(self) -> dict[str, Any]:
        """The fields assigned since :meth:`of`, with their values now."""
        return {name: getattr(self, name) for name in type(self).model_fields if name in self._assigned}

    if not TYPE_CHECKING:  # hidden from mypy, which then checks every assignment against the fields

        def __setattr__(self, name: str, value: Any) -> None:
            super().__setattr__(name, value)
            if name in type(self).model_fields:
                self._assigned.add(name)


@dataclass
class _Plan:
    spec: api.ModelRolloutSpec
    old: api.ModelRolloutStatus
    obs: Observed
    now: datetime
    status: Draft = field(init=False)
    """The status this decision writes: ``old`` with the fields assigned so far."""
    actions: list[act.Action] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    requeue: list[float] = field(default_factory=list)
    consumed: list[str] = field(default_factory=list)
    held: list[str] = field(default_factory=list)
    """Keys remembered for this revision without a removal or an Event (values held over from git)."""
    seen: Mapping[str, str] = field(default_factory=dict)
    """The control annotations as read, including those already consumed (``obs.annotations`` lacks these)."""

    def __post_init__(self) -> None:
        self.status = Draft.of(self.old)

    # -- status helpers -------------------------------------------------------------------------
    def phase(self, phase: Phase, message: str) -> None:
        self.status.phase = phase
        self.status.message = message

    def event(self, reason: str, message: str, *, warning: bool = False) -> None:
        self.events.append(Event("Warning" if warning else "Normal", reason, message))

    def history(self, outcome: str, message: str = "", **extra: Any) -> None:
        entry = api.HistoryEntry(revision=extra.pop("revision", self.obs.revision), outcome=outcome,
                                 at=self.now, message=message, **extra)
        items = [*self.status.history, entry]
        self.status.history = items[-HISTORY_LIMIT:]

    def again(self, seconds: float) -> None:
        self.requeue.append(max(0.0, seconds))

    def consume(self, key: str) -> None:
        if key not in self.consumed:
            self.consumed.append(key)

    def by(self, key: str) -> str | None:
        return self.obs.annotation_managers.get(key)

    def done(self) -> Decision:
        if self.consumed:
            self.actions.insert(0, act.RemoveAnnotations(tuple(self.consumed)))
        if self.consumed or self.held:
            self.status.consumed_annotations = cons.remember(self.status.consumed_annotations,
                                                             [*self.consumed, *self.held], self.seen,
                                                             self.obs.revision, self.now)
        self.status.observed_generation = self.obs.generation
        if self.spec is not _PLACEHOLDER:  # an Invalid spec keeps the last progress shown
            current = self.status.current_step
            self.status.step_progress = None if current is None else step_of(current, len(steps_of(self.spec)))
            self.status.replicas = pods(self.obs)
            self.status.selector = selector(self.spec.selector.match_labels)
        if "message" not in self.status.assigned() and self.old.message.startswith(STALLED):  # refused, now through
            self.status.message = "no longer " + self.old.message
        status = self.old.model_copy(update=self.status.assigned())
        status = status.model_copy(update={"conditions": conditions(status, self.old.conditions, self.now,
                                                                    self.obs.generation)})
        if status.phase != self.old.phase and status.phase is not None:
            self.event(f"Phase{status.phase.value}", status.message or status.phase.value,
                       warning=status.phase in (Phase.ROLLING_BACK, Phase.FAILED, Phase.INVALID))
        return Decision(status=status, actions=tuple(self.actions), events=tuple(self.events),
                        requeue_after=min(self.requeue) if self.requeue else None)

    # -- shared moves ---------------------------------------------------------------------------
    def router_to_stable(self) -> None:
        if self.obs.route is not None:
            self.actions.append(act.ResetRouter())

    def reset_scales_canary(self) -> bool:
        """The router reset in this decision already scales the canary to zero (the replica-ratio router)."""
        return replica_ratio(self.spec) and any(isinstance(a, act.ResetRouter) for a in self.actions)

    def rollback(self, reason: str, *, outcome: str = "RolledBack", by: str | None = None) -> None:
        self.status.rolled_back_revision = self.obs.revision
        self.status.rollback_at = self.now
        self.status.current_weight = 0
        self.status.approval = None
        self.status.approved_step = None
        self.status.progress_since = None
        self.phase(Phase.ROLLING_BACK, f"rolling back revision {self.obs.revision}: {reason}")
        if RETRY not in self.seen:  # not held in git: a later retry=true (kubectl) retries again
            self.status.consumed_annotations = cons.forget(self.status.consumed_annotations, RETRY)
        self.history(outcome, reason, by=by)
        self.event("RollingBack", f"all traffic back to stable {self.old.stable_revision}: {reason}",
                   warning=True)
        self.finish_rollback()

    def finish_rollback(self) -> None:
        stable, want = self.obs.stable, self.spec.replicas
        shrunk = dynamic_stable(self.spec) or replica_ratio(self.spec)
        if shrunk and stable is not None and (stable.replicas < want or stable.ready < want):
            # stable was scaled down as the canary grew: it must be ready at full size before traffic moves back
            if stable.replicas < want:
                self.actions.append(act.ScaleStable(want))
            if "waiting for stable" not in (self.status.message or ""):
                self.status.message = (f"{self.status.message} (waiting for stable: {stable.ready}/{want} ready "
                                       "before moving traffic back)")
            self.again(POLL_SECONDS)
            return
        self.router_to_stable()
        at = self.status.rollback_at or self.now
        wait = (at + self.spec.rollback.scale_down_delay - self.now).total_seconds()
        if wait > 0:
            self.again(wait)
            return
        canary = self.obs.canary
        if canary is not None and canary.replicas > 0 and not self.reset_scales_canary():
            self.actions.append(act.ScaleCanary(0))
        stable_images = self.obs.stable.images if self.obs.stable is not None else ()
        _trim_prewarm(self, [*stable_images, *kept(self.old.revision_images,
                                                   self.spec.rollback.prewarm.keep_revisions)])
        reason = (self.status.message or "").split(": ", 1)[-1]
        self.phase(Phase.ROLLED_BACK, f"revision {self.obs.revision} rolled back: {reason}; "
                   f"stable {self.old.stable_revision} serves 100%. Change the template, or annotate "
                   f"{RETRY}=true to try it again")

    def advance(self, to: int) -> None:
        # the message names the step that now runs (as status.stepProgress does), and what the one done did
        total, message = len(steps_of(self.spec)), self.status.message or ""
        done = f"{step_label(self.spec, to - 1)}: "
        detail = f": {message[len(done):]}" if "message" in self.status.assigned() and message.startswith(done) else ""
        after = (f"next: {step_label(self.spec, to)}" if to < total
                 else f"all {total} steps done, promotion next")
        phase = self.status.phase
        self.phase(phase if phase is not None and phase not in (Phase.PAUSED, Phase.AWAITING_APPROVAL)
                   else Phase.PROGRESSING,
                   f"{describe_step(self.spec, to - 1)} done{detail}; {after}")
        self.status.current_step = to
        self.status.step_started_at = self.now
        self.status.approved_step = None
        self.status.approval = None
        self.status.analysis_passes = 0
        self.status.progress_since = None
        self.again(0)

    def gate(self, step: int, reason: str, action: str) -> bool:
        """Wait at a gate for ``approve=TOKEN``; True when it is opened now."""
        token = build_token(self.obs.revision, step)
        given = self.obs.annotations.get(APPROVE)
        if given:
            check = check_token(given, revision=self.obs.revision, step=step, total=len(steps_of(self.spec)),
                                gates=gate_steps(self.spec, preflight_reasons(self.status.preflight)))
            if check.opens:
                self.consume(APPROVE)
                self.history("Approved", reason, step=step, token=token, by=self.by(APPROVE))
                self.event("Approved", f"gate at {step_label(self.spec, step)} ({reason}) approved with {token}"
                           + (f" by {self.by(APPROVE)}" if self.by(APPROVE) else ""))
                self.status.approval = None
                return True
            if not check.pending:
                self.consume(APPROVE)
                self.event("ApprovalRejected", f"{check.reason}; the current token is {token}", warning=True)
        current = self.status.approval
        since = current.since if current is not None and current.token == token else self.now
        self.status.approval = api.ApprovalStatus(
            step=step, token=token, reason=reason, action=action,
            command=approve_command(self.obs.name, self.obs.namespace, token), since=since)
        phase = Phase.PAUSED if action == "resume" else Phase.AWAITING_APPROVAL
        preview = f"; the preview is on Service {self.obs.name}-canary" if blue_green(self.spec) else ""
        self.phase(phase, f"waiting for approval before step {step_of(step, len(steps_of(self.spec)))} "
                   f"({describe_step(self.spec, step)}; {reason}{preview}): run "
                   f"`{approve_command(self.obs.name, self.obs.namespace, token)}`")
        return False


def conditions(
    status: api.ModelRolloutStatus, old: Sequence[api.Condition], now: datetime, generation: int,
    *, stalled: str | None = None,
) -> list[api.Condition]:
    """kstatus-compatible conditions: Ready, Progressing (and Reconciling), Healthy, Stalled.

    Ready is True only for a Succeeded status that describes ``generation`` (the spec as it is now).
    ``stalled``: a write was refused (``core.refusal``): Stalled is True with this message whatever the phase,
    Ready False."""
    phase = status.phase or Phase.PENDING
    reason = phase.value
    msg = status.message
    current = status.observed_generation == generation
    wanted = {
        "Ready": phase is Phase.SUCCEEDED and current and stalled is None,
        "Progressing": phase not in (Phase.SUCCEEDED, Phase.ROLLED_BACK, Phase.FAILED, Phase.INVALID),
        "Reconciling": phase not in (Phase.SUCCEEDED, Phase.ROLLED_BACK, Phase.FAILED, Phase.INVALID),
        "Healthy": phase not in (Phase.ROLLING_BACK, Phase.ROLLED_BACK, Phase.FAILED, Phase.INVALID),
        "Stalled": stalled is not None or phase in (Phase.ROLLED_BACK, Phase.FAILED, Phase.INVALID),  # kstatus Failed
    }
    before = {c.type: c for c in old}
    out = []
    for kind, value in wanted.items():
        text = "True" if value else "False"
        prev = before.get(kind)
        changed = prev is None or prev.status != text
        out.append(api.Condition(
            type=kind, status=text, reason="WriteRefused" if stalled is not None else reason,
            message=stalled if stalled is not None else msg,
            last_transition_time=now if changed or prev is None else prev.last_transition_time,
            observed_generation=generation))
    return out


_PLACEHOLDER = api.ModelRolloutSpec.model_validate({
    "selector": {"matchLabels": {"app": "x"}}, "template": {"spec": {"containers": [{"name": "x", "image": "x"}]}},
    "traffic": {"service": {"name": "x"}}, "strategy": {"canary": {"steps": [{"setWeight": 100}]}},
})
"""Stands in for an unparseable spec when the only decision is Invalid (nothing reads it)."""


def decide(spec: api.ModelRolloutSpec | None, status: api.ModelRolloutStatus, obs: Observed, now: datetime) -> Decision:
    """The next move of one rollout. Pure: the same inputs give the same Decision."""
    if obs.invalid is not None or spec is None:
        p = _Plan(_PLACEHOLDER, status, obs, now)
        p.phase(Phase.INVALID, obs.invalid or "spec: invalid")
        _drills(p)  # a drill does not outlive a spec turned invalid
        return p.done()
    seen = obs.annotations
    obs = replace(obs, annotations=cons.unconsumed(seen, status.consumed_annotations, obs.revision))
    p = _Plan(spec, status, obs, now, seen=seen)
    if status.stable_revision is None:
        _first_release(p)
    elif obs.revision == status.stable_revision:
        _steady(p)
    else:
        _rollout(p)
    _drills(p)
    return p.done()


def _first_release(p: _Plan) -> None:
    """No stable yet: the template becomes stable directly, no steps."""
    obs, want = p.obs, p.spec.replicas
    stable = obs.stable
    p.actions.append(act.EnsureServices())
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
        p.again(POLL_SECONDS)
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


def _ignore_idle_annotations(p: _Plan) -> None:
    """Control annotations that need a rollout in progress are consumed with a warning when there is none."""
    for key in (ABORT, RETRY, PROMOTE, APPROVE):
        if key in p.obs.annotations:
            p.consume(key)
            p.event("AnnotationIgnored", f"{key} ignored: no rollout in progress", warning=True)


def _steady(p: _Plan) -> None:
    """The spec asks for the stable revision: nothing to roll out; undo any canary left over."""
    obs, want = p.obs, p.spec.replicas
    _ignore_idle_annotations(p)
    if ROLLBACK_TO in obs.annotations:
        _rollback_to(p, obs.annotations[ROLLBACK_TO].strip())
    canary_rev = p.old.canary_revision
    p.router_to_stable()
    if obs.canary is not None and obs.canary.replicas > 0:
        p.actions.append(act.ScaleCanary(0))
    if obs.stable is None or obs.stable.revision != obs.revision:
        p.actions.append(act.EnsureStable(obs.revision, want))
    elif obs.stable.replicas != want:
        p.actions.append(act.ScaleStable(want))
    if canary_rev is not None:
        if p.old.phase in ACTIVE or p.old.phase is Phase.PROMOTING:
            p.history("Superseded", "spec returned to the stable revision", revision=canary_rev)
        p.status.canary_revision = None
        p.status.current_step = None
        p.status.current_weight = 0
        p.status.approval = None
        p.status.approved_step = None
        p.status.progress_since = None
        p.status.analysis = []
        p.status.analysis_passes = 0
        p.status.consecutive_passes = 0
        p.status.inconclusive_count = 0
    stable = obs.stable
    if stable is None or stable.revision != obs.revision or stable.replicas != want or stable.ready < want \
            or not stable.updated:  # Succeeded (Ready) only while the world shows it: stable whole and ready
        ready = stable.ready if stable is not None and stable.revision == obs.revision else 0
        p.phase(Phase.PROGRESSING, f"restoring stable revision {obs.revision}: {ready}/{want} ready")
        p.again(POLL_SECONDS)
        return
    p.phase(Phase.SUCCEEDED, f"revision {obs.revision} is stable and serves 100% ({want} replicas)")


def _rollout(p: _Plan) -> None:
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
            p.finish_rollback()
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
            p.rollback("aborted by user", outcome="Aborted", by=p.by(ABORT))
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
        _promote(p)
        return
    _follow_scale(p)
    if _canary_deadline(p):
        return
    if obs.samples is not None and _evaluate(p):
        return
    if _promote_annotation(p):
        _promote(p)
        return
    _step(p)


def _start(p: _Plan) -> None:
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
    p.actions.append(act.EnsureServices())
    if obs.canary is None or obs.canary.revision != obs.revision:
        p.actions.append(act.EnsureCanary(obs.revision, 0))
    elif obs.canary.replicas > 0:
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
    p.status.current_weight = 0
    p.status.step_started_at = p.now
    p.status.traffic_started_at = None
    p.status.approval = None
    p.status.approved_step = None
    p.status.analysis = []
    p.status.analysis_passes = 0
    p.status.consecutive_passes = 0
    p.status.inconclusive_count = 0
    p.status.last_analysis_at = None
    p.status.progress_since = None
    p.status.rollback_at = None
    p.status.prewarm = None
    if old.fast_path_revision == obs.revision:
        p.phase(Phase.PROMOTING, f"rollback to revision {obs.revision}: steps skipped, stable takes it directly")
        p.history("Started", f"fast path (rollback-to) over stable {old.stable_revision}")
        p.again(0)
        return
    p.phase(Phase.PROGRESSING, f"rolling out revision {obs.revision} over stable {old.stable_revision}")
    p.history("Started", f"stable {old.stable_revision}")
    p.again(0)


def _sizes(spec: api.ModelRolloutSpec, weight: int, features: bool) -> Sizes:
    return sizes(spec.replicas, weight, preview=blue_green(spec), features=features, ratio=replica_ratio(spec),
                 dynamic=dynamic_stable(spec), stable_floor=spec.rollback.stable_min_ready)


def _follow_scale(p: _Plan) -> None:
    """spec.replicas changed mid-rollout (kubectl scale, an HPA, KEDA): both tracks are resized at the weight the
    router carries now; no step restarts and no traffic moves."""
    steps, i = steps_of(p.spec), p.status.current_step or 0
    moving = i < len(steps) and isinstance(steps[i], api.SetWeightStep | api.SetHeaderRouteStep | api.SetMirrorStep)
    route = p.obs.route or RouteState(0)
    p.actions.extend(follow(p.obs, _sizes(p.spec, route.weight, route.features.any), grow_only=moving))


def _bind_to_revision(p: _Plan) -> None:
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


def _canary_deadline(p: _Plan) -> bool:
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
        p.rollback(f"canary pods not ready after {limit}s: {why} ({canary.ready}/{canary.replicas} ready)")
        return True
    p.again(min(POLL_SECONDS, limit - waited + 0.01))
    return False


def _evaluate(p: _Plan) -> bool:
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
            p.rollback(f"metric {breach.message}")
            return True
        action = "rollback" if breach.action == "rollback" else "resume"
        what = "approve to roll back" if action == "rollback" else "approve to resume"
        p.event("AnalysisFailed", f"{breach.message}; {what}", warning=True)
        p.gate(p.status.current_step or 0, f"metric {breach.message}; {what}", action)
        return True
    if result.inconclusive and inconclusive >= analysis.inconclusive.limit:
        last = "; ".join(m.message or "" for m in result.metrics if m.verdict is api.Verdict.INCONCLUSIVE)
        if analysis.inconclusive.action == "rollback":
            p.rollback(f"analysis inconclusive {inconclusive} times in a row: {last}")
            return True
        p.phase(Phase.PAUSED, f"analysis inconclusive {inconclusive} times in a row, holding until metrics "
                f"return: {last}")
        if inconclusive == analysis.inconclusive.limit:
            p.event("AnalysisInconclusive", f"holding: {last}", warning=True)
        _schedule_analysis(p)
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


def _missing(p: _Plan) -> str | None:
    return evidence_missing(p.spec, p.obs, consecutive=p.status.consecutive_passes, statuses=p.status.analysis,
                            traffic_started_at=p.status.traffic_started_at)


def _schedule_analysis(p: _Plan) -> None:
    nxt = an.next_analysis_in(p.spec.analysis, p.status.last_analysis_at, p.now)
    if nxt is not None and p.status.traffic_started_at is not None:
        p.again(nxt.total_seconds())


def _promote_annotation(p: _Plan) -> bool:
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
    missing = None if forced else _missing(p)
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


def _step(p: _Plan) -> None:
    spec, obs = p.spec, p.obs
    steps = steps_of(spec)
    i = p.status.current_step or 0
    held = p.status.approval
    if held is not None and held.action in ("resume", "rollback"):
        if not p.gate(held.step, held.reason, held.action):
            return
        if held.action == "rollback":
            p.rollback(f"rollback approved: {held.reason}")
            return
        p.status.analysis = [m.model_copy(update={"failures": 0}) for m in p.status.analysis]
    _schedule_analysis(p)
    if spec.rollback.prewarm.enabled and p.status.traffic_started_at is None and not _prewarmed(p):
        return
    analysis_ok = spec.analysis is None or an.last_all_pass(spec.analysis, p.status.analysis)
    if p.status.inconclusive_count >= (spec.analysis.inconclusive.limit if spec.analysis else 1 << 30):
        return
    if i >= len(steps):
        missing = _missing(p)
        if missing is not None:
            p.phase(Phase.PROGRESSING, f"all {len(steps)} steps done; {missing}")
            _schedule_analysis(p)
            return
        p.phase(Phase.PROMOTING, f"all {len(steps)} steps done; promoting revision {obs.revision}")
        p.event("Promoting", f"all steps done for revision {obs.revision}")
        _promote(p)
        return
    reason = gate_reason(spec, i, preflight_reasons(p.status.preflight))
    if reason is not None and p.status.approved_step != i:
        if not p.gate(i, reason, "continue"):
            return
        p.status.approved_step = i
    elif obs.annotations.get(APPROVE) and APPROVE not in p.consumed:
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
        _set_weight(p, i, step.set_weight, analysis_ok, label, "SetWeight")
    elif isinstance(step, api.SetHeaderRouteStep):
        _set_weight(p, i, p.status.current_weight, analysis_ok, label, "SetHeaderRoute")
    elif isinstance(step, api.SetMirrorStep):
        _set_weight(p, i, p.status.current_weight, analysis_ok, label, "SetMirror")
    elif isinstance(step, api.PauseStep):
        if step.pause.duration is None:
            p.advance(i + 1)
            _step(p)
            return
        started = p.status.step_started_at or p.now
        left = (started + step.pause.duration - p.now).total_seconds()
        if left <= 0:
            p.advance(i + 1)
            _step(p)  # the next step starts in the same reconcile: no second round trip for a step that is due
            return
        remaining = format_duration(timedelta(seconds=round(left)))
        if blue_green(spec):
            p.phase(Phase.PAUSED, f"{label}: switched, 100% on revision {obs.revision}; stable "
                    f"{p.old.stable_revision} stays at full size for an instant switch-back, {remaining} left")
        else:
            p.phase(Phase.PAUSED, f"{label}: paused, {remaining} left at weight {p.status.current_weight}")
        p.again(left)
    elif isinstance(step, api.ApprovalStep):
        p.advance(i + 1)
        _step(p)  # the approved gate leads straight into the next step, in the same reconcile
    elif isinstance(step, api.ChaosStep):
        _drill(p, i, step.chaos, label)
    else:
        need = step.analysis.passes
        have = p.status.analysis_passes
        if have >= need:
            p.history("AnalysisPassed", f"{have} passing evaluations", step=i)
            p.advance(i + 1)
            _step(p)  # the step the passes unlock (a weight, say) is carried out by this same reconcile
            return
        p.phase(Phase.PROGRESSING, f"{label}: {have}/{need} passing evaluations")


def _set_weight(p: _Plan, i: int, weight: int, analysis_ok: bool, label: str, reason: str) -> None:
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
    size = _sizes(spec, weight, features.any)
    need = size.canary
    canary = obs.canary
    have_replicas = canary.replicas if canary is not None else 0
    if have_replicas > need and (weight > 0 or preview):  # spec.replicas went down while this step scaled it up
        p.actions.append(act.ScaleCanary(need))
    if have_replicas < need:
        p.actions.append(act.ScaleCanary(need))
        p.status.progress_since = p.now
        p.phase(Phase.PROGRESSING, f"{label}: scaling canary to {need} replicas before moving traffic")
        p.again(POLL_SECONDS)
        return
    ready = canary.ready if canary is not None else 0
    if ready < need or (canary is not None and not canary.updated):
        p.phase(Phase.PROGRESSING, f"{label}: waiting for canary pods, {ready}/{need} ready"
                + (f" ({canary.failure})" if canary is not None and canary.failure else ""))
        p.again(POLL_SECONDS)
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
                f"{p.old.stable_revision} stays at full size for {_switch_back_window(spec)}")
    else:
        p.phase(Phase.PROGRESSING, f"{label}: weight {weight}{pinned}{mirrored}")
        p.event(reason, f"{label}: {weight}% of traffic on revision {obs.revision}{pinned}{mirrored}")
    p.advance(i + 1)


def _switch_back_window(spec: api.ModelRolloutSpec) -> str:
    bg = spec.strategy.blue_green
    return format_duration(bg.scale_down_delay) if bg is not None else "the pause"


def _promote(p: _Plan) -> None:
    """Stable takes the new template, waits until ready, takes 100% back; canary scaled to zero."""
    obs, want = p.obs, p.spec.replicas
    stable, canary = obs.stable, obs.canary
    p.status.approval = None
    if stable is None or stable.revision != obs.revision:
        p.actions.append(act.PromoteStable(obs.revision, want))
        p.phase(Phase.PROMOTING, f"promoting: stable Deployment takes revision {obs.revision}")
        p.again(POLL_SECONDS)
        return
    if stable.replicas != want:
        p.actions.append(act.ScaleStable(want))
    if stable.ready < want or not stable.updated:
        p.phase(Phase.PROMOTING, f"promoting: waiting for stable on revision {obs.revision}, "
                f"{stable.ready}/{want} ready")
        p.again(POLL_SECONDS)
        return
    p.router_to_stable()
    if canary is not None and canary.replicas > 0 and not p.reset_scales_canary():
        p.actions.append(act.ScaleCanary(0))
    history = remember(p.old.revision_images, obs.revision, obs.images, p.spec.rollback.prewarm.keep_revisions)
    p.actions.append(act.RecordRevision(obs.revision, p.spec.rollback.prewarm.keep_revisions))
    p.status.stable_revision = obs.revision
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
    _trim_prewarm(p, kept(history, p.spec.rollback.prewarm.keep_revisions))
    p.phase(Phase.SUCCEEDED, f"revision {obs.revision} promoted: stable serves 100% ({want} replicas)")
    p.history("Succeeded", "promoted")


def _trim_prewarm(p: _Plan, images: Sequence[str]) -> None:
    """Keep only ``images`` pre-pulled (none: remove the DaemonSet)."""
    current = p.obs.prewarm
    if current is None:
        return
    want = wanted(images)
    if not want or not p.spec.rollback.prewarm.enabled:
        p.actions.append(act.DeletePrewarm())
    elif want != tuple(sorted(current.images)):
        p.actions.append(act.EnsurePrewarm(want))


def _prewarmed(p: _Plan) -> bool:
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
        _trim_prewarm(p, [*stable_images, *kept(p.old.revision_images, policy.keep_revisions)])
        p.phase(Phase.FAILED, f"revision {obs.revision} failed before any traffic: {reason}. Fix the image or the "
                f"nodes, then change the template or annotate {RETRY}=true")
        p.history("Failed", reason)
        return False
    detail = f"; failing: {'; '.join(state.failures)}" if state.failures else ""
    p.phase(Phase.PREWARMING, f"pre-pulling {len(want)} images: {state.ready}/{state.desired} nodes ready{detail}")
    p.again(min(POLL_SECONDS, policy.timeout.total_seconds() - waited + 0.01))
    return False


def _rollback_to(p: _Plan, target: str) -> None:
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


def _drill(p: _Plan, i: int, drill: api.ChaosSpec, label: str) -> None:
    """A chaos step: create the experiment (once), wait its duration while analysis runs, then go on (the
    experiment is deleted by :func:`_drills` as soon as the drill no longer runs)."""
    obs = p.obs
    d = p.status.drill
    if not (chaos.running(d) and d.step == i and d.revision == obs.revision):
        if obs.canary is None or obs.canary.ready < 1:
            p.phase(Phase.PROGRESSING, f"{label}: waiting for a ready canary pod to run the drill against")
            p.again(POLL_SECONDS)
            return
        name = chaos.experiment_name(obs.name, obs.revision, i, p.now)
        p.actions.append(act.EnsureDrill(name, i, drill))
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
        p.advance(i + 1)
        _step(p)
        return
    remaining = format_duration(timedelta(seconds=round(left)))
    p.phase(Phase.PROGRESSING, f"{label}: {d.kind} {d.name} running against the canary's pods, {remaining} left "
            f"at weight {p.status.current_weight}")
    p.again(left)


def _drills(p: _Plan) -> None:
    """Every decision: record what the metrics did during a running drill, stop it (Warning Event, history) when
    the rollout left its step, and delete every experiment of the rollout except the running drill's."""
    d = p.status.drill
    if chaos.running(d):
        d = chaos.with_evaluation(d, p.status.analysis, p.status.last_analysis_at)
        if not chaos.wanted(d, phase=p.status.phase, step=p.status.current_step,
                            canary_revision=p.status.canary_revision, revision=p.obs.revision):
            why = p.status.message or (p.status.phase or "")
            d = d.model_copy(update={"outcome": "Stopped", "finished_at": p.now, "message": why})
            p.history("DrillStopped", f"{d.kind} {d.name} stopped after "
                      f"{format_duration(timedelta(seconds=round((p.now - d.started_at).total_seconds())))}: {why}; "
                      f"{chaos.summary(d)}", step=d.step, revision=d.revision)
            p.event("DrillStopped", f"{d.kind} {d.name} deleted before its {d.duration} were over: {why}; "
                    f"{chaos.summary(d)}", warning=True)
        p.status.drill = d
    keep = d.name if chaos.running(d) else None
    stale = [act.DeleteDrill(kind, name) for kind, name in p.obs.drills if name != keep]
    p.actions[:0] = stale  # faults stop first, before any routing write
