"""Leader election on a ``coordination.k8s.io/v1`` Lease: the decisions, without I/O.

The same algorithm as client-go's ``leaderelection`` package:

* A candidate never trusts the clock of another machine. It remembers *when it first saw* the current
  version (resourceVersion) of the Lease, on its own monotonic clock, and considers the holder gone only
  once that version has not changed for the holder's ``leaseDurationSeconds``. The ``renewTime`` written
  in the Lease is informational.
* The leader renews every retry period and believes it leads only until ``renew_deadline`` after the
  *start* of its last successful renewal (the moment it sent the request, before the apiserver stored it).
  As ``renew_deadline < lease_duration``, a leader that cannot renew stops acting before any candidate
  can take over, even with the clocks running at slightly different rates (see :func:`safe_under_drift`).
* Every write is conditional (create, or update at the resourceVersion read), so of two candidates that
  decide to take over at the same time, one gets a conflict.

:mod:`modelrollout.leader` does the reads and writes; everything here is a function of its arguments.
Times called ``now`` are seconds on the caller's monotonic clock; ``wall`` is only written into the Lease.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, replace
from datetime import datetime

RELEASED_LEASE_SECONDS = 1
"""``leaseDurationSeconds`` of a released Lease (client-go writes 1 too); its holder is empty anyway."""


@dataclass(frozen=True)
class Timing:
    """The three durations of leader election, in seconds."""

    lease_duration: float
    """How long a candidate waits, after the Lease last changed, before it takes the Lease over."""
    renew_deadline: float
    """How long the leader keeps acting after its last successful renewal before it gives up."""
    retry_period: float
    """How often candidates try to acquire and the leader renews."""

    def __post_init__(self) -> None:
        problems = timing_problems(self)
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def lease_seconds(self) -> int:
        """``leaseDurationSeconds`` as written in the Lease (an integer there: rounded up)."""
        return max(1, math.ceil(self.lease_duration))


def timing_problems(t: Timing) -> list[str]:
    """What is wrong with ``t`` (empty when usable): the same constraints client-go enforces."""
    out = []
    if t.retry_period <= 0:
        out.append(f"retry period must be positive, got {t.retry_period}s")
    if t.renew_deadline <= t.retry_period:
        out.append(f"renew deadline ({t.renew_deadline}s) must be longer than the retry period ({t.retry_period}s)")
    if t.lease_duration <= t.renew_deadline:
        out.append(f"lease duration ({t.lease_duration}s) must be longer than the renew deadline "
                   f"({t.renew_deadline}s)")
    return out


def safe_under_drift(t: Timing, drift: float) -> bool:
    """Whether clocks whose rates differ from real time by at most ``drift`` (0.01 = 1 %) can never make two
    candidates lead at once: the leader's renew deadline measured on a slow clock still ends, in real time,
    before a candidate's lease expiry measured on a fast clock. (The clocks' offsets do not matter: every
    candidate only compares its own readings.)"""
    return t.renew_deadline / (1 - drift) < t.lease_seconds / (1 + drift)


@dataclass(frozen=True)
class LeaseRecord:
    """The fields of a Lease's spec that leader election uses."""

    holder: str = ""
    """``holderIdentity``; empty when nobody holds the Lease (never acquired, or released)."""
    lease_seconds: int = 0
    acquire_time: str | None = None
    renew_time: str | None = None
    transitions: int = 0

    @classmethod
    def from_spec(cls, spec: dict[str, object] | None) -> LeaseRecord:
        spec = spec or {}
        duration, transitions = spec.get("leaseDurationSeconds"), spec.get("leaseTransitions")
        acquire, renew = spec.get("acquireTime"), spec.get("renewTime")
        return cls(holder=str(spec.get("holderIdentity") or ""),
                   lease_seconds=duration if isinstance(duration, int) else 0,
                   acquire_time=acquire if isinstance(acquire, str) else None,
                   renew_time=renew if isinstance(renew, str) else None,
                   transitions=transitions if isinstance(transitions, int) else 0)

    def to_spec(self) -> dict[str, object]:
        return {"holderIdentity": self.holder or None, "leaseDurationSeconds": self.lease_seconds,
                "acquireTime": self.acquire_time, "renewTime": self.renew_time, "leaseTransitions": self.transitions}


