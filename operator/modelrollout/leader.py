"""Leader election for ``modelrollout run --leader-elect`` (I/O): several replicas, exactly one acts.

The replicas compete for one ``coordination.k8s.io/v1`` Lease (default ``modelrollout-leader`` in the
operator's namespace), as client-go's leader election does; :mod:`modelrollout.core.lease` makes every
decision, this module reads and writes the Lease and runs the process around it:

1. **Standby.** Every retry period: read the Lease, decide, and create it or take it over (update at the
   resourceVersion read, so of two candidates only one can win) when it is missing, released, or was not
   renewed for its lease duration. Meanwhile a tiny HTTP server answers the liveness/readiness URL
   (``--liveness``), so a standby pod is live and ready.
2. **Leader.** The health server stops and kopf starts in this process (it serves the same URL). A thread
   renews the Lease every retry period; a watchdog thread ends the process at once with exit code 1 if no
   renewal succeeded within the renew deadline, or as soon as the Lease names someone else: the leader never
   keeps reconciling without the Lease. The pod restarts and becomes a candidate again.
3. **Graceful stop** (SIGTERM/SIGINT). kopf stops its handlers, the reconciles still running finish, and the
   Lease is released (``holderIdentity`` cleared), so a standby takes over within one retry period.

Permissions: ``get``, ``create`` and ``update`` on ``leases`` in the Lease's namespace; nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from prometheus_client import Gauge

from modelrollout.core.lease import (
    Action,
    LeaseRecord,
    Observation,
    Timing,
    decide,
    observe,
    released,
    still_leading,
)
from modelrollout.durations import parse_duration

if TYPE_CHECKING:
    from modelrollout.kube import Leases

log = logging.getLogger("modelrollout.leader")

LEADING = Gauge("modelrollout_leader_election_leading", "1 while this replica holds the leader Lease, else 0")

DEFAULT_LEASE_NAME = "modelrollout-leader"
DEFAULT_TIMING = Timing(lease_duration=15.0, renew_deadline=10.0, retry_period=2.0)
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
EXIT_LOST = 1
"""Exit code of a leader that lost (or could not renew) the Lease."""

Clock = Callable[[], float]
WallClock = Callable[[], datetime]
Operator = Callable[["asyncio.Future[None]", Callable[[], None]], Coroutine[Any, Any, None]]
"""Starts kopf (``kopf.operator(..., stop_flag=flag)``) and returns when it has stopped; the second argument is the
fence every write of the cluster must pass (``LeaderElector.fence``)."""


def seconds(text: str) -> float:
    """A command-line duration: ``15s``, ``1m``, ``500ms`` or plain seconds (``2.5``)."""
    try:
        return float(text)
    except ValueError:
        return parse_duration(text).total_seconds()


def default_identity() -> str:
    """POD_NAME (the downward API in the chart), else hostname_pid. Must be unique among the candidates."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}_{os.getpid()}"


def default_namespace() -> str:
    """POD_NAMESPACE, else the namespace of the pod's ServiceAccount, else ``default``."""
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    with contextlib.suppress(OSError):
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "default"
    return "default"


def utcnow() -> datetime:
    return datetime.now(UTC)


# ---------------------------------------------------------------------------------------------- the Lease


class LeaseStore:
    """Reads and conditionally writes one Lease (raw JSON, so times stay the strings the apiserver sent)."""

    def __init__(self, leases: Leases, namespace: str, name: str, timeout: float) -> None:
        self.leases = leases
        self.namespace, self.name, self.timeout = namespace, name, timeout

    @classmethod
    def connect(cls, namespace: str, name: str, timeout: float) -> LeaseStore:
        """Its own API client (and connection pool), so a busy operator cannot starve the renewals."""
        from modelrollout.kube import Leases

        return cls(Leases.connect(), namespace, name, timeout)

    def read(self) -> tuple[LeaseRecord, str] | None:
        """The Lease's record and resourceVersion; None when there is no Lease."""
        body = self.leases.read(self.namespace, self.name, self.timeout)
        if body is None:
            return None
        return LeaseRecord.from_spec(body.get("spec")), str(body["metadata"]["resourceVersion"])

    def create(self, record: LeaseRecord) -> str | None:
        """Create the Lease; its resourceVersion, or None when it exists already (someone was faster)."""
        return _version(self.leases.create(self._body(record, None), self.timeout))

    def update(self, record: LeaseRecord, version: str) -> str | None:
        """Replace the Lease if it is still at ``version``; the new resourceVersion, or None on a conflict."""
        return _version(self.leases.replace(self._body(record, version), self.timeout))

    def _body(self, record: LeaseRecord, version: str | None) -> dict[str, Any]:
        metadata: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if version is not None:
            metadata["resourceVersion"] = version
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata,
                "spec": record.to_spec()}


