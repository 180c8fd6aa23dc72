"""Leader election: the pure decisions (core/lease.py), the elector's round against an in-memory Lease store, and a
property: under any interleaving, lost or unanswered requests and clocks that run at slightly different rates,
two candidates never believe they lead at the same instant."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from modelrollout.core.lease import (
    Action,
    LeaseRecord,
    Observation,
    Timing,
    decide,
    micro_time,
    observe,
    released,
    safe_under_drift,
    still_leading,
    timing_problems,
)
from modelrollout.leader import LeaderElector, LeadershipLost, seconds

T = Timing(lease_duration=15, renew_deadline=10, retry_period=2)
WALL = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def held(holder: str, version: str = "1", seen_at: float = 0.0, transitions: int = 0) -> Observation:
    return Observation(LeaseRecord(holder, 15, "a", "r", transitions), version, seen_at)


# ------------------------------------------------------------------------------------------------ decisions


def test_timing_constraints() -> None:
    assert not timing_problems(T)
    with pytest.raises(ValueError, match="lease duration"):
        Timing(10, 10, 2)
    with pytest.raises(ValueError, match="renew deadline"):
        Timing(15, 2, 2)
    with pytest.raises(ValueError, match="retry period must be positive"):
        Timing(15, 10, 0)
    assert Timing(2.5, 2, 0.5).lease_seconds == 3
    assert safe_under_drift(T, 0.01) and not safe_under_drift(Timing(11, 10.9, 2), 0.05)


def test_no_lease_is_created_holding_it() -> None:
    d = decide(None, "me", 0.0, WALL, T, leading=False)
    assert d.action is Action.CREATE
    assert d.record == LeaseRecord("me", 15, "2025-01-02T03:04:05.678901Z", "2025-01-02T03:04:05.678901Z", 0)
    assert d.record.to_spec()["holderIdentity"] == "me"


def test_held_by_me_is_renewed_keeping_the_acquire_time() -> None:
    d = decide(held("me"), "me", 100.0, WALL, T, leading=True)
    assert d.action is Action.RENEW and d.record is not None
    assert d.record.acquire_time == "a" and d.record.renew_time == micro_time(WALL) and d.record.transitions == 0
    # a restarted process with the same identity (same pod) picks its own Lease up at once
    assert decide(held("me"), "me", 0.0, WALL, T, leading=False).action is Action.RENEW


def test_someone_elses_lease_is_taken_only_after_it_did_not_change_for_its_duration() -> None:
    obs = held("other", seen_at=100.0, transitions=3)
    assert decide(obs, "me", 100.0, WALL, T, leading=False).action is Action.WAIT
    assert decide(obs, "me", 114.999, WALL, T, leading=False).action is Action.WAIT
    d = decide(obs, "me", 115.0, WALL, T, leading=False)
    assert d.action is Action.ACQUIRE and d.record is not None
    assert d.record.holder == "me" and d.record.transitions == 4 and d.record.acquire_time == micro_time(WALL)


def test_a_released_lease_is_taken_at_once() -> None:
    rel = released(LeaseRecord("other", 15, "a", "r", 3), WALL)
    assert rel.holder == "" and rel.lease_seconds == 1 and rel.transitions == 3
    assert rel.to_spec()["holderIdentity"] is None
    d = decide(Observation(rel, "9", 50.0), "me", 50.0, WALL, T, leading=False)
    assert d.action is Action.ACQUIRE and d.record is not None and d.record.transitions == 4


def test_a_leader_that_sees_another_holder_or_no_lease_has_lost() -> None:
    assert decide(held("other"), "me", 0.0, WALL, T, leading=True).action is Action.LOST
    assert decide(held(""), "me", 0.0, WALL, T, leading=True).action is Action.LOST
    assert decide(None, "me", 0.0, WALL, T, leading=True).action is Action.LOST


def test_observation_time_moves_only_when_the_version_changes() -> None:
    rec = LeaseRecord("other", 15)
    first = observe(None, rec, "1", 10.0)
    assert observe(first, rec, "1", 20.0) is first  # unchanged for 10 s: still seen at 10
    assert observe(first, rec, "2", 20.0).seen_at == 20.0


def test_leading_ends_at_the_renew_deadline_after_the_renewal_started() -> None:
    assert still_leading(100.0, 109.999, T) and not still_leading(100.0, 110.0, T)
    assert not still_leading(None, 0.0, T)


def test_record_round_trips_through_the_lease_spec() -> None:
    rec = LeaseRecord("me", 15, "2025-01-02T03:04:05.000000Z", "2025-01-02T03:04:06.000000Z", 2)
    assert LeaseRecord.from_spec(rec.to_spec()) == rec
    assert LeaseRecord.from_spec(None) == LeaseRecord()


def test_durations_on_the_command_line() -> None:
    assert seconds("15s") == 15 and seconds("2.5") == 2.5 and seconds("500ms") == 0.5 and seconds("1m") == 60
    with pytest.raises(ValueError):
        seconds("soon")


# ------------------------------------------------------------------------------------ the elector's round


@dataclass
class MemoryStore:
    """A Lease store with the apiserver's optimistic concurrency (create fails if present, update at a version)."""

    record: LeaseRecord | None = None
    version: int = 0
    fail: bool = False
    writes: list[tuple[str, LeaseRecord]] = field(default_factory=list)

    def read(self) -> tuple[LeaseRecord, str] | None:
        if self.fail:
            raise ConnectionError("apiserver unreachable")
        return None if self.record is None else (self.record, str(self.version))

    def create(self, record: LeaseRecord) -> str | None:
        if self.record is not None:
            return None
        return self._store("create", record)

    def update(self, record: LeaseRecord, version: str) -> str | None:
        if self.record is None or str(self.version) != version:
            return None
        return self._store("update", record)

    def _store(self, verb: str, record: LeaseRecord) -> str:
        self.record, self.version = record, self.version + 1
        self.writes.append((verb, record))
        return str(self.version)


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


