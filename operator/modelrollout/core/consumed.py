"""Control annotations the operator has consumed, remembered in ``status.consumedAnnotations``. Pure.

A GitOps tool (Flux, Argo CD) re-applies an annotation kept in git after the operator removed it. Without a
memory every re-apply would be acted on (or refused with a new Event) again: an endless write fight. With it,
an annotation whose value was consumed for the revision the spec asks for is invisible to the decision: no
removal, no Event. A value held over into a new revision is re-stamped with it when the revision starts, so a
stale token or ``abort=true`` left in git never acts on the next revision either.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from modelrollout import api


def unconsumed(annotations: Mapping[str, str], records: Sequence[api.ConsumedAnnotation],
               revision: str) -> dict[str, str]:
    """``annotations`` without those whose value was consumed already for ``revision``."""
    done = {(r.key, r.value) for r in records if r.revision == revision}
    return {k: v for k, v in annotations.items() if (k, v) not in done}


def held_over(annotations: Mapping[str, str], records: Sequence[api.ConsumedAnnotation]) -> list[str]:
    """Keys whose current value was consumed for some revision: still there (kept in git) when a new one starts."""
    last = {r.key: r.value for r in records}
    return [k for k, v in annotations.items() if last.get(k) == v]


def remember(records: Sequence[api.ConsumedAnnotation], keys: Iterable[str], annotations: Mapping[str, str],
             revision: str, now: datetime) -> list[api.ConsumedAnnotation]:
    """``records`` with the current value of each of ``keys`` remembered for ``revision`` (one record a key)."""
    out = {r.key: r for r in records}
    for key in keys:
        if key in annotations:
            out[key] = api.ConsumedAnnotation(key=key, value=annotations[key], revision=revision, at=now)
    return [out[k] for k in sorted(out)]


def forget(records: Sequence[api.ConsumedAnnotation], key: str) -> list[api.ConsumedAnnotation]:
    """``records`` without ``key``'s: its next value is acted on, even one equal to the last."""
    return [r for r in records if r.key != key]