def _version(written: dict[str, Any] | None) -> str | None:
    return None if written is None else str(written["metadata"]["resourceVersion"])


class Store(Protocol):
    """What :class:`LeaderElector` needs of a Lease store (LeaseStore; an in-memory one in unit tests)."""

    def read(self) -> tuple[LeaseRecord, str] | None: ...
    def create(self, record: LeaseRecord) -> str | None: ...
    def update(self, record: LeaseRecord, version: str) -> str | None: ...


# ------------------------------------------------------------------------------------------------ elector


class LeaderElector:
    """One candidate. :meth:`attempt` is one round (read, decide, write); the loops and threads call it."""

    def __init__(self, store: Store, identity: str, timing: Timing, *, clock: Clock = time.monotonic,
                 wall: WallClock = utcnow, on_lost: Callable[[str], None] | None = None) -> None:
        self.store, self.identity, self.timing = store, identity, timing
        self.clock, self.wall = clock, wall
        self.on_lost = on_lost or exit_now
        self.observed: Observation | None = None
        self.renewed_at: float | None = None
        """Monotonic time at which the last successful acquire/renew round started (None: not leading)."""
        self.last_error = ""
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    @property
    def leading(self) -> bool:
        return still_leading(self.renewed_at, self.clock(), self.timing)

    def fence(self) -> None:
        """Called before every write of the operator: a leader past its renew deadline ends (``on_lost``) instead
        of writing. The watchdog thread does the same, but after a pause of the whole process (SIGSTOP, a frozen
        VM) a reconcile may run before the watchdog is scheduled; this check is on the writing thread itself."""
        if not self.leading:
            self.on_lost(f"no renewal of Lease {self._where()} within the renew deadline "
                         f"({self.timing.renew_deadline}s) when a write was about to be sent")
            raise LeadershipLost(self.identity)

    def describe(self) -> dict[str, object]:
        holder = self.observed.record.holder if self.observed is not None else ""
        return {"identity": self.identity, "leader": self.leading, "holder": holder, "error": self.last_error}

    def attempt(self) -> Action | None:
        """One round; the action taken (None when a request failed: it counts as not renewed)."""
        with self._lock:
            started = self.clock()
            try:
                action = self._round(started)
            except Exception as exc:  # the apiserver unreachable, a 5xx, a timeout: try again next period
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("leader election: Lease %s not read/written: %s", self._where(), self.last_error)
                return None
            self.last_error = ""
            return action

    def _round(self, started: float) -> Action | None:
        current = self.store.read()
        if current is None:
            self.observed = None
        else:
            self.observed = observe(self.observed, current[0], current[1], self.clock())
        decision = decide(self.observed, self.identity, self.clock(), self.wall(), self.timing,
                          leading=self.renewed_at is not None)
        if decision.action in (Action.WAIT, Action.LOST):
            if decision.action is Action.LOST:
                self.on_lost(decision.reason)
            return decision.action
        assert decision.record is not None
        if decision.action is Action.CREATE:
            version = self.store.create(decision.record)
        else:
            assert self.observed is not None
            version = self.store.update(decision.record, self.observed.version)
        if version is None:
            log.info("leader election: conflict on Lease %s (another candidate wrote it first)", self._where())
            return None
        self.observed = Observation(decision.record, version, self.clock())
        if self.renewed_at is None:
            log.info("leader election: %s leads (Lease %s: %s)", self.identity, self._where(), decision.reason)
        self.renewed_at = started
        LEADING.set(1)
        return decision.action

    def _where(self) -> str:
        store = self.store
        return f"{getattr(store, 'namespace', '?')}/{getattr(store, 'name', '?')}"

    # ----------------------------------------------------------------------------------------- loops

    def acquire(self, stop: threading.Event) -> bool:
        """Try every retry period until this candidate leads (True) or ``stop`` is set (False)."""
        LEADING.set(0)
        log.info("leader election: %s is a candidate for Lease %s", self.identity, self._where())
        while not stop.is_set():
            if self.attempt() in (Action.CREATE, Action.ACQUIRE, Action.RENEW):
                return True
            stop.wait(self.timing.retry_period)
        return False

    def start_renewing(self) -> None:
        """Renew every retry period in a thread; a watchdog thread calls ``on_lost`` past the renew deadline."""
        for target, name in ((self._renew_loop, "lease-renew"), (self._watchdog, "lease-watchdog")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.timing.retry_period):
            self.attempt()

    def _watchdog(self) -> None:
        while not self._stop.is_set():
            renewed_at = self.renewed_at
            remaining = (renewed_at + self.timing.renew_deadline - self.clock()) if renewed_at is not None else 0.0
            if remaining <= 0:
                self.on_lost(f"no renewal of Lease {self._where()} within the renew deadline "
                             f"({self.timing.renew_deadline}s): {self.last_error or 'no answer'}")
                return
            self._stop.wait(remaining)

    def stop_renewing(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timing.renew_deadline)

    def release(self) -> bool:
        """Stop renewing and, if this candidate still leads, give the Lease up so a standby takes it at once."""
        self.stop_renewing()
        if not self.leading:
            return False
        with self._lock:
            try:
                current = self.store.read()
                if current is None or current[0].holder != self.identity:
                    return False
                done = self.store.update(released(current[0], self.wall()), current[1]) is not None
            except Exception as exc:
                log.warning("leader election: could not release Lease %s: %s", self._where(), exc)
                return False
            self.renewed_at = None
            LEADING.set(0)
        log.info("leader election: %s released Lease %s", self.identity, self._where())
        return done