def elector(store: MemoryStore, name: str, clock: Clock, lost: list[str]) -> LeaderElector:
    return LeaderElector(store, name, T, clock=clock, wall=lambda: WALL, on_lost=lost.append)


def test_one_candidate_leads_the_other_waits_then_takes_over_a_silent_leader() -> None:
    store, clock, lost = MemoryStore(), Clock(), list[str]()
    a, b = elector(store, "a", clock, lost), elector(store, "b", clock, lost)
    assert a.attempt() is Action.CREATE and a.leading
    assert b.attempt() is Action.WAIT and not b.leading
    clock.now += 2
    assert a.attempt() is Action.RENEW  # renewal: a new version, which b sees at its next look
    clock.now += 1
    assert b.attempt() is Action.WAIT  # first sight of that version, at 1003
    clock.now += 14  # a stopped renewing; 1017 < 1003 + 15
    assert not a.leading, "a is past its renew deadline (1002 + 10) long before b may take over"
    assert b.attempt() is Action.WAIT
    clock.now += 1
    assert b.attempt() is Action.ACQUIRE and b.leading
    assert store.record is not None and store.record.holder == "b" and store.record.transitions == 1
    # a comes back (its watchdog would have ended the process already): it sees b and has lost
    assert a.attempt() is Action.LOST and lost == ["the Lease is now held by b"]


def test_two_candidates_deciding_together_cannot_both_win() -> None:
    store, clock, lost = MemoryStore(), Clock(), list[str]()
    store._store("create", LeaseRecord("gone", 15, "x", "x"))
    a, b = elector(store, "a", clock, lost), elector(store, "b", clock, lost)
    assert a.attempt() is Action.WAIT and b.attempt() is Action.WAIT
    clock.now += 15
    # both read version 1 and decide to take over; b's update at version 1 loses to a's
    first_read = store.read()
    assert first_read is not None
    assert a.attempt() is Action.ACQUIRE
    assert store.update(LeaseRecord("b", 15), first_read[1]) is None
    assert b.attempt() is Action.WAIT and not b.leading


