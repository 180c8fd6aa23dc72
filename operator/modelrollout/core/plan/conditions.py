"""kstatus conditions derived from a status."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from modelrollout import api
from modelrollout.api import Phase


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