@dataclass(frozen=True)
class Observation:
    """A Lease as one candidate has seen it: its record, its version, and when (on the candidate's own
    monotonic clock) that version was first seen."""

    record: LeaseRecord
    version: str
    seen_at: float

    def expires_at(self) -> float:
        """When the holder is considered gone if the Lease does not change until then."""
        return self.seen_at + self.record.lease_seconds


def observe(previous: Observation | None, record: LeaseRecord, version: str, now: float) -> Observation:
    """The observation after reading ``record`` at ``version``: ``seen_at`` moves only when the version changed."""
    if previous is not None and previous.version == version:
        return previous
    return Observation(record, version, now)


class Action(enum.Enum):
    CREATE = "create"
    """No Lease yet: create it, holding it."""
    ACQUIRE = "acquire"
    """Released or expired: take it over (update at the version read)."""
    RENEW = "renew"
    """Held by me: renew it (update at the version read)."""
    WAIT = "wait"
    """Held by someone else whose lease has not expired: try again in a retry period."""
    LOST = "lost"
    """I was leading but the Lease now names someone else: stop acting at once."""


@dataclass(frozen=True)
class Decision:
    action: Action
    record: LeaseRecord | None = None
    """What to write for CREATE / ACQUIRE / RENEW."""
    reason: str = ""


def micro_time(wall: datetime) -> str:
    """A Kubernetes MicroTime (RFC 3339, microseconds, UTC)."""
    return wall.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def decide(observed: Observation | None, me: str, now: float, wall: datetime, timing: Timing, *,
           leading: bool) -> Decision:
    """What candidate ``me`` does given its latest observation (None: the Lease does not exist).

    ``leading``: ``me`` currently believes it leads (acquired, and not past its renew deadline).
    """
    stamp = micro_time(wall)
    mine = LeaseRecord(holder=me, lease_seconds=timing.lease_seconds, acquire_time=stamp, renew_time=stamp)
    if observed is None:
        if leading:
            return Decision(Action.LOST, reason="the Lease was deleted")
        return Decision(Action.CREATE, mine, "no Lease yet")
    current = observed.record
    if current.holder == me:
        return Decision(Action.RENEW, replace(current, lease_seconds=timing.lease_seconds, renew_time=stamp,
                                              acquire_time=current.acquire_time or stamp), "held by me")
    if leading:
        return Decision(Action.LOST, reason=f"the Lease is now held by {current.holder or 'nobody'}")
    taken_over = replace(mine, transitions=current.transitions + 1)
    if not current.holder:
        return Decision(Action.ACQUIRE, taken_over, "the Lease was released")
    if now >= observed.expires_at():
        return Decision(Action.ACQUIRE, taken_over,
                        f"{current.holder} did not renew for {current.lease_seconds}s")
    return Decision(Action.WAIT, reason=f"held by {current.holder} for at least {observed.expires_at() - now:.1f}s")


def still_leading(renewed_at: float | None, now: float, timing: Timing) -> bool:
    """Whether a leader whose last successful acquire/renew *started* at ``renewed_at`` may still act at ``now``."""
    return renewed_at is not None and now - renewed_at < timing.renew_deadline


def released(record: LeaseRecord, wall: datetime) -> LeaseRecord:
    """The record a leader writes on a graceful stop: nobody holds it, so a candidate takes it at once."""
    stamp = micro_time(wall)
    return replace(record, holder="", lease_seconds=RELEASED_LEASE_SECONDS, acquire_time=stamp, renew_time=stamp)
