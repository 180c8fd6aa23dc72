"""What a Prometheus answer means for analysis: a defined verdict for every answer. Pure.

``read_answer`` turns one HTTP answer of ``/api/v1/query`` (status code and JSON body) into a
:class:`~modelrollout.core.analysis.Sample`:

- a **finite number** (a scalar, or a vector whose every series is finite) is judged against min/max; a
  vector of several series is judged series by series (see :func:`modelrollout.core.analysis.judge`);
- **no usable number** is Inconclusive, with the answer named: an empty vector, NaN, +Inf or -Inf (in any
  series), a string, a range vector (matrix), an answer that is not Prometheus's JSON;
- **the query is refused** (HTTP 4xx: ``bad_data`` for a parse error or an unknown function,
  ``execution`` for a query that cannot run) is the user's to fix: a query error, judged as a failure of
  the metric (before any traffic moves, the rollout is Invalid);
- **Prometheus did not answer** (transport error, timeout, 5xx: ``timeout``, ``unavailable``,
  ``internal``) is Inconclusive and retried at the next interval.

``selectors`` and ``freshness_query`` find when the newest raw sample a query reads was scraped, so a
repeat of the same sample is not counted as new evidence.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from modelrollout.core.analysis import Sample, Series, labels_text

MAX_SERIES = 50
"""Series of one vector answer that are judged; an answer with more is Inconclusive (aggregate it)."""

_QUOTE = 200
"""Characters of an answer or an error quoted in a message."""


def _clip(text: str) -> str:
    return text if len(text) <= _QUOTE else text[:_QUOTE] + "..."


def number_text(value: float) -> str:
    """A value as text: ``+Inf``, ``-Inf``, ``NaN`` or ``%g``."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return f"{value:g}"


def _parse_number(raw: Any) -> float | None:
    """Prometheus sends numbers as strings (``"0.99"``, ``"+Inf"``, ``"NaN"``); anything else is None."""
    if not isinstance(raw, str | int | float) or isinstance(raw, bool):
        return None
    try:
        return float(raw)
    except (TypeError, ValueError):
        return None


def _labels(metric: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(metric, Mapping):
        return ()
    return tuple(sorted((str(k), str(v)) for k, v in metric.items()))


def _timestamp(raw: Any) -> datetime | None:
    number = _parse_number(raw)
    if number is None or not math.isfinite(number):
        return None
    try:
        return datetime.fromtimestamp(number, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def read_answer(query: str, status_code: int, body: Any, *, source: str = "Prometheus") -> Sample:
    """The Sample for one answer of an instant query (``body``: the decoded JSON, or None if it was not JSON)."""
    if not isinstance(body, Mapping):
        if 400 <= status_code < 500:
            return Sample(None, query, query_error=f"{source} refused the query (HTTP {status_code})")
        return Sample(None, query, f"{source} answered HTTP {status_code} without a Prometheus JSON body")
    if body.get("status") != "success":
        kind = str(body.get("errorType") or "error")
        text = _clip(str(body.get("error") or "no error message"))
        if 400 <= status_code < 500:
            return Sample(None, query, query_error=f"{source} refused the query ({status_code} {kind}): {text}")
        return Sample(None, query, f"{source} did not answer ({status_code} {kind}): {text}")
    data = body.get("data")
    if not isinstance(data, Mapping):
        return Sample(None, query, f"{source} answered without data: {_clip(str(body))}")
    result_type = data.get("resultType")
    result = data.get("result")
    if result_type == "scalar" and isinstance(result, Sequence) and len(result) == 2:
        value = _parse_number(result[1])
        if value is None:
            return Sample(None, query, f"unreadable scalar {_clip(str(result[1]))}")
        if not math.isfinite(value):
            return Sample(None, query, f"the answer is {number_text(value)}, not a finite number")
        return Sample(value, query, series=(Series((), value),))
    if result_type == "string":
        literal = result[1] if isinstance(result, Sequence) and len(result) == 2 else result
        return Sample(None, query, f"the answer is a string ({_clip(repr(literal))}), not a number")
    if result_type == "matrix":
        return Sample(None, query, "the answer is a range vector (matrix), not an instant value: "
                      "remove the [range] selector or wrap it in a function such as max_over_time")
    if result_type != "vector" or not isinstance(result, Sequence) or isinstance(result, str):
        return Sample(None, query, f"unexpected answer of type {_clip(str(result_type))}")
    if not result:
        return Sample(None, query, "empty result: the query selects no series")
    if len(result) > MAX_SERIES:
        return Sample(None, query, f"{len(result)} series answered (more than {MAX_SERIES} are not judged one "
                      "by one): aggregate them (min, max, sum)")
    series: list[Series] = []
    for item in result:
        if not isinstance(item, Mapping):
            return Sample(None, query, f"unreadable series {_clip(str(item))}")
        raw = item.get("value")
        value = _parse_number(raw[1]) if isinstance(raw, Sequence) and len(raw) == 2 else None
        labels = _labels(item.get("metric"))
        if value is None:
            return Sample(None, query, f"unreadable value in series {labels_text(labels)}")
        if not math.isfinite(value):
            where = f" in series {labels_text(labels)}" if len(result) > 1 or labels else ""
            return Sample(None, query, f"the answer is {number_text(value)}{where}, not a finite number")
        series.append(Series(labels, value))
    return Sample(series[0].value if len(series) == 1 else None, query, series=tuple(series))


# -- freshness: when was the newest raw sample a query reads scraped -----------------------------------------

_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "atan2"})
_GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_AGGREGATIONS = frozenset({"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
                           "bottomk", "topk", "quantile", "limitk", "limit_ratio"})