def test_failed_requests_do_not_count_as_renewals_and_release_hands_over_at_once() -> None:
    store, clock, lost = MemoryStore(), Clock(), list[str]()
    a, b = elector(store, "a", clock, lost), elector(store, "b", clock, lost)
    assert a.attempt() is Action.CREATE
    store.fail = True
    clock.now += 5
    assert a.attempt() is None and "unreachable" in a.last_error
    assert a.renewed_at == 1000.0
    store.fail = False
    assert b.attempt() is Action.WAIT
    assert a.release() and store.record is not None and store.record.holder == ""
    assert not a.leading
    assert b.attempt() is Action.ACQUIRE, "a released Lease is taken without waiting for its duration"
    assert not a.release(), "only the holder releases"


# ---------------------------------------------------------------------------------------------- property


@dataclass
class Candidate:
    name: str
    rate: float
    offset: float
    observed: Observation | None = None
    renewed_at: float | None = None
    pending: tuple[LeaseRecord, str | None, float] | None = None
    beliefs: list[tuple[float, float]] = field(default_factory=list)

    def local(self, true_time: float) -> float:
        return self.offset + self.rate * true_time

    def true(self, local_time: float) -> float:
        return (local_time - self.offset) / self.rate

    def restart(self) -> None:
        self.observed, self.renewed_at, self.pending = None, None, None


EVENT = st.tuples(st.floats(0, 3), st.integers(0, 2), st.sampled_from(["ok", "ok", "ok", "lost", "unanswered"]))


@settings(max_examples=400, deadline=None)
@given(retry=st.floats(0.1, 2), extra=st.floats(0.01, 5), margin=st.floats(0, 5), drift=st.floats(0, 0.05),
       rates=st.lists(st.floats(-1, 1), min_size=3, max_size=3),
       offsets=st.lists(st.floats(-1e6, 1e6), min_size=3, max_size=3), events=st.lists(EVENT, max_size=200))
def test_never_two_leaders_at_once(retry: float, extra: float, margin: float, drift: float, rates: list[float],
                                   offsets: list[float], events: list[tuple[float, int, str]]) -> None:
    """Three candidates share a store with optimistic concurrency; each step one of them reads (and decides) or
    sends the write it decided on, which may be lost or applied without an answer. A candidate believes it leads
    from a successful write's answer until its own clock reaches the start of that round + the renew deadline
    (then its watchdog ends the process: it restarts with the same identity). No two beliefs overlap in real time.
    """
    timing = Timing(lease_duration=retry + extra + margin + 0.01, renew_deadline=retry + extra, retry_period=retry)
    assume(safe_under_drift(timing, drift))
    cands = [Candidate(f"c{i}", 1 + drift * r, o) for i, (r, o) in enumerate(zip(rates, offsets, strict=True))]
    store = MemoryStore()
    now = 0.0
    for dt, who, fault in events:
        now += dt
        c = cands[who]
        local = c.local(now)
        if c.renewed_at is not None and not still_leading(c.renewed_at, local, timing):
            c.restart()  # the watchdog ended the process at the deadline
        if c.pending is None:
            current = store.read()
            c.observed = None if current is None else observe(c.observed, current[0], current[1], local)
            d = decide(c.observed, c.name, local, WALL, timing, leading=c.renewed_at is not None)
            if d.action is Action.LOST:
                c.restart()
            elif d.record is not None:
                c.pending = (d.record, None if c.observed is None else c.observed.version, local)
            continue
        record, version, started = c.pending
        c.pending = None
        if fault == "lost":
            continue
        new = store.create(record) if version is None else store.update(record, version)
        if new is None or fault == "unanswered":
            continue
        c.observed = Observation(record, new, local)
        c.renewed_at = started
        c.beliefs.append((now, c.true(started + timing.renew_deadline)))
    for i, a in enumerate(cands):
        for b in cands[i + 1:]:
            for a_start, a_end in a.beliefs:
                for b_start, b_end in b.beliefs:
                    assert not (a_start < b_end and b_start < a_end), (a.name, (a_start, a_end), b.name,
                                                                       (b_start, b_end))


