"""PrometheusSource over HTTP, against a stub on 127.0.0.1 that answers as Prometheus does and counts requests:
the preflight check (``refused``) asks one query and no freshness query; an evaluation (``query``) of a query
that reads series also asks when its newest sample was taken."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from modelrollout.metrics.prometheus import PrometheusSource


class _Handler(BaseHTTPRequestHandler):
    server: _Stub

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        query = parse_qs(urlparse(self.path).query)["query"][0]
        self.server.asked.append(query)
        if query.count("(") != query.count(")"):
            status, doc = 400, {"status": "error", "errorType": "bad_data",
                                "error": "1:7: parse error: unclosed left parenthesis"}
        else:
            status, doc = 200, {"status": "success", "data": {"resultType": "vector", "result": [
                {"metric": {"job": "x"}, "value": [1796598255.0, "0.995"]}]}}
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Stub(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.asked: list[str] = []


@pytest.fixture
def stub() -> Iterator[_Stub]:
    server = _Stub()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def source(server: _Stub) -> PrometheusSource:
    return PrometheusSource(f"http://127.0.0.1:{server.server_address[1]}", timeout=2.0)


def test_a_refused_query_is_named_with_prometheus_words_after_one_request(stub: _Stub) -> None:
    refusal = source(stub).refused("sum(up")
    assert refusal is not None and "unclosed left parenthesis" in refusal
    assert stub.asked == ["sum(up"]


def test_an_accepted_query_is_no_refusal_and_asks_no_freshness_query(stub: _Stub) -> None:
    assert source(stub).refused("up") is None
    assert stub.asked == ["up"]


def test_an_evaluation_of_a_series_also_asks_for_its_newest_sample(stub: _Stub) -> None:
    sample = source(stub).query("up")
    assert sample.value == pytest.approx(0.995)
    assert len(stub.asked) == 2 and stub.asked[0] == "up" and "timestamp" in stub.asked[1]


def test_a_prometheus_that_does_not_answer_refuses_nothing() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert PrometheusSource(f"http://127.0.0.1:{port}", timeout=1.0).refused("sum(up") is None
