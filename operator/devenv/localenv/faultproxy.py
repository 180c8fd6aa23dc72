"""An HTTP fault-injection proxy between a client (the operator) and the local kube-apiserver.

The proxy listens on plain ``http://127.0.0.1:PORT`` and forwards every request to the https apiserver,
presenting its own client certificate, so the client gets a kubeconfig whose server is the proxy
(:func:`proxy_kubeconfig`). Requests and responses pass through byte-exact (bodies are not decoded, not
even gzip); watch responses are streamed chunk by chunk as the apiserver sends them.

Faults are :class:`Rule` objects the test adds and removes at any time (the proxy runs its own event loop
in a background thread; rules and counters are guarded by a lock). A rule matches by method, a path
regex, watch or not, and optionally the client's User-Agent; it acts on the next ``times`` matching
requests, or on a ``fraction`` of them drawn from a seeded RNG, by one of:

- :class:`Respond`: answer instead of the apiserver (409 Conflict, 429 with Retry-After, 500, ...) with a
  real ``metav1.Status`` body (:func:`conflict`, :func:`too_many_requests`, :func:`server_error`);
- :class:`Delay`: hold the request that many seconds, then forward it;
- :class:`CutWatch`: end a watch stream after N events or S seconds (cleanly, as an apiserver timeout
  does, or by resetting the connection mid-stream). It applies to watches that begin while the rule is
  there and to those already open (long watches outlive a test's setup).

Every request is recorded (:attr:`FaultProxy.requests`) and every rule counts what it matched and how
many faults it injected, so a test can assert the fault really happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from aiohttp import ClientSession, ClientTimeout, TCPConnector, web
from multidict import CIMultiDict

from devenv.localenv.controlplane import ControlPlane, _make_cert
from devenv.localenv.procs import LOCALHOST, free_port

# Hop-by-hop headers (RFC 9110 §7.6.1) and the ones aiohttp sets itself from the body it sends.
_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te",
                  "trailer", "transfer-encoding", "upgrade", "content-length", "host"})
CUT_POLL = 0.25
"""How often an open watch looks for a CutWatch rule added after it began (seconds)."""
PROXY_USER = "modelrollout-operator"
"""The user the proxy authenticates as (client certificate CN, group system:masters)."""


# ------------------------------------------------------------------------------------------------ actions


@dataclass(frozen=True)
class Respond:
    """Answer with this status, body and headers instead of forwarding."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    forward: bool = False
    """Forward the request first and drop the real answer: the write lands, the client sees a failure."""


@dataclass(frozen=True)
class Delay:
    """Wait ``seconds`` before forwarding."""

    seconds: float


@dataclass(frozen=True)
class CutWatch:
    """End a watch stream after ``events`` events or ``seconds`` seconds, whichever comes first.

    ``abort``: reset the connection (no terminating chunk: the client sees a broken stream) instead of
    ending the response cleanly (the client sees the watch end, as at an apiserver timeout).
    """

    events: int | None = None
    seconds: float | None = None
    abort: bool = False


Action = Respond | Delay | CutWatch


def status_body(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> bytes:
    """A ``metav1.Status`` failure as the apiserver sends it."""
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "message": message, "reason": reason, "code": code}
    if details:
        body["details"] = details
    return json.dumps(body).encode()


def conflict(resource: str = "object", name: str = "") -> Respond:
    """409 Conflict, the answer to a write based on a stale resourceVersion."""
    message = (f'Operation cannot be fulfilled on {resource} "{name}": the object has been modified; '
               "please apply your changes to the latest version and try again")
    return Respond(409, status_body(409, "Conflict", message, {"name": name, "kind": resource}),
                   (("Content-Type", "application/json"),))


def too_many_requests(retry_after: int) -> Respond:
    """429 with Retry-After, as API Priority and Fairness answers when a flow's queue is full."""
    message = "Too many requests, please try again later."
    return Respond(429, status_body(429, "TooManyRequests", message, {"retryAfterSeconds": retry_after}),
                   (("Content-Type", "application/json"), ("Retry-After", str(retry_after))))