def test_the_property_is_not_vacuous_a_silent_leader_is_replaced() -> None:
    """The same simulation, written out: c0 leads, goes silent, c1 takes over after the lease duration."""
    timing = Timing(3, 2, 0.5)
    store = MemoryStore()
    c0, c1 = (LeaderElector(store, n, timing, clock=Clock(0.0), wall=lambda: WALL, on_lost=print)
              for n in ("c0", "c1"))
    assert c0.attempt() is Action.CREATE
    assert c1.attempt() is Action.WAIT
    assert isinstance(c1.clock, Clock)
    c1.clock.now = 3.0
    assert c1.attempt() is Action.ACQUIRE and [v for v, _ in store.writes] == ["create", "update"]


def test_the_watchdog_gives_up_at_the_renew_deadline_when_renewals_fail() -> None:
    """The threads with a real clock and short durations; waiting is on the condition, with a deadline."""
    from devenv.localenv.procs import wait_until

    store, lost = MemoryStore(), list[str]()
    timing = Timing(lease_duration=2, renew_deadline=1.5, retry_period=0.05)
    e = LeaderElector(store, "a", timing, on_lost=lost.append)
    assert e.attempt() is Action.CREATE
    e.start_renewing()
    try:
        wait_until(lambda: store.version >= 3, 10, 0.01, what="two renewals")
        assert not lost
        store.fail = True
        wait_until(lambda: bool(lost), 10, 0.01, what="the watchdog")
        assert "within the renew deadline (1.5s)" in lost[0] and "unreachable" in lost[0]
    finally:
        e.stop_renewing()
    assert all(not t.is_alive() for t in e._threads)


def test_the_write_fence_passes_a_renewed_leader_and_ends_one_past_its_renew_deadline() -> None:
    """The fence every write of the operator asks first: after a pause of the whole process, the reconcile that
    wakes first must not write for a leader whose renew deadline has passed (the watchdog may not have run yet)."""
    store, clock, lost = MemoryStore(), Clock(), list[str]()
    a = elector(store, "a", clock, lost)
    assert a.attempt() is Action.CREATE
    clock.now += T.renew_deadline - 0.001
    a.fence()  # still within the renew deadline: the write goes ahead
    assert lost == []
    clock.now += 0.001
    with pytest.raises(LeadershipLost):
        a.fence()
    assert len(lost) == 1 and "when a write was about to be sent" in lost[0]


def test_a_fenced_client_asks_the_fence_before_every_write_and_never_before_a_read() -> None:
    from kubernetes import client

    from modelrollout.kube import FencedClient

    asked: list[str] = []

    class Refused(Exception):
        pass

    def fence() -> None:
        asked.append("fence")
        raise Refused

    api = FencedClient(client.Configuration(host="http://127.0.0.1:9"), fence)
    for method in ("POST", "PUT", "PATCH", "DELETE", "patch"):
        with pytest.raises(Refused):
            api.call_api(method, "http://127.0.0.1:9/api/v1/namespaces/ns/pods/x")
    assert asked == ["fence"] * 5
    with pytest.raises(Exception) as got:  # a read is sent (nothing listens on port 9): no fence asked
        api.call_api("GET", "http://127.0.0.1:9/api/v1/namespaces/ns/pods/x", _request_timeout=0.5)
    assert not isinstance(got.value, Refused) and asked == ["fence"] * 5
