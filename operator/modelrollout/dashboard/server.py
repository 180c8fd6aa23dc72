"""The dashboard's web server: aiohttp on 127.0.0.1, acting with the user's kubeconfig like the plugin.

- A kubernetes watch of ModelRollouts (one namespace, or all with ``-A``) in a thread feeds an in-memory store;
  every change goes to the open pages as a server-sent event (``/api/stream``).
- ``/api/rollouts/NS/NAME`` is a rollout's page: the object, its Events, the weights and evaluations the
  dashboard saw, and range queries of its metrics against the Prometheus the rollout names (when reachable).
- ``POST /api/rollouts/NS/NAME/VERB`` sets the plugin's control annotation (``modelrollout.plugin.plan_*``)
  under the field manager ``modelrollout-dashboard``.

Only requests whose Host is ``127.0.0.1:PORT`` or ``localhost:PORT`` are served (DNS rebinding), and a POST
needs the per-process random token of the page in ``X-ModelRollout-Token`` and, when the browser sends one, a
same-origin ``Origin`` (cross-site requests).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import json
import logging
import secrets
import socket
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from importlib import resources
from typing import TYPE_CHECKING, Any

from aiohttp import web

from modelrollout.dashboard import view
from modelrollout.plugin import (
    Obj,
    PluginError,
    _connect,
    _get,
    annotate,
    apiserver_message,
    plan_approve,
    plan_rollback_to,
)

if TYPE_CHECKING:
    from modelrollout.kube import Rollouts

FIELD_MANAGER = "modelrollout-dashboard"
TOKEN_HEADER = "X-ModelRollout-Token"
WATCH_SECONDS = 60
"""One watch request lasts this long before it is resumed from the last resourceVersion."""
PROMETHEUS_TIMEOUT = 3.0
UNREACHABLE_FOR = 30.0
"""A Prometheus that did not answer is not asked again for this long (the page falls back to status)."""
POINTS_KEPT = 2000
"""Recorded weights and evaluations kept per rollout (oldest dropped)."""
HEARTBEAT_SECONDS = 15.0
QUEUE_LIMIT = 1000
"""Events queued for one page at most (see Store.publish)."""
MAX_BODY = 16 * 1024

log = logging.getLogger("modelrollout.dashboard")
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
Key = tuple[str, str]


class Store:
    """The rollouts the watch delivered and what the dashboard saw of them over its life (event loop only)."""

    def __init__(self) -> None:
        self.objects: dict[Key, Obj] = {}
        self.weights: dict[Key, list[tuple[datetime, int]]] = {}
        self.evaluations: dict[Key, dict[str, dict[str, Obj]]] = {}
        self.subscribers: set[asyncio.Queue[Obj]] = set()
        self.error: str | None = None
        self.synced = False

    def replace(self, items: list[Obj]) -> None:
        seen = {view.key_of(o) for o in items}
        for key in [k for k in self.objects if k not in seen]:
            self.apply("DELETED", self.objects[key])
        for obj in items:
            self.apply("MODIFIED", obj)
        self.synced, self.error = True, None
        self.publish({"type": "SYNCED"})

    def apply(self, kind: str, obj: Obj, now: datetime | None = None) -> None:
        key = view.key_of(obj)
        if kind == "DELETED":
            self.objects.pop(key, None)
            self.weights.pop(key, None)
            self.evaluations.pop(key, None)
            self.publish({"type": "DELETED", "key": "/".join(key)})
            return
        self.objects[key] = obj
        self._record(key, obj, now or datetime.now(UTC))
        self.publish({"type": "MODIFIED", "key": "/".join(key), "summary": view.summary(obj)})

    def _record(self, key: Key, obj: Obj, now: datetime) -> None:
        status: Obj = obj.get("status") or {}
        if not status:
            return
        weight = int(status.get("currentWeight") or 0)
        weights = self.weights.setdefault(key, [])
        if not weights or weights[-1][1] != weight:
            weights.append((now, weight))
            del weights[:-POINTS_KEPT]
        for metric in status.get("analysis") or []:
            evaluation = view.evaluation_of(metric)
            if evaluation is None:
                continue
            seen = self.evaluations.setdefault(key, {}).setdefault(str(metric.get("name")), {})
            seen[str(evaluation["at"])] = evaluation
            for old in sorted(seen)[:-POINTS_KEPT]:
                del seen[old]

    def fail(self, message: str) -> None:
        self.error = message
        self.publish({"type": "ERROR", "message": message})

    def subscribe(self) -> asyncio.Queue[Obj]:
        queue: asyncio.Queue[Obj] = asyncio.Queue(QUEUE_LIMIT)
        self.subscribers.add(queue)
        return queue

    def publish(self, event: Obj) -> None:
        """Queue ``event`` for every open page; a page that fell ``QUEUE_LIMIT`` events behind gets one RESYNC
        (the whole overview again) instead of what it missed."""
        for queue in self.subscribers:
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait({"type": "RESYNC"})


class Watcher:
    """Lists and watches ModelRollouts in a thread, handing every event to the store on the event loop."""

    def __init__(self, rollouts: Rollouts, namespace: str | None, store: Store,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.cluster, self.namespace, self.store, self.loop = rollouts, namespace, store, loop
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="modelrollout-dashboard-watch", daemon=True)

    def _run(self) -> None:
        from modelrollout.kube import ApiError

        while not self.stop.is_set():  # bounded by stop: each pass lists, then watches until the watch expires
            listed = False
            try:
                listing = self.cluster.listing(self.namespace, request_timeout=(10, 30))
                listed = True
                rv = str(listing["metadata"]["resourceVersion"])
                self.loop.call_soon_threadsafe(self.store.replace, list(listing.get("items") or []))
                while not self.stop.is_set():
                    for event in self.cluster.watch(
                            self.namespace, resource_version=rv, timeout_seconds=WATCH_SECONDS, bookmarks=True,
                            request_timeout=(10, WATCH_SECONDS + 10)):
                        raw = event.get("raw_object") or {}
                        rv = str((raw.get("metadata") or {}).get("resourceVersion") or rv)
                        if event.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                            self.loop.call_soon_threadsafe(self.store.apply, str(event["type"]), raw)
                        if self.stop.is_set():
                            return
            except ApiError as exc:
                if exc.status != 410:
                    where = "all namespaces" if self.namespace is None else f"namespace {self.namespace}"
                    said = apiserver_message(exc) or exc.reason
                    self.loop.call_soon_threadsafe(
                        self.store.fail, f"cannot list ModelRollouts in {where}: {exc.status} {said}")
                    self.stop.wait(5)
            except Exception as exc:  # a dropped connection or a timeout: list again shortly
                log.debug("watch interrupted: %s", exc)
                if not listed:
                    self.loop.call_soon_threadsafe(self.store.fail, f"cannot reach the apiserver: {exc}")
                self.stop.wait(1 if listed else 5)


def prometheus_get(address: str, path: str, params: dict[str, str]) -> Any:
    """GET ``address + path`` from Prometheus' HTTP API; its ``data``, or ValueError with the reason."""
    url = f"{address}{path}?{urllib.parse.urlencode(params)}"
    with _opener.open(url, timeout=PROMETHEUS_TIMEOUT) as resp:
        body = json.loads(resp.read())
    if body.get("status") != "success":
        raise ValueError(str(body.get("error") or body))
    return body["data"]


