"""The MetricSource Protocol: a query gives a number or no data, and a source says if it is online."""

from __future__ import annotations

from typing import Protocol

from modelrollout.core.analysis import Sample


class MetricSource(Protocol):
    """Where metric values come from."""

    def query(self, query: str) -> Sample:
        """One number for the query, or a Sample with value None and the reason (never raises)."""
        ...

    def is_online(self) -> bool:
        """The source answers at all."""
        ...
