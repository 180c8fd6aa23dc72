"""The working state of one decision: the status being edited (:class:`Draft`), the actions, Events and
requeues gathered so far, and :meth:`Plan.done`, which turns them into the :class:`~modelrollout.core.model.Decision`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import ConfigDict, PrivateAttr

from modelrollout import api
from modelrollout.api import Phase
from modelrollout.core import actions as act
from modelrollout.core import consumed as cons
from modelrollout.core.model import Decision, Event, Observed
from modelrollout.core.plan.conditions import conditions
from modelrollout.core.plan.shape import replica_ratio
from modelrollout.core.scale import pods, selector
from modelrollout.core.steps import step_of, steps_of

HISTORY_LIMIT = 20
"""Entries kept in ``status.history``, the newest."""
STALLED = "stalled: "
"""How the message of a status written for a refused write begins (``core.refusal``)."""
POLL_SECONDS = 5.0
"""How often a rollout that waits looks again even without a watch event (for a wait that watch events end, only
while the wait is young: ``Plan.await_pods``)."""
YOUNG_WAIT_SECONDS = 10.0
"""How long a wait for pods counts as young (looked at every ``POLL_SECONDS``, so the reason pods do not start,
looked for once they are unready a few seconds, shows soon)."""
WAKE_POLL_SECONDS = 15.0
"""How often an older wait for pods or endpoints looks again without a watch event: a safety net, since a
Deployment's ready pods, ``NAME-canary``'s ready endpoints and a pod that fails to start each wake the rollout."""


PLACEHOLDER = api.ModelRolloutSpec.model_validate({
    "selector": {"matchLabels": {"app": "x"}}, "template": {"spec": {"containers": [{"name": "x", "image": "x"}]}},
    "traffic": {"service": {"name": "x"}}, "strategy": {"canary": {"steps": [{"setWeight": 100}]}},
})
"""Stands in for an unparseable spec when the only decision is Invalid (nothing reads it)."""


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
        return {name: getattr(self, name) for name in self._assigned}

    def was_assigned(self, name: str) -> bool:
        return name in self._assigned

    if not TYPE_CHECKING:  # hidden from mypy, which then checks every assignment against the fields

        def __setattr__(self, name: str, value: Any) -> None:
            super().__setattr__(name, value)
            if name in type(self).model_fields:
                self._assigned.add(name)


@dataclass
class Plan:
    """One decision being made: what every branch of :func:`~modelrollout.core.plan.decide` reads and edits."""

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

    def await_pods(self) -> None:
        """Look again while waiting for pods or their endpoints (what watch events report): every
        ``POLL_SECONDS`` while the wait (since ``status.progressSince``) is young, then every ``WAKE_POLL_SECONDS``,
        and just past the progress deadline (a wait longer than the deadline is acted on)."""
        since = self.status.progress_since
        waited = 0.0 if since is None else (self.now - since).total_seconds()
        every = POLL_SECONDS if waited < YOUNG_WAIT_SECONDS else WAKE_POLL_SECONDS
        left = self.spec.progress_deadline_seconds - waited
        self.again(min(every, left + 0.01) if left >= 0 else every)

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
        if self.spec is not PLACEHOLDER:  # an Invalid spec keeps the last progress shown
            current = self.status.current_step
            self.status.step_progress = None if current is None else step_of(current, len(steps_of(self.spec)))
            self.status.replicas = pods(self.obs)
            self.status.selector = selector(self.spec.selector.match_labels)
        if not self.status.was_assigned("message") and self.old.message.startswith(STALLED):  # refused, now through
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
