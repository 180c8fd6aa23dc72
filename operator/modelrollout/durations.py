"""Durations as users write them (``30s``, ``5m``, ``1h30m``, ``250ms``), parsed once.

Pure: no I/O. The API models use :data:`Duration`, which validates the string, keeps it as a
``timedelta`` in Python and serialises it back to the same compact form, so the CRD carries a
string with a pattern and the code never parses a duration twice.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, PlainSerializer, WithJsonSchema

DURATION_PATTERN = r"^([0-9]+(ms|s|m|h))+$"
_PART = re.compile(r"([0-9]+)(ms|s|m|h)")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}
MAX_MILLIS = 366 * 24 * 3_600_000


def parse_duration(value: Any) -> timedelta:
    """Parse ``1h30m``-style text (or pass a timedelta through); raise ValueError on anything else."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError(f"a duration is a string such as '30s' or '5m', not {value!r}")
    text = value.strip()
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"unparseable duration {value!r}: use digits with ms, s, m or h, e.g. '30s', '1h30m'")
    millis = sum(int(n) * _UNIT_MS[unit] for n, unit in _PART.findall(text))
    if millis > MAX_MILLIS:
        raise ValueError(f"duration {value!r} is longer than the maximum of 366 days")
    return timedelta(milliseconds=millis)


def format_duration(value: timedelta) -> str:
    """The compact form of a duration: ``timedelta(seconds=90)`` -> ``1m30s``."""
    millis = round(value.total_seconds() * 1000)
    if millis == 0:
        return "0s"
    out = []
    for unit in ("h", "m", "s", "ms"):
        size = _UNIT_MS[unit]
        count, millis = divmod(millis, size)
        if count:
            out.append(f"{count}{unit}")
    return "".join(out)


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"type": "string", "pattern": DURATION_PATTERN, "maxLength": 32}),
]
"""A duration field: ``'30s'`` in YAML, ``timedelta`` in Python."""



def at_least(minimum: str) -> AfterValidator:
    """Metadata for ``Annotated[Duration, at_least("1s"), schema_at_least("1s")]``: refused below ``minimum`` by
    the model, naming the field."""
    floor = parse_duration(minimum)

    def check(value: timedelta) -> timedelta:
        if value < floor:
            raise ValueError(f"must be at least {minimum}, not {format_duration(value)}")
        return value

    return AfterValidator(check)


def schema_at_least(minimum: str) -> WithJsonSchema:
    """The CRD side of :func:`at_least`: a CEL rule (the apiserver's ``duration()`` reads the same ``1h30m`` and
    ``250ms`` forms)."""
    return WithJsonSchema({"type": "string", "pattern": DURATION_PATTERN, "maxLength": 32,
                           "x-kubernetes-validations": [{"rule": f"duration(self) >= duration('{minimum}')",
                                                         "message": f"must be at least {minimum}"}]})
