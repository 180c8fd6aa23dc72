"""What one reconcile's status transition completed, for the operator's metrics: steps and approval waits.

Derived only from the old and the new status (and the spec for a step's kind), so it is pure and the clock
is the decision's ``now``.

Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from modelrollout import api
from modelrollout.core.steps import steps_of


@dataclass(frozen=True)
class StepDone:
    """A canary step that completed in this transition."""

    index: int
    kind: str
    """setWeight, pause, approval or analysis (the step's only key)."""
    seconds: float


@dataclass(frozen=True)
class ApprovalDone:
    """An approval gate that was opened (its token consumed) in this transition."""

    action: str
    """continue, resume or rollback (api.ApprovalStatus.action)."""
    seconds: float


def step_kind(spec: api.ModelRolloutSpec, index: int) -> str:
    """The step's kind (its key in the spec), or ``unknown`` for an index past the steps."""
    canary = spec.strategy.canary
    steps = canary.steps if canary is not None else []
    if not 0 <= index < len(steps):
        return "unknown"
    dumped = steps[index].model_dump(by_alias=True, exclude_none=True)
    return next(iter(dumped), "unknown") if isinstance(dumped, dict) else "unknown"


def completed_steps(spec: api.ModelRolloutSpec | None, old: api.ModelRolloutStatus, new: api.ModelRolloutStatus,
                    now: datetime) -> list[StepDone]:
    """Steps completed between ``old`` and ``new``: currentStep moved forward within the same canary revision, from
    the first step when the revision started in this transition, up to the end when it was promoted in it.

    The step the rollout was at took from its stepStartedAt until ``now``; steps passed over in the same
    reconcile (an approved gate leads straight into the next step, the last step into promotion) took no time.
    """
    if spec is None:
        return []
    first, started_at = old.current_step, old.step_started_at
    if new.canary_revision is not None and old.canary_revision != new.canary_revision:
        first, started_at = 0, None  # the revision started in this transition
    elif old.canary_revision is None:
        return []
    last = new.current_step
    if last is None and old.canary_revision is not None and new.stable_revision == old.canary_revision:
        last = len(steps_of(spec))  # promoted in this transition: every step is done
    if first is None or last is None or last <= first:
        return []
    out = []
    for index in range(first, last):
        started = started_at if index == first else None
        seconds = max(0.0, (now - started).total_seconds()) if started is not None else 0.0
        out.append(StepDone(index, step_kind(spec, index), seconds))
    return out


def approvals_consumed(old: api.ModelRolloutStatus, new: api.ModelRolloutStatus, now: datetime) -> list[ApprovalDone]:
    """The gate ``old`` waited at was approved in this transition: the wait from approval.since until ``now``.

    Approved means a new ``Approved`` history entry carries the gate's token; a gate dropped for another
    reason (abort, a new revision) is not an approval and is not counted.
    """
    gate = old.approval
    if gate is None or gate.since is None:
        return []
    known = {(h.outcome, h.token, h.at) for h in old.history}
    for entry in new.history:
        if entry.outcome == "Approved" and entry.token == gate.token and (entry.outcome, entry.token,
                                                                          entry.at) not in known:
            return [ApprovalDone(gate.action, max(0.0, (now - gate.since).total_seconds()))]
    return []
