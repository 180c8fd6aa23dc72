"""PrometheusSource over HTTP, against a stub on 127.0.0.1 that answers as Prometheus does and counts requests:
the preflight check (``refused``) asks one query and no freshness query; an evaluation (``query``) of a query
that reads series also asks when its newest sample was taken."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from urllib.parse import parse_qs, urlparse

import pytest

from modelrollout.metrics.prometheus import PrometheusSource

from ..localhttp import LocalServer, QuietHandler


class _Handler(QuietHandler):
    server: _Stub

    def do_GET(self) -> None:
        query = parse_qs(urlparse(self.path).query)["query"][0]
        self.server.asked.append(query)
        if query.count("(") != query.count(")"):
            self.send_json(400, {"status": "error", "errorType": "bad_data",
                                 "error": "1:7: parse error: unclosed left parenthesis"})
        else:
            self.send_json(200, {"status": "success", "data": {"resultType": "vector", "result": [
                {"metric": {"job": "x"}, "value": [1796598255.0, "0.995"]}]}})


class _Stub(LocalServer):
    def __init__(self) -> None:
        self.asked: list[str] = []
        super().__init__(_Handler)


@pytest.fixture
def stub() -> Iterator[_Stub]:
    server = _Stub()
    yield server
    server.close()


def source(server: _Stub) -> PrometheusSource:
    return PrometheusSource(server.url, timeout=2.0)


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
