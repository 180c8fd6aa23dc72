"""The fault proxy against a small local upstream (no cluster): passthrough, faults, watch streaming and cuts."""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
import time
from collections.abc import Iterator

import pytest
from aiohttp import web
from kubernetes.client.exceptions import ApiException

from devenv.localenv.faultproxy import (
    CutWatch,
    Delay,
    FaultProxy,
    Rule,
    conflict,
    is_watch,
    server_error,
    too_many_requests,
)
from devenv.localenv.procs import LOCALHOST, free_port, port_open, wait_until
from modelrollout.kube import retry_after

EVENTS = 6


class Upstream:
    """An aiohttp server in a thread: ``/echo`` returns what it got, ``/w`` streams EVENTS lines."""

    def __init__(self) -> None:
        self.port = free_port()
        self.writes: list[bytes] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True)

    async def _echo(self, req: web.Request) -> web.Response:
        body = await req.read()
        if req.method != "GET":
            self.writes.append(body)
        return web.Response(body=json.dumps({"method": req.method, "path": req.raw_path, "body": body.decode(),
                                             "auth": req.headers.get("Authorization")}).encode(),
                            headers={"Content-Type": "application/json", "X-Up": "1"})

    async def _watch(self, req: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(req)
        slow = "slow" in req.query
        try:
            for i in range(EVENTS * 5 if slow else EVENTS):
                await resp.write(json.dumps({"type": "ADDED", "i": i}).encode() + b"\n")
                await asyncio.sleep(0.2 if slow else 0.05)
        except ConnectionError:
            pass
        return resp

    def _run(self) -> None:
        app = web.Application()
        app.router.add_get("/w", self._watch)
        app.router.add_route("*", "/{tail:.*}", self._echo)
        runner = web.AppRunner(app, access_log=None)
        self.loop.run_until_complete(runner.setup())
        self.loop.run_until_complete(web.TCPSite(runner, LOCALHOST, self.port).start())
        self.loop.run_forever()

    def start(self) -> Upstream:
        self.thread.start()
        wait_until(lambda: port_open(self.port), 10, 0.02, what="upstream")
        return self

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def proxy() -> Iterator[tuple[FaultProxy, Upstream]]:
    up = Upstream().start()
    with FaultProxy(f"http://{LOCALHOST}:{up.port}") as p:
        yield p, up
    up.stop()


def call(p: FaultProxy, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes, dict[str, str]]:
    conn = http.client.HTTPConnection(LOCALHOST, p.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers={"Authorization": "Bearer dropped",
                                                       "Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read(), dict(resp.getheaders())
    finally:
        conn.close()


def test_passes_requests_through_and_drops_the_placeholder_credential(proxy: tuple[FaultProxy, Upstream]) -> None:
    p, _ = proxy
    status, body, headers = call(p, "PATCH", "/apis/x/y?fieldManager=m", b'{"a": 1}')
    assert status == 200 and headers["X-Up"] == "1"
    assert json.loads(body) == {"method": "PATCH", "path": "/apis/x/y?fieldManager=m", "body": '{"a": 1}',
                                "auth": None}
    assert [(s.method, s.path, s.status, s.fault) for s in p.requests] == [("PATCH", "/apis/x/y", 200, None)]


def test_next_k_matching_requests_get_a_status_answer(proxy: tuple[FaultProxy, Upstream]) -> None:
    p, up = proxy
    rule = p.add(Rule(conflict("ingresses", "a"), path="/ingresses/", method="PATCH", times=2))
    codes = [call(p, "PATCH", "/ns/ingresses/a", b"{}")[0] for _ in range(3)]
    assert codes == [409, 409, 200]
    assert call(p, "GET", "/ns/ingresses/a")[0] == 200  # method does not match
    assert (rule.matched, rule.injected) == (3, 2) and len(up.writes) == 1
    p.add(Rule(too_many_requests(3), path="/tmr", times=1))
    status, body, headers = call(p, "GET", "/tmr")
    assert status == 429 and headers["Retry-After"] == "3"
    assert json.loads(body)["reason"] == "TooManyRequests" and json.loads(body)["kind"] == "Status"


def test_lost_response_lands_the_write(proxy: tuple[FaultProxy, Upstream]) -> None:
    p, up = proxy
    p.add(Rule(server_error(forward=True), path="/lost", times=1))
    assert call(p, "POST", "/lost", b"x")[0] == 500
    assert up.writes == [b"x"]


def test_fraction_is_seeded(proxy: tuple[FaultProxy, Upstream]) -> None:
    p, _ = proxy
    runs = []
    for _ in range(2):
        rule = p.add(Rule(server_error(), path="/f", fraction=0.5, seed=11))
        runs.append([call(p, "GET", "/f")[0] for _ in range(12)])
        p.remove(rule)
    assert runs[0] == runs[1] and 500 in runs[0] and 200 in runs[0]


def test_delay_holds_the_request(proxy: tuple[FaultProxy, Upstream]) -> None:
    p, _ = proxy
    p.add(Rule(Delay(0.3), path="/slow"))
    started = time.monotonic()
    assert call(p, "GET", "/slow")[0] == 200
    assert time.monotonic() - started >= 0.3


def test_watch_streams_and_cuts(proxy: tuple[FaultProxy, Upstream]) -> None:
    p, _ = proxy
    assert len(call(p, "GET", "/w?watch=true")[1].splitlines()) == EVENTS
    p.add(Rule(CutWatch(events=2), path="/w", watch=True, times=1))
    assert [json.loads(x)["i"] for x in call(p, "GET", "/w?watch=1")[1].splitlines()] == [0, 1]
    p.add(Rule(CutWatch(events=1, abort=True), path="/w", watch=True, times=1))
    with pytest.raises(http.client.IncompleteRead):
        call(p, "GET", "/w?watch=true")
    assert p.seen("GET", "/w", watch=True)[-1].fault == "CutWatch(events=1, seconds=None, abort=True)"


def test_a_cut_rule_reaches_a_watch_that_is_already_open(proxy: tuple[FaultProxy, Upstream]) -> None:
    p, _ = proxy
    conn = http.client.HTTPConnection(LOCALHOST, p.port, timeout=10)
    try:
        conn.request("GET", "/w?watch=true&slow=1")
        resp = conn.getresponse()
        assert json.loads(resp.readline())["i"] == 0
        rule = p.add(Rule(CutWatch(events=1), path="/w", watch=True, times=1))
        rest = resp.read().splitlines()
    finally:
        conn.close()
    assert 1 <= len(rest) <= 2 and rule.injected == 1  # one more event (two if one was already in flight)


def test_is_watch() -> None:
    assert is_watch("/apis/apps/v1/deployments", "watch=true&labelSelector=a")
    assert is_watch("/api/v1/watch/namespaces/a/pods", "")
    assert not is_watch("/apis/apps/v1/deployments", "watch=false")


def test_retry_after_reads_the_header_of_429_and_503_only() -> None:
    def exc(status: int, headers: dict[str, str]) -> ApiException:
        e = ApiException(status=status, reason="x")
        e.headers = headers
        return e

    assert retry_after(exc(429, {"Retry-After": "3"})) == 3.0
    assert retry_after(exc(503, {"Retry-After": "1.5"})) == 1.5
    assert retry_after(exc(429, {})) is None
    assert retry_after(exc(429, {"Retry-After": "soon"})) is None
    assert retry_after(exc(500, {"Retry-After": "3"})) is None
    assert retry_after(ValueError()) is None
