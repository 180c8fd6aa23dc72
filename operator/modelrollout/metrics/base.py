"""The MetricSource Protocol: a query gives a number or no data, a source says if it refuses a query and if it is
online."""

from __future__ import annotations

from typing import Protocol

from modelrollout.core.analysis import Sample


class MetricSource(Protocol):
    """Where metric values come from."""

    def query(self, query: str) -> Sample:
        """One number for the query, or a Sample with value None and the reason (never raises)."""
        ...

    def refused(self, query: str) -> str | None:
        """The source's words if it refuses the query itself (a parse error, an unknown function), else None;
        one request, and a source that does not answer is no refusal (never raises)."""
        ...

    def is_online(self) -> bool:
        """The source answers at all."""
        ...