def _number(text: Any) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if value == value and value not in (float("inf"), float("-inf")) else None


class Dashboard:
    def __init__(self, rollouts: Rollouts, namespace: str | None, default_namespace: str,
                 prometheus: str | None = None) -> None:
        self.cluster = rollouts
        self.prometheus = prometheus.rstrip("/") if prometheus else None
        self.namespace = namespace
        self.default_namespace = default_namespace
        self.store = Store()
        self.token = secrets.token_urlsafe(32)
        self.key = secrets.token_urlsafe(32)
        self.port = 0
        self.unreachable: dict[str, float] = {}

    # ------------------------------------------------------------------ requests

    def allowed_hosts(self) -> set[str]:
        return {f"127.0.0.1:{self.port}", f"localhost:{self.port}"}

    @web.middleware
    async def guard(self, request: web.Request,
                    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        if request.headers.get("Host", "") not in self.allowed_hosts():
            return _headers(web.json_response({"error": "unexpected Host header"}, status=421))
        if "key" in request.query and request.method == "GET" and request.path == "/":
            return _headers(self.login(request))
        if not hmac.compare_digest(request.cookies.get(self.cookie, ""), self.key):
            return _headers(web.json_response(
                {"error": "open the URL the dashboard printed when it started (it holds this session's key)"},
                status=401))
        if request.method not in ("GET", "HEAD"):
            origin = request.headers.get("Origin")
            if origin is not None and origin not in {f"http://{h}" for h in self.allowed_hosts()}:
                return _headers(web.json_response({"error": "cross-origin request refused"}, status=403))
            if request.headers.get("Sec-Fetch-Site") not in (None, "same-origin", "none"):
                return _headers(web.json_response({"error": "cross-site request refused"}, status=403))
            if not hmac.compare_digest(request.headers.get(TOKEN_HEADER, ""), self.token):
                return _headers(web.json_response({"error": f"missing or wrong {TOKEN_HEADER}"}, status=403))
        response = await handler(request)
        return _headers(response)

    @property
    def cookie(self) -> str:
        return f"modelrollout-dashboard-{self.port}"

    def login(self, request: web.Request) -> web.Response:
        """``/?key=KEY`` (the URL printed at start): the key goes into a cookie only this origin's pages send."""
        if not hmac.compare_digest(request.query.get("key", ""), self.key):
            return web.json_response({"error": "wrong key"}, status=401)
        response = web.Response(status=302, headers={"Location": "/"})
        response.set_cookie(self.cookie, self.key, httponly=True, samesite="Strict", path="/")
        return response

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/?key={self.key}"

    async def index(self, request: web.Request) -> web.Response:
        page = _static("index.html").replace("__TOKEN__", self.token)
        return web.Response(text=page, content_type="text/html", charset="utf-8")

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        types = {"app.js": "text/javascript", "app.css": "text/css"}
        if name not in types:
            raise web.HTTPNotFound()
        return web.Response(text=_static(name), content_type=types[name], charset="utf-8",
                            headers={"Cache-Control": "no-cache"})

    async def rollouts(self, request: web.Request) -> web.Response:
        return web.json_response(self.overview())

    def overview(self) -> Obj:
        return {"namespace": self.namespace, "synced": self.store.synced, "error": self.store.error,
                "rollouts": [view.summary(o) for _, o in sorted(self.store.objects.items())]}

    async def stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"})
        await response.prepare(request)
        queue = self.store.subscribe()
        try:
            await response.write(_sse("overview", self.overview()))
            while True:  # until the page goes away (the write fails) or the server stops (cancelled)
                try:
                    event = await asyncio.wait_for(queue.get(), HEARTBEAT_SECONDS)
                except TimeoutError:
                    await response.write(b": ping\n\n")
                    continue
                if event["type"] == "RESYNC":
                    await response.write(_sse("overview", self.overview()))
                else:
                    await response.write(_sse("change", event))
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.store.subscribers.discard(queue)
        return response

    async def rollout(self, request: web.Request) -> web.Response:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        obj = self.store.objects.get((namespace, name))
        if obj is None:
            try:
                obj = await asyncio.to_thread(_get, self.cluster, namespace, name)
            except PluginError as exc:
                return web.json_response({"error": str(exc)}, status=exc.status or 502)
        key = (namespace, name)
        events, prometheus, compat = await asyncio.gather(
            asyncio.to_thread(self._events, namespace, name), self._series(obj), self._compat(obj))
        recorded = {metric: list(evals.values()) for metric, evals in self.store.evaluations.get(key, {}).items()}
        page = view.detail(obj, events=events, recorded_weights=self.store.weights.get(key, []),
                           recorded_evals=recorded, prometheus=prometheus, compat=compat, now=datetime.now(UTC))
        page["spec"]["prometheus"] = self._prometheus(obj)
        return web.json_response(page)

    async def act(self, request: web.Request) -> web.Response:
        namespace, name, verb = (request.match_info[k] for k in ("namespace", "name", "verb"))
        if verb not in view.ACTIONS:
            return web.json_response({"error": f"unknown action {verb!r}"}, status=404)
        try:
            body = await request.json() if request.can_read_body else {}
        except ValueError:
            return web.json_response({"error": "the body is not JSON"}, status=400)
        if not isinstance(body, dict):
            return web.json_response({"error": "the body is not a JSON object"}, status=400)
        try:
            result = await asyncio.to_thread(self._act, namespace, name, verb, body)
        except PluginError as exc:
            return web.json_response({"error": str(exc), "apiserverStatus": exc.status}, status=exc.status or 409)
        return web.json_response(result)

    def _act(self, namespace: str, name: str, verb: str, body: Obj) -> Obj:
        """Read the rollout afresh, decide as the plugin does, check that it is what the page showed, write."""
        obj = _get(self.cluster, namespace, name)
        if verb == "approve" and body.get("token"):
            current = ((obj.get("status") or {}).get("approval") or {}).get("token")
            if current != body["token"]:
                raise PluginError(f"{name} no longer waits for {body['token']} (now: {current or 'no gate'}); "
                                  "nothing was approved", 409)
            action = plan_approve(name, obj, str(body["token"]))
        elif verb == "rollback-to":
            revision = body.get("revision")
            action = plan_rollback_to(name, obj, str(revision) if revision else None)
        else:
            action = view.ACTIONS[verb](name, obj)
        expect = body.get("expect")
        if expect is not None and str(expect) != action.value:
            raise PluginError(f"{name} changed since the page showed it: {verb} would now set {action.key}="
                              f"{action.value}, not {expect}; nothing was written", 409)
        annotate(self.cluster, namespace, name, action.key, action.value, field_manager=FIELD_MANAGER)
        return {"ok": True, "message": action.message, "annotation": action.key, "value": action.value}

    # ------------------------------------------------------------------ reads for a rollout's page

    def _events(self, namespace: str, name: str) -> list[Obj]:
        from modelrollout.kube import ApiError

        try:
            return self.cluster.events(namespace, name, request_timeout=(5, 10))
        except ApiError as exc:
            log.info("events of %s/%s: %s %s", namespace, name, exc.status, exc.reason)
            return []

    def _prometheus(self, obj: Obj) -> str | None:
        return self.prometheus or view.prometheus_address(obj)

    async def _series(self, obj: Obj) -> dict[str, Obj]:
        address = self._prometheus(obj)
        metrics = view.metric_queries(obj)
        if address is None or not metrics:
            return {}
        if time.monotonic() < self.unreachable.get(address, 0):
            return {m["name"]: {"error": f"{address} did not answer lately"} for m in metrics}
        start, end = view.series_window(obj, datetime.now(UTC))
        step = max(1.0, (end - start).total_seconds() / 240)
        params = {"start": f"{start.timestamp():.3f}", "end": f"{end.timestamp():.3f}", "step": f"{step:.3f}"}

        async def one(metric: Obj) -> tuple[str, Obj]:
            if not metric["query"]:
                return metric["name"], {"error": "the query cannot be rendered"}
            try:
                data = await asyncio.to_thread(prometheus_get, address, "/api/v1/query_range",
                                               {"query": metric["query"], **params})
            except (OSError, ValueError) as exc:
                if isinstance(exc, OSError):
                    self.unreachable[address] = time.monotonic() + UNREACHABLE_FOR
                return metric["name"], {"error": f"{address}: {exc}"}
            series = data.get("result") or []
            points = [[float(t), v] for t, raw in (series[0].get("values") or []) if series
                      for v in [_number(raw)] if v is not None] if series else []
            return metric["name"], {"points": points, "series": len(series)}

        return dict(await asyncio.gather(*(one(m) for m in metrics)))

    async def _compat(self, obj: Obj) -> Obj | None:
        query, address = view.compat_failing_query(obj), self._prometheus(obj)
        if query is None:
            return None
        if address is None or time.monotonic() < self.unreachable.get(address, 0):
            return {"error": "no reachable Prometheus", "query": query}
        try:
            data = await asyncio.to_thread(prometheus_get, address, "/api/v1/query", {"query": query})
        except (OSError, ValueError) as exc:
            return {"error": f"{address}: {exc}", "query": query}
        failing = sorted({str((r.get("metric") or {}).get("check") or "?") for r in data.get("result") or []})
        return {"failing": failing, "query": query}

    # ------------------------------------------------------------------ running

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.guard], client_max_size=MAX_BODY)
        app.router.add_get("/", self.index)
        app.router.add_get("/static/{name}", self.static)
        app.router.add_get("/api/rollouts", self.rollouts)
        app.router.add_get("/api/stream", self.stream)
        app.router.add_get("/api/rollouts/{namespace}/{name}", self.rollout)
        app.router.add_post("/api/rollouts/{namespace}/{name}/{verb}", self.act)
        return app


