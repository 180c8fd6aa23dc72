"""Prometheus as a metric source: instant queries whose every answer has a defined meaning.

The HTTP answer (status code and body) is read by :func:`modelrollout.core.answers.read_answer`, so a
refused query (4xx) is told apart from a Prometheus that did not answer (transport error, timeout, 5xx).
Prometheus is asked to give up at the same timeout (its ``timeout`` parameter), so a slow query ends as
its own ``timeout`` answer rather than a dropped connection.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import requests
from prometheus_api_client import PrometheusConnect

from modelrollout.core.analysis import Sample
from modelrollout.core.answers import freshness_query, newest_sample, read_answer


def prometheus_seconds(seconds: float) -> str:
    """A duration as Prometheus's ``timeout`` parameter reads it: plain (float) seconds. Its duration syntax has no
    fractions, so "0.5s" would be refused as bad_data and every query of a ``timeout: 500ms`` spec with it."""
    return f"{seconds:.6f}".rstrip("0").rstrip(".")


class PrometheusSource:
    """Instant queries against one Prometheus; never raises."""

    def __init__(self, address: str, *, timeout: float = 5.0) -> None:
        self.address = address.rstrip("/")
        self.timeout = timeout
        self._client = PrometheusConnect(url=address, disable_ssl=True, timeout=max(1, math.ceil(timeout)))
        self._session = requests.Session()

    def _get(self, query: str) -> tuple[int, Any]:
        """(status code, decoded JSON or None); raises on transport errors."""
        response = self._session.get(f"{self.address}/api/v1/query",
                                     params={"query": query, "timeout": prometheus_seconds(self.timeout)},
                                     timeout=self.timeout + 1.0)
        try:
            body = response.json()
        except ValueError:
            body = None
        return response.status_code, body

    def query(self, query: str) -> Sample:
        try:
            code, body = self._get(query)
        except requests.RequestException as exc:
            return Sample(None, query, f"Prometheus at {self.address} did not answer: {type(exc).__name__}: "
                          f"{str(exc)[:200]}")
        sample = read_answer(query, code, body, source=f"Prometheus at {self.address}")
        if not sample.values():
            return sample
        fresh = freshness_query(query)
        if fresh is None:  # the query reads no series (a constant): the evaluation time stands for its sample
            return sample
        try:
            code, body = self._get(fresh)
        except requests.RequestException as exc:
            return Sample(None, query, f"Prometheus at {self.address} did not answer when asked for the time of "
                          f"the newest sample: {type(exc).__name__}")
        if code >= 500:
            return Sample(None, query, f"Prometheus at {self.address} did not answer (HTTP {code}) when asked for "
                          "the time of the newest sample")
        # a selector without samples (absent(...)) or a refused freshness query: the evaluation time stands for it
        return replace(sample, sample_at=newest_sample(code, body))

    def refused(self, query: str) -> str | None:
        try:
            code, body = self._get(query)
        except requests.RequestException:
            return None
        return read_answer(query, code, body, source=f"Prometheus at {self.address}").query_error

    def is_online(self) -> bool:
        try:
            return bool(self._client.check_prometheus_connection())
        except Exception:
            return False