_NUMBERS = frozenset({"inf", "nan"})
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_SPACE = re.compile(r"\s*")


def _skip_string(text: str, i: int) -> int:
    """Index after the string literal that starts at ``i``."""
    quote = text[i]
    i += 1
    while i < len(text):
        if text[i] == "\\" and quote != "`":
            i += 2
            continue
        if text[i] == quote:
            return i + 1
        i += 1
    raise ValueError("unterminated string")


def _skip_block(text: str, i: int, opening: str, closing: str) -> int:
    """Index after the block that opens at ``i`` (strings inside are skipped whole)."""
    depth = 0
    while i < len(text):
        c = text[i]
        if c in "\"'`":
            i = _skip_string(text, i)
            continue
        if c == opening:
            depth += 1
        elif c == closing:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise ValueError(f"unclosed {opening}")


def selectors(query: str) -> tuple[str, ...] | None:
    """The instant vector selectors a PromQL query reads (range selectors without their range), in order and
    without repeats; None when the query cannot be read (then freshness is not known)."""
    out: list[str] = []
    text = query
    i = 0
    try:
        while i < len(text):
            c = text[i]
            if c.isspace():
                i += 1
            elif c == "#":
                end = text.find("\n", i)
                i = len(text) if end < 0 else end + 1
            elif c in "\"'`":
                i = _skip_string(text, i)
            elif c == "[":
                i = _skip_block(text, i, "[", "]")
            elif c == "{":
                end = _skip_block(text, i, "{", "}")
                out.append(text[i:end])
                i = end
            elif c.isdigit() or (c == "." and i + 1 < len(text) and text[i + 1].isdigit()):
                match = re.compile(r"[0-9A-Za-z_.]+").match(text, i)
                assert match is not None
                i = match.end()
            elif _IDENT.match(text, i):
                match = _IDENT.match(text, i)
                assert match is not None
                word = match.group(0)
                after = _SPACE.match(text, match.end())
                assert after is not None
                j = after.end()
                lower = word.lower()
                if lower in _GROUPING:
                    i = _skip_block(text, j, "(", ")") if j < len(text) and text[j] == "(" else j
                elif lower in _KEYWORDS or lower in _NUMBERS:
                    i = match.end()
                elif (j < len(text) and text[j] == "(") or word in _AGGREGATIONS:
                    i = match.end()  # a function or an aggregation, not a metric name
                elif j < len(text) and text[j] == "{":
                    end = _skip_block(text, j, "{", "}")
                    out.append(word + text[j:end])
                    i = end
                else:
                    out.append(word)
                    i = match.end()
            else:
                i += 1
    except ValueError:
        return None
    return tuple(dict.fromkeys(out))


FRESHNESS_LABEL = "__modelrollout_selector"


def freshness_query(query: str) -> str | None:
    """A query answering, per selector the query reads, the time of its newest raw sample (one series per
    selector, labelled ``FRESHNESS_LABEL``); None when the query reads no selector or cannot be read."""
    found = selectors(query)
    if not found:
        return None
    parts = [f'label_replace(max(timestamp({s})), "{FRESHNESS_LABEL}", "{n}", "", "")' for n, s in enumerate(found)]
    return " or ".join(parts)


def newest_sample(status_code: int, body: Any) -> datetime | None:
    """The newest sample time in the answer to a :func:`freshness_query`; None when it has none."""
    if status_code != 200 or not isinstance(body, Mapping) or body.get("status") != "success":
        return None
    data = body.get("data")
    result = data.get("result") if isinstance(data, Mapping) else None
    if not isinstance(result, Sequence) or isinstance(result, str):
        return None
    times = [_timestamp(item["value"][1]) for item in result
             if isinstance(item, Mapping) and isinstance(item.get("value"), Sequence) and len(item["value"]) == 2]
    known = [t for t in times if t is not None]
    return max(known) if known else None