def server_error(message: str = "injected: etcdserver: request timed out", *, forward: bool = False) -> Respond:
    """500 Internal Server Error (``forward``: after the request reached the apiserver: a lost answer)."""
    return Respond(500, status_body(500, "InternalError", message), (("Content-Type", "application/json"),),
                   forward)


# -------------------------------------------------------------------------------------------------- rules


@dataclass
class Rule:
    """Which requests to disturb and how. ``times`` (next K matches) or ``fraction`` (seeded), else all."""

    action: Action
    path: str = ""
    """A regex searched in the request path (no query)."""
    method: str | None = None
    """A regex fully matching the method (``PATCH``, ``PUT|PATCH|POST|DELETE``), or any."""
    watch: bool | None = None
    """Only watches (True), only non-watches (False), or both (None)."""
    agent: str | None = None
    """A regex searched in the User-Agent (``kopf``, ``OpenAPI-Generator``: the operator's two clients)."""
    times: int | None = None
    fraction: float | None = None
    seed: int = 0
    matched: int = 0
    """Requests that matched the rule."""
    injected: int = 0
    """Faults injected (matched requests the rule acted on)."""
    injected_at: list[float] = field(default_factory=list)
    """time.monotonic() of each injection."""
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._path = re.compile(self.path)
        self._method = re.compile(self.method) if self.method else None
        self._agent = re.compile(self.agent) if self.agent else None

    def matches(self, method: str, path: str, watch: bool, agent: str) -> bool:
        return ((self._method is None or self._method.fullmatch(method) is not None)
                and self._path.search(path) is not None
                and (self.watch is None or self.watch == watch)
                and (self._agent is None or self._agent.search(agent) is not None))

    def fires(self) -> bool:
        """Called for each match (under the proxy's lock): act on this one?"""
        self.matched += 1
        if self.times is not None and self.injected >= self.times:
            return False
        if self.fraction is not None and self._rng.random() >= self.fraction:
            return False
        self.injected += 1
        self.injected_at.append(time.monotonic())
        return True

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.injected >= self.times


@dataclass(frozen=True)
class Seen:
    """One request the proxy saw, recorded once answered (a watch: once its stream has ended)."""

    at: float
    """time.monotonic() when it arrived."""
    method: str
    path: str
    query: str
    watch: bool
    agent: str
    status: int
    """The status answered (0: no answer, the connection was cut before the response head)."""
    fault: str | None
    """The action taken, when a rule fired."""


def is_watch(path: str, query: str) -> bool:
    values = parse_qs(query).get("watch", [])
    return "/watch/" in path or any(v in ("true", "1") for v in values)


# -------------------------------------------------------------------------------------------------- proxy


