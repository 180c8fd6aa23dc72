"""Every Prometheus answer has a defined meaning (core.answers), and queries' selectors are found for freshness."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from modelrollout import api
from modelrollout.core.analysis import judge
from modelrollout.core.answers import MAX_SERIES, freshness_query, newest_sample, read_answer, selectors
from modelrollout.metrics.prometheus import prometheus_seconds

METRIC = api.Metric.model_validate({"name": "m", "query": "q", "min": 0.9})


def ok(result_type: str, result: Any) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": result_type, "result": result}}


def vec(*values: str, label: str = "pod") -> dict[str, Any]:
    return ok("vector", [{"metric": {label: f"p{i}"}, "value": [1.0, v]} for i, v in enumerate(values)])


@pytest.mark.parametrize(("code", "body", "verdict", "words"), [
    (200, vec("0.95"), "Pass", "= 0.95"),
    (200, ok("scalar", [1.0, "0.95"]), "Pass", "= 0.95"),
    (200, vec("0.5"), "Fail", "below min 0.9"),
    (200, vec("1", "0.5", "1"), "Fail", 'series {pod="p1"} (1 of 3 series fail)'),
    (200, vec("1", "0.95"), "Pass", 'worst of 2 series, {pod="p1"}'),
    (200, vec("+Inf"), "Inconclusive", "+Inf"),
    (200, vec("-Inf"), "Inconclusive", "-Inf"),
    (200, vec("NaN"), "Inconclusive", "NaN"),
    (200, vec("1", "NaN"), "Inconclusive", 'NaN in series {pod="p1"}'),
    (200, ok("scalar", [1.0, "+Inf"]), "Inconclusive", "+Inf"),
    (200, vec(), "Inconclusive", "empty result"),
    (200, ok("string", [1.0, "0.99"]), "Inconclusive", "a string"),
    (200, ok("matrix", [{"metric": {}, "values": [[1.0, "1"]]}]), "Inconclusive", "range vector"),
    (200, vec("abc"), "Inconclusive", "unreadable value"),
    (200, vec(*["1"] * (MAX_SERIES + 1)), "Inconclusive", "aggregate them"),
    (200, {"status": "success"}, "Inconclusive", "without data"),
    (200, ok("histogram", []), "Inconclusive", "unexpected answer"),
    (200, None, "Inconclusive", "without a Prometheus JSON body"),
    (400, {"status": "error", "errorType": "bad_data", "error": "1:5: parse error"}, "Fail", "refused the query"),
    (422, {"status": "error", "errorType": "execution", "error": "too many samples"}, "Fail", "422 execution"),
    (404, None, "Fail", "refused the query (HTTP 404)"),
    (503, {"status": "error", "errorType": "timeout", "error": "query timed out"}, "Inconclusive", "503 timeout"),
    (500, {"status": "error", "errorType": "internal", "error": "boom"}, "Inconclusive", "did not answer"),
    (502, None, "Inconclusive", "HTTP 502"),
])
def test_every_answer_has_a_defined_verdict(code: int, body: Any, verdict: str, words: str) -> None:
    sample = read_answer("q", code, body)
    got, message, value = judge(METRIC, sample)
    assert got.value == verdict, message
    assert words in message
    assert value is None or abs(value) < float("inf")
    assert (sample.query_error is not None) == (400 <= code < 500)


@pytest.mark.parametrize(("query", "found"), [
    ("up", ("up",)),
    ('min(model_score{rollout="r",track="canary"})', ('model_score{rollout="r",track="canary"}',)),
    ('sum by (job) (rate(x{a="b}"}[5m] offset 1m)) / on(job) group_left(z) y', ('x{a="b}"}', "y")),
    ('{__name__="up"} and bool 1', ('{__name__="up"}',)),
    ("histogram_quantile(0.99, sum(rate(h_bucket[1m])) by (le))", ("h_bucket",)),
    ("vector(1) + scalar(vector(2))", ()),
    ("max_over_time((a - b)[5m:30s]) @ start()", ("a", "b")),
    ("topk(3, m) or sum without (pod) (m)", ("m",)),
    ('label_replace(vector(+Inf), "pod", "b", "", "")', ()),
    ("absent(nothing) * Inf + NaN", ("nothing",)),
    ('x{a="unterminated}', None),
])
def test_selectors_of_a_query(query: str, found: tuple[str, ...] | None) -> None:
    assert selectors(query) == found


def test_freshness_query_asks_every_selector_and_reads_the_newest() -> None:
    q = freshness_query('a{x="1"} / b')
    assert q is not None and 'timestamp(a{x="1"})' in q and "timestamp(b)" in q
    assert freshness_query("vector(1)") is None
    body = ok("vector", [{"metric": {"s": "0"}, "value": [9.0, "100.5"]},
                         {"metric": {"s": "1"}, "value": [9.0, "200"]}])
    assert newest_sample(200, body) == datetime.fromtimestamp(200, UTC)
    assert newest_sample(200, ok("vector", [])) is None
    assert newest_sample(400, {"status": "error"}) is None


@pytest.mark.parametrize(("seconds", "param"), [(0.001, "0.001"), (0.005, "0.005"), (0.5, "0.5"), (1.0, "1"),
                                                (1.5, "1.5"), (5.0, "5"), (3600.0, "3600")])
def test_the_timeout_parameter_is_plain_seconds_prometheus_reads(seconds: float, param: str) -> None:
    # Prometheus's duration syntax has no fractions ("0.5s" is refused as bad_data): plain seconds only.
    assert prometheus_seconds(seconds) == param
    assert float(param) == pytest.approx(seconds)
