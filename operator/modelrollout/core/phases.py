"""Phases and the transitions allowed between them."""

from __future__ import annotations

from modelrollout.api import Phase

_ACTIVE = {Phase.PROGRESSING, Phase.PREWARMING, Phase.PAUSED, Phase.AWAITING_APPROVAL}

ALLOWED: dict[Phase, frozenset[Phase]] = {
    Phase.PENDING: frozenset(Phase) - {Phase.PENDING},
    Phase.PROGRESSING: frozenset(Phase),
    Phase.PREWARMING: frozenset(Phase),
    Phase.PAUSED: frozenset(Phase),
    Phase.AWAITING_APPROVAL: frozenset(Phase),
    # promotion does not go back to steps or roll back; a new revision restarts it
    Phase.PROMOTING: frozenset({Phase.PROMOTING, Phase.SUCCEEDED, Phase.PROGRESSING, Phase.INVALID}),
    Phase.SUCCEEDED: frozenset({Phase.SUCCEEDED, Phase.PROGRESSING, Phase.INVALID, Phase.PENDING}),
    Phase.ROLLING_BACK: frozenset({Phase.ROLLING_BACK, Phase.ROLLED_BACK, Phase.PROGRESSING, Phase.SUCCEEDED,
                                   Phase.INVALID}),
    Phase.ROLLED_BACK: frozenset({Phase.ROLLED_BACK, Phase.PROGRESSING, Phase.SUCCEEDED, Phase.INVALID}),
    Phase.FAILED: frozenset(Phase),
    Phase.INVALID: frozenset(Phase),
}
"""phase -> the phases a single reconcile may move it to."""

ACTIVE = frozenset(_ACTIVE)
"""Phases in which steps are carried out and analysis runs."""

TERMINAL = frozenset({Phase.SUCCEEDED, Phase.ROLLED_BACK, Phase.FAILED, Phase.INVALID})
"""Phases in which nothing happens until the spec or an annotation changes."""


def allowed(source: Phase, target: Phase) -> bool:
    """A single reconcile may move ``source`` to ``target``."""
    return target in ALLOWED[source]
