"""The tee proxy in the path of client requests: streaming, keep-alive, and the shadow copy of a stream.

The probe runs in this process (``ProbeApp`` on 127.0.0.1, port 0); the upstreams are small HTTP/1.1
servers here that speak the OpenAI streaming format (server-sent events) and can hold a stream open until
the test lets it finish, so "the first chunk arrives before the last one is sent" is observed, not timed.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from compat_probe.server import ProbeApp, ProbeSettings
from compat_probe.shadow import ShadowSpec

from ..localhttp import LocalServer, QuietHandler

DEADLINE = 10.0


def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    doc = {"id": "c", "object": "chat.completion.chunk", "model": "m",
           "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + json.dumps(doc).encode() + b"\n\n"


class Upstream(LocalServer):
    """An OpenAI-style server. ``/v1/chat/completions`` with ``stream`` sends the first chunk, then waits
    for ``release`` (bounded) before the rest; everything else answers JSON with a Content-Length."""

    def __init__(self, finish: str = "stop") -> None:
        self.finish = finish
        self.release = threading.Event()
        self.last_sent = threading.Event()
        self.connections: set[int] = set()
        self.requests = 0
        self.shadow_requests = 0
        self.lock = threading.Lock()
        super().__init__(_Handler)


class _Handler(QuietHandler):
    server: Upstream

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        with self.server.lock:
            self.server.connections.add(self.client_address[1])
            self.server.requests += 1
            if self.headers.get("X-Modelrollout-Shadow") == "true":
                self.server.shadow_requests += 1
        if body.get("stream"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self._chunk(chunk({"role": "assistant", "content": "Hel"}))
            if not self.server.release.wait(DEADLINE):
                return
            try:
                for _ in range(int(body.get("chunks", 1))):
                    self._chunk(chunk({"content": "lo"}))
                self._chunk(chunk({}, self.server.finish) + b"data: [DONE]\n\n")
                self.wfile.write(b"0\r\n\r\n")
            except OSError:  # the proxy closed the connection (its client went away)
                return
            self.wfile.flush()
            self.server.last_sent.set()
            return
        self.send_json(200, {"object": "chat.completion", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop"}]})

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[Upstream, Upstream]]:
    canary, stable = Upstream(finish="stop"), Upstream(finish="stop")
    yield canary, stable
    for server in (canary, stable):
        server.release.set()
        server.close()


@pytest.fixture(scope="module")
def probe(upstreams: tuple[Upstream, Upstream]) -> Iterator[tuple[ProbeApp, int]]:
    canary, stable = upstreams
    app = ProbeApp(ProbeSettings(target=canary.url, shadow_target=stable.url, listen_port=0,
                                 shadow_spec=ShadowSpec(protocol="openai-chat"), proxy_timeout=DEADLINE))
    _, port = app.start()
    yield app, port
    app.stop()


def wait_for(predicate: Any, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_first_sse_chunk_reaches_the_client_before_the_server_sends_the_last(
        upstreams: tuple[Upstream, Upstream], probe: tuple[ProbeApp, int]) -> None:
    canary, stable = upstreams
    app, port = probe
    canary.release.clear()
    canary.last_sent.clear()
    stable.release.clear()  # the stable copy streams too, and is also held after its first chunk
    shadow_before = stable.shadow_requests
    before = app.tee.snapshot()[0].total if app.tee else 0
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE)
    request = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    conn.request("POST", "/v1/chat/completions", body=json.dumps(request),
                 headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    assert response.status == 200
    assert response.getheader("Content-Type") == "text/event-stream"
    first = b""
    while b"\n\n" not in first:  # bounded by the socket timeout
        part = response.read1(65536)
        assert part, "stream ended before the first event"
        first += part
    assert b'"content": "Hel"' in first
    assert not canary.last_sent.is_set(), "the proxy buffered: the server had already sent its last chunk"
    canary.release.set()
    rest = response.read()
    assert canary.last_sent.is_set()
    assert (first + rest).endswith(b"data: [DONE]\n\n") and b'"finish_reason": "stop"' in rest
    conn.close()
    assert app.tee is not None
    wait_for(lambda: stable.shadow_requests > shadow_before, "the shadow copy to reach stable")
    assert app.tee.snapshot()[0].total == before  # the copy is read to its end before it is compared
    stable.release.set()
    wait_for(lambda: app.tee is not None and app.tee.snapshot()[0].total > before, "the shadow comparison")
    stats = app.tee.snapshot()[0]
    assert stats.mismatches == 0  # the reassembled streams agree on finish_reason


def test_keep_alive_end_to_end_and_the_content_length_relayed(
        upstreams: tuple[Upstream, Upstream], probe: tuple[ProbeApp, int]) -> None:
    canary, _ = upstreams
    _, port = probe
    with canary.lock:
        canary.connections.clear()
        before = canary.requests
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE)
    client_ports = set()
    for _ in range(20):
        conn.request("POST", "/v1/chat/completions", body=b'{"model": "m"}',
                     headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        body = response.read()
        assert response.status == 200 and json.loads(body)["choices"][0]["finish_reason"] == "stop"
        assert response.getheader("Content-Length") == str(len(body))
        assert response.getheader("Connection", "keep-alive").lower() != "close"
        assert conn.sock is not None
        client_ports.add(conn.sock.getsockname()[1])
    conn.close()
    assert len(client_ports) == 1  # the client kept one connection to the proxy
    assert canary.requests - before == 20
    assert len(canary.connections) <= 2  # and the proxy reused its pooled connection to the target


def test_target_down_is_a_502_and_the_sidecar_paths_are_not_proxied(probe: tuple[ProbeApp, int]) -> None:
    _, port = probe
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE)
    conn.request("GET", "/healthz")
    response = conn.getresponse()
    assert response.status == 200 and json.loads(response.read()) == {"status": "ok"}
    conn.request("GET", "/metrics")
    metrics = conn.getresponse().read().decode()
    assert 'model_proxy_requests_total{' in metrics and 'code="200"' in metrics
    conn.close()
    dead = ProbeApp(ProbeSettings(target="http://127.0.0.1:9", shadow_target="http://127.0.0.1:9",
                                  listen_port=0, proxy_timeout=2.0))
    _, dead_port = dead.start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", dead_port, timeout=DEADLINE)
        conn.request("POST", "/v1/predict", body=b"{}")
        response = conn.getresponse()
        assert response.status == 502
        assert "connection refused" in json.loads(response.read())["error"]
        assert dead.proxied() == {"error": 1}
    finally:
        dead.stop()


def test_a_client_that_leaves_mid_stream_is_counted_and_the_proxy_serves_on(
        upstreams: tuple[Upstream, Upstream], probe: tuple[ProbeApp, int]) -> None:
    canary, stable = upstreams
    app, port = probe
    canary.release.clear()
    stable.release.set()
    assert app.tee is not None
    wait_for(lambda: app.tee is not None and app.tee.in_flight == 0, "the earlier tests' copies to be compared")
    before = app.proxied().get("200", 0)
    shadowed = app.tee.snapshot()[0].total
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE)
    conn.request("POST", "/v1/chat/completions", body=b'{"model": "m", "stream": true, "chunks": 2000}',
                 headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    assert b"data: " in response.read1(65536)
    conn.sock.close() if conn.sock is not None else None  # the user pressed stop
    conn.close()
    canary.release.set()  # the server goes on streaming (2000 more events) to a proxy whose client is gone
    wait_for(lambda: app.proxied().get("200", 0) > before, "the abandoned stream to be counted")
    assert "error" not in app.proxied()
    assert app.tee is not None and app.tee.snapshot()[0].total == shadowed  # an incomplete answer is not compared
    again = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE)
    again.request("POST", "/v1/chat/completions", body=b'{"model": "m"}', headers={"Content-Type": "application/json"})
    assert again.getresponse().status == 200
    again.close()