class LeadershipLost(Exception):
    """Raised by :meth:`LeaderElector.fence` when ``on_lost`` returned (it ends the process in the operator)."""


def exit_now(reason: str) -> None:
    """Leadership lost: end the process at once (no graceful stop: that would keep reconciling meanwhile)."""
    LEADING.set(0)
    log.critical("leader election: lost the lead: %s; exiting with code %d", reason, EXIT_LOST)
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    os._exit(EXIT_LOST)


# ------------------------------------------------------------------------------------------------- health


class HealthServer:
    """Answers ``GET <path>`` with 200 on the liveness URL while this replica is a standby (kopf, which serves
    the same URL when leading, is not running yet)."""

    def __init__(self, url: str, status: Callable[[], dict[str, object]]) -> None:
        parts = urlsplit(url)
        if parts.port is None:
            raise ValueError(f"--liveness {url!r}: no port")
        path = parts.path or "/"

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if urlsplit(self.path).path != path:
                    self.send_error(404)
                    return
                body = json.dumps({"standby": True, **status()}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((parts.hostname or "0.0.0.0", parts.port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="standby-health", daemon=True)

    def start(self) -> HealthServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


# -------------------------------------------------------------------------------------------------- run


@dataclass(frozen=True)
class Election:
    namespace: str
    lease_name: str
    identity: str
    timing: Timing

    def request_timeout(self) -> float:
        """Per request: long enough for a slow apiserver, short enough to notice the renew deadline."""
        return min(max(self.timing.retry_period, 1.0), self.timing.renew_deadline)


def run_elected(election: Election, operator: Operator, liveness: str = "") -> int:
    """Wait to lead, then run ``operator`` while renewing the Lease; release it after a graceful stop."""
    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("leader election: signal %d, stopping", signum)
        stopping.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    store = LeaseStore.connect(election.namespace, election.lease_name, election.request_timeout())
    elector = LeaderElector(store, election.identity, election.timing)
    health = HealthServer(liveness, elector.describe).start() if liveness else None
    try:
        if not elector.acquire(stopping):
            log.info("leader election: stopped while standing by")
            return 0
    finally:
        if health is not None:
            health.stop()
    elector.start_renewing()
    try:
        asyncio.run(_lead(operator, stopping, elector.fence))
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):  # asyncio put the defaults back: do not die mid-release
            signal.signal(sig, on_signal)
        elector.release()
    return 0


async def _lead(operator: Operator, stopping: threading.Event, fence: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    flag: asyncio.Future[None] = loop.create_future()

    def request_stop() -> None:
        if not flag.done():
            flag.set_result(None)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, request_stop)
    if stopping.is_set():  # a signal arrived between acquiring and now
        return
    await operator(flag, fence)
