"""What the apiserver's refusal of a write means, and the status that says so. Pure: no I/O here.

A write the apiserver answers with 409 (a stale resourceVersion), 429 (too many requests), 404 (gone
meanwhile), 408, a 5xx or no answer at all is *transient*: the next reconcile (soon) decides again from what it
reads. Any other 4xx is
the user's or the operator's problem, and repeating the same write every second helps nobody: it is
*refused* (401, 403, ...: someone must change the cluster, an RBAC rule say) or *permanent* (400, 413,
422: the same body is refused again until the spec or the operator changes). A refused or permanent write
stalls the rollout: the status says so (``Stalled=True`` with the apiserver's message, ``Ready=False``), a
Warning Event says so, and the next attempt waits a capped exponential backoff (:func:`backoff`).

Non-finite floats have no JSON form (the apiserver refuses ``Infinity`` with a 400): :func:`finite_json`
replaces them before anything is serialised, naming the value in words instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from modelrollout import api
from modelrollout.api import Phase
from modelrollout.core.phases import allowed
from modelrollout.core.plan import STALLED, conditions

Kind = Literal["transient", "refused", "permanent"]

BACKOFF_BASE = 1.0
"""Seconds before the first retry of a refused write."""
BACKOFF_CAP = 300.0
"""The longest wait between two attempts of a refused write."""
PERMANENT = frozenset({400, 413, 422})
"""Codes whose refusal repeats for the same body: bad request, too large, invalid."""
TRANSIENT = frozenset({404, 408, 409, 429})
"""4xx codes that a later attempt can outlive without anyone acting: gone meanwhile (the next reconcile reads
again), timeout, conflict, too many requests."""
KEEP_PHASE = frozenset({Phase.PROMOTING, Phase.ROLLING_BACK})
"""Phases the next decision continues from (its phase is its state): a stall keeps them, whatever the code."""


def classify(code: int | None) -> Kind:
    """``transient`` (retry soon), ``refused`` (back off: someone must act) or ``permanent`` (a retry of the
    same write cannot help). ``code`` None or 0: no answer (a transport error)."""
    if code is None or code < 400 or code >= 500 or code in TRANSIENT:
        return "transient"
    return "permanent" if code in PERMANENT else "refused"


def backoff(attempt: int, *, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP) -> float:
    """Seconds to wait after the ``attempt``-th refusal in a row (1, 2, 3, ...): doubling from ``base``,
    at most ``cap``."""
    return min(cap, base * 2.0 ** min(max(attempt - 1, 0), 32))


@dataclass(frozen=True)
class Refusal:
    """One refused write."""

    code: int
    """The HTTP status the apiserver answered."""
    reason: str
    """Its reason (``Forbidden``, ``Invalid``, ``BadRequest``, ...)."""
    message: str
    """The apiserver's message."""
    what: str
    """The write, in words: ``the status``, ``EnsureCanary`` (the action carried out), ..."""
    rendered: bool = False
    """The refused object is rendered from the spec (a Deployment, a ConfigMap): a permanent refusal makes
    the spec Invalid rather than the operator Failed."""

    @property
    def kind(self) -> Kind:
        return classify(self.code)

    def describe(self) -> str:
        reason = f" {self.reason}" if self.reason else ""
        return f"the apiserver refused {self.what} ({self.code}{reason}): {self.message}"


def stalled_message(refusal: Refusal, retry_in: float, done: str = "") -> str:
    """The status message and Event text of a stall: what was refused, why, and what happens next."""
    after = f"; carried out but not recorded: {done}" if done else ""
    if refusal.kind == "permanent":
        nxt = (f"a retry of the same write cannot help until the spec, the cluster or the operator changes; "
               f"trying again in {retry_in:g}s")
    else:
        nxt = f"retrying in {retry_in:g}s (backing off while it is refused)"
    return f"{STALLED}{refusal.describe()}{after}; {nxt}"


def stalled_phase(old: Phase | None, refusal: Refusal) -> Phase | None:
    """The phase a stall shows: unchanged while a retry might help (or while the phase is the state the next
    decision continues from), else ``Invalid`` for an object rendered from the spec, ``Failed`` otherwise, where
    ``core.phases`` allows that move (a ``Succeeded`` rollout does not become ``Failed``: Stalled says it)."""
    if refusal.kind != "permanent" or old in KEEP_PHASE:
        return old
    target = Phase.INVALID if refusal.rendered else Phase.FAILED
    return target if old is None or allowed(old, target) else old


def stalled_status(old: api.ModelRolloutStatus, refusal: Refusal, *, generation: int, now: datetime,
                   retry_in: float, done: str = "") -> api.ModelRolloutStatus:
    """The stored status ``old`` with the stall made visible: phase (:func:`stalled_phase`), message,
    observedGeneration and the conditions (``Stalled=True`` with the message, ``Ready=False``). Everything else
    is kept, so the next decision continues from the state the world was last recorded in."""
    message = stalled_message(refusal, retry_in, done)
    status = old.model_copy(update={"phase": stalled_phase(old.phase, refusal), "observed_generation": generation,
                                    # a rollback's message carries its reason on to RolledBack: kept
                                    "message": old.message if old.phase is Phase.ROLLING_BACK else message})
    return status.model_copy(update={"conditions": conditions(status, old.conditions, now, generation,
                                                              stalled=message)})


STALL_KEYS = ("phase", "message", "observedGeneration", "conditions")
"""The status fields a stall writes (a minimal merge patch: nothing else is touched)."""


# -------------------------------------------------------------------------------------- finite JSON


def _text(value: float) -> str:
    return "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")


def finite_json(value: Any, path: str = "") -> tuple[Any, list[str]]:
    """``value`` (JSON-like: dicts, lists, scalars) with every non-finite float replaced by None, and the places
    replaced as ``path=+Inf`` texts. A dict with a ``message`` field that held one directly gets the text
    appended to that message, so the value is still named where a reader looks (``analysis[0].message``)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None, [f"{path or 'value'}={_text(value)}"]
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        found: list[str] = []
        own: list[str] = []
        for key, item in value.items():
            if isinstance(item, float) and not math.isfinite(item):
                own.append(f"{key}={_text(item)}")
            clean, notes = finite_json(item, f"{path}.{key}" if path else str(key))
            out[key] = clean
            found.extend(notes)
        if own and "message" in out and isinstance(out["message"], str | None):
            note = f"{', '.join(own)}: not a finite number, written as null"
            out["message"] = f"{out['message']} ({note})" if out["message"] else note
        return out, found
    if isinstance(value, list | tuple):
        items: list[Any] = []
        found = []
        for i, item in enumerate(value):
            clean, notes = finite_json(item, f"{path}[{i}]")
            items.append(clean)
            found.extend(notes)
        return items, found
    return value, []


def finite_status(body: dict[str, Any]) -> dict[str, Any]:
    """A status body safe to send: non-finite floats null, each named in its own ``message`` (where it has one)
    and in the top-level message."""
    clean, found = finite_json(body)
    assert isinstance(clean, dict)
    if found:
        note = "not finite, written as null: " + ", ".join(found)
        clean["message"] = f"{clean['message']}; {note}" if clean.get("message") else note
    return clean