def _headers(response: web.StreamResponse) -> web.StreamResponse:
    response.headers.setdefault("Content-Security-Policy",
                                "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                                "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def _sse(event: str, data: Obj) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _static(name: str) -> str:
    return resources.files("modelrollout.dashboard").joinpath("static", name).read_text(encoding="utf-8")


def bind(port: int) -> socket.socket:
    """A listening socket on 127.0.0.1 only (never another address)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def serve(dashboard: Dashboard, port: int, ready: Callable[[str], None] | None = None) -> None:
    """Serve until cancelled."""
    sock = bind(port)
    dashboard.port = int(sock.getsockname()[1])
    watcher = Watcher(dashboard.cluster, dashboard.namespace, dashboard.store, asyncio.get_running_loop())
    runner = web.AppRunner(dashboard.app(), access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.SockSite(runner, sock, shutdown_timeout=1.0)
    await site.start()
    watcher.thread.start()
    url = dashboard.url()
    if ready is not None:
        ready(url)
    try:
        await asyncio.Event().wait()
    finally:
        watcher.stop.set()
        await runner.cleanup()


def cmd_dashboard(args: argparse.Namespace) -> int:
    """``kubectl modelrollout dashboard``: serve until Ctrl-C."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    rollouts, namespace = _connect(args)
    dashboard = Dashboard(rollouts, None if args.all_namespaces else namespace, namespace, args.prometheus)

    def ready(url: str) -> None:
        where = "all namespaces" if args.all_namespaces else f"namespace {namespace}"
        print(f"ModelRollout dashboard for {where} on {url} (Ctrl-C stops it)", flush=True)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(dashboard, args.port, ready))
    return 0