class FaultProxy:
    """The proxy; :meth:`start` runs it in a daemon thread, :meth:`stop` ends it (and open watches)."""

    def __init__(self, upstream: str, *, tls: ssl.SSLContext | None = None, port: int = 0) -> None:
        """``upstream``: ``https://…`` with ``tls`` (CA and client certificate), or a plain ``http://…``."""
        self.upstream = upstream.rstrip("/")
        self.port = port or free_port()
        self._ssl = tls
        self._lock = threading.Lock()
        self._rules: list[Rule] = []
        self.requests: list[Seen] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._handlers: set[asyncio.Task[Any]] = set()

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    # -- rules ---------------------------------------------------------------------------------------------

    def add(self, rule: Rule) -> Rule:
        with self._lock:
            self._rules.append(rule)
        return rule

    def remove(self, rule: Rule) -> None:
        with self._lock:
            if rule in self._rules:
                self._rules.remove(rule)

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    @contextlib.contextmanager
    def fault(self, rule: Rule) -> Iterator[Rule]:
        """The rule active inside the ``with`` block."""
        self.add(rule)
        try:
            yield rule
        finally:
            self.remove(rule)

    def seen(self, method: str | None = None, path: str = "", watch: bool | None = None) -> list[Seen]:
        """Recorded requests matching (method regex fully, path regex searched, watch or not)."""
        m = re.compile(method) if method else None
        p = re.compile(path)
        with self._lock:
            reqs = list(self.requests)
        return [r for r in reqs if (m is None or m.fullmatch(r.method)) and p.search(r.path)
                and (watch is None or r.watch == watch)]

    def _pick(self, method: str, path: str, watch: bool, agent: str) -> Action | None:
        with self._lock:
            for rule in self._rules:
                if rule.matches(method, path, watch, agent) and rule.fires():
                    return rule.action
        return None

    def _record(self, seen: Seen) -> None:
        with self._lock:
            self.requests.append(seen)

    # -- lifecycle -----------------------------------------------------------------------------------------

    def start(self, timeout: float = 10) -> FaultProxy:
        self._thread = threading.Thread(target=self._run, name=f"faultproxy-{self.port}", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            raise TimeoutError(f"fault proxy on {self.url} did not start within {timeout}s")
        if self._error is not None:
            raise RuntimeError(f"fault proxy on {self.url} failed to start") from self._error
        return self

    def stop(self, timeout: float = 10) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)  # this thread's loop
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported by start() if it happens before the proxy listens
            self._error = exc
        finally:
            self._started.set()
            leftover = asyncio.all_tasks(loop)
            for task in leftover:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*leftover, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        connector = TCPConnector(ssl=self._ssl if self._ssl is not None else False, limit=0)
        async with ClientSession(connector=connector, auto_decompress=False,
                                 timeout=ClientTimeout(total=None, sock_connect=10)) as session:
            self._session = session
            app = web.Application(client_max_size=64 * 1024 * 1024)
            app.router.add_route("*", "/{tail:.*}", self._handle)
            runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
            await runner.setup()
            site = web.TCPSite(runner, LOCALHOST, self.port)
            await site.start()
            self._started.set()
            try:
                await self._stop.wait()
            finally:
                # Open watches never end on their own: cancel their handlers before the server goes.
                handlers = list(self._handlers)
                for task in handlers:
                    task.cancel()
                await asyncio.gather(*handlers, return_exceptions=True)
                await runner.cleanup()

    # -- one request ---------------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)
        path, query = request.raw_path.partition("?")[0], urlsplit(request.raw_path).query
        watch = is_watch(path, query)
        agent = request.headers.get("User-Agent", "")
        arrived = time.monotonic()
        action = self._pick(request.method, path, watch, agent)
        faults = [describe(action)] if action is not None else []
        status = 0
        try:
            if isinstance(action, Respond):
                if action.forward:
                    await self._forward(request, None, faults)
                else:
                    await request.read()
                status = action.status
                return web.Response(status=action.status, body=action.body, headers=dict(action.headers))
            if isinstance(action, Delay):
                await asyncio.sleep(action.seconds)
            cut = action if isinstance(action, CutWatch) else None
            response, status = await self._forward(request, (path, agent, cut) if watch else None, faults)
            return response
        finally:
            self._record(Seen(arrived, request.method, path, query, watch, agent, status,
                              ", ".join(faults) or None))

    async def _forward(self, request: web.Request, watch: tuple[str, str, CutWatch | None] | None,
                       faults: list[str]) -> tuple[web.StreamResponse, int]:
        headers = [(k, v) for k, v in request.headers.items()
                   if k.lower() not in _HOP and k.lower() != "authorization"]
        body = await request.read()
        async with self._session.request(request.method, self.upstream + request.raw_path, headers=headers,
                                         data=body if body else None, allow_redirects=False,
                                         skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type",
                                                            "Accept")) as up:
            out_headers = CIMultiDict((k, v) for k, v in up.headers.items() if k.lower() not in _HOP)
            if watch is None or up.status != 200:
                data = await up.read()
                return web.Response(status=up.status, body=data, headers=out_headers), up.status
            stream = web.StreamResponse(status=up.status, headers=out_headers)
            await stream.prepare(request)
            await self._pump(up, stream, request, watch, faults)
            return stream, up.status

    def _pick_cut(self, method: str, path: str, agent: str) -> CutWatch | None:
        """A CutWatch rule added while this watch was open, if one matches it and fires."""
        with self._lock:
            for rule in self._rules:
                if isinstance(rule.action, CutWatch) and rule.matches(method, path, True, agent) and rule.fires():
                    return rule.action
        return None

    async def _pump(self, up: Any, stream: web.StreamResponse, request: web.Request,
                    watch: tuple[str, str, CutWatch | None], faults: list[str]) -> None:
        """Copy a watch stream chunk by chunk. With a cut (given when the watch began, or picked up from a rule
        added while it is open: looked for every CUT_POLL seconds), stop after N events (newline-delimited
        JSON) or S seconds from then."""
        path, agent, cut = watch
        deadline: float | None = None
        events = 0
        while True:
            if cut is None:
                cut = self._pick_cut(request.method, path, agent)
                if cut is not None:
                    faults.append(describe(cut))
            if cut is not None and cut.seconds is not None and deadline is None:
                deadline = time.monotonic() + cut.seconds
            timeout = CUT_POLL if cut is None else None if deadline is None else max(deadline - time.monotonic(), 0)
            try:
                chunk = await asyncio.wait_for(up.content.readany(), timeout)
            except TimeoutError:
                if cut is None:
                    continue
                break
            if not chunk:
                await stream.write_eof()
                return
            if cut is not None and cut.events is not None:
                lines = chunk.count(b"\n")
                if events + lines >= cut.events:
                    end = 0
                    for _ in range(cut.events - events):
                        end = chunk.index(b"\n", end) + 1
                    await stream.write(chunk[:end])
                    break
                events += lines
            await stream.write(chunk)
        # The cut: the upstream watch is dropped either way.
        up.close()
        if cut is not None and cut.abort and request.transport is not None:
            request.transport.abort()
        else:
            await stream.write_eof()


