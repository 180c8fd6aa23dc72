"""Prometheus as a metric source, through prometheus-api-client."""

from __future__ import annotations

import math
from typing import Any

from prometheus_api_client import PrometheusConnect

from modelrollout.core.analysis import Sample


class PrometheusSource:
    """Instant queries against one Prometheus; every failure becomes no data, never an exception."""

    def __init__(self, address: str, *, timeout: float = 5.0) -> None:
        self.address = address
        self.timeout = timeout
        self._client = PrometheusConnect(url=address, disable_ssl=True, timeout=max(1, math.ceil(timeout)))

    def query(self, query: str) -> Sample:
        try:
            result: Any = self._client.custom_query(query, timeout=max(1, math.ceil(self.timeout)))
        except Exception as exc:  # unreachable, timeout, bad query: all "no data"
            return Sample(None, query, f"Prometheus at {self.address} did not answer: {type(exc).__name__}: "
                          f"{str(exc)[:200]}")
        if isinstance(result, list):
            if not result:
                return Sample(None, query, "empty result")
            first = result[0]
            value = first.get("value", [None, None])[1] if isinstance(first, dict) else result[-1]
        elif isinstance(result, dict):  # scalar result
            value = result.get("value", [None, None])[1]
        else:
            value = None
        try:
            number = float(value) if value is not None else None
        except (TypeError, ValueError):
            number = None
        if number is None:
            return Sample(None, query, f"unexpected result {str(result)[:200]}")
        if math.isnan(number):
            return Sample(None, query, "NaN")
        return Sample(number, query)

    def is_online(self) -> bool:
        try:
            return bool(self._client.check_prometheus_connection())
        except Exception:
            return False