def describe(action: Action) -> str:
    if isinstance(action, Respond):
        return f"Respond({action.status}{', after forwarding' if action.forward else ''})"
    if isinstance(action, Delay):
        return f"Delay({action.seconds:g}s)"
    return f"CutWatch(events={action.events}, seconds={action.seconds}, abort={action.abort})"


# --------------------------------------------------------------------------------------------- kubeconfig


def proxy_kubeconfig(path: Path, proxy_url: str) -> Path:
    """A kubeconfig whose server is the plain-http proxy. The token is a placeholder (clients want some
    credential); the proxy drops it and authenticates upstream with its own certificate."""
    cfg = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "faultproxy", "cluster": {"server": proxy_url}}],
        "users": [{"name": "faultproxy", "user": {"token": "via-fault-proxy"}}],
        "contexts": [{"name": "faultproxy", "context": {"cluster": "faultproxy", "user": "faultproxy"}}],
        "current-context": "faultproxy",
    }
    path.write_text(json.dumps(cfg, indent=2) + "\n")
    path.chmod(0o600)
    return path


def for_control_plane(cp: ControlPlane, *, port: int = 0) -> FaultProxy:
    """A proxy (not started) in front of ``cp``'s apiserver, authenticating as :data:`PROXY_USER`."""
    pki = cp.workdir / "pki"
    name = "faultproxy"
    with _CERT_LOCK:
        if not (pki / f"{name}.crt").exists():
            _make_cert(pki, name, f"/O=system:masters/CN={PROXY_USER}")
    tls = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    tls.load_cert_chain(str(pki / f"{name}.crt"), str(pki / f"{name}.key"))
    return FaultProxy(cp.server, tls=tls, port=port)


_CERT_LOCK = threading.Lock()
