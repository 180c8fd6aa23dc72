"""The API contract of a model server, and how one response is judged against it.

PURE: no I/O here. Nothing in this module opens a file, a socket or a clock; the caller sends the golden
requests, measures the time, and hands the outcome to :func:`evaluate`. Parsing YAML *text* is allowed
(:meth:`Contract.from_yaml`); reading the file is the caller's job.

A contract is a list of golden requests (``checks``). Each check names the HTTP method, path and JSON body
to send, and what a compatible answer looks like:

- the HTTP status (``status``, default 200; ``null`` to accept any);
- the response envelope ``{code, message, data}`` with configurable key names and the expected ``code``
  value (``envelope: null`` for servers that answer without an envelope: field paths then start at the
  document root);
- required fields under ``data`` as dotted paths with a JSON type and optional allowed values. A numeric
  segment indexes a list (``scores.0.label``), ``*`` means every element of a list (``scores.*.score``).
  Keys that themselves contain a dot cannot be addressed;
- an optional latency ceiling (``maxLatencyMs``).

Verdicts: a body that is not JSON fails; a wrong or missing envelope fails; a missing field (removed in the
new revision) fails; a field whose JSON type changed fails; a value outside ``enum`` fails; a timeout or a
connection error fails with the error as the reason. Extra fields pass: adding a field is a compatible
change. Every failing rule adds one human-readable reason, so one result can name several broken fields.

:func:`score` is ``passed / total`` over the results of one replay, and **NaN when there are no results**:
zero checks is "no verdict", never "healthy". Prometheus carries NaN as a value; the operator's analysis
must treat a NaN score like missing data (inconclusive), never as a pass.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from compat_probe.presets import Preset, PresetFields, Protocol, expand
from compat_probe.protocols import RAW_RULES, Rule, json_type, judge, judge_raw

__all__ = [
    "Check",
    "CheckResult",
    "Contract",
    "Envelope",
    "FieldSpec",
    "FieldType",
    "JSONScalar",
    "evaluate",
    "score",
]

FieldType = Literal["string", "number", "integer", "boolean", "object", "array", "null"]
JSONScalar = str | int | float | bool | None

_HTTP_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        extra="forbid",
        frozen=True,
    )


class Envelope(_Model):
    """The wrapper every answer comes in: ``{codeKey: <code>, messageKey: str, dataKey: ...}``."""

    code_key: str = "code"
    message_key: str = "message"
    data_key: str = "data"
    code: int | str | None = Field(default=0, description="expected value of the code key; null: any")


class FieldSpec(_Model):
    """One field the answer must carry, as a dotted path under ``data``."""

    path: str = Field(min_length=1)
    type: FieldType
    enum: list[JSONScalar] | None = None
    required: bool = Field(default=True, description="false: may be absent, but if present must match")

    @field_validator("path")
    @classmethod
    def _path_has_no_empty_segment(cls, value: str) -> str:
        if any(not segment for segment in value.split(".")):
            raise ValueError(f"path {value!r} has an empty segment")
        return value


class Check(_Model):
    """One golden request and the shape of a compatible answer to it."""

    name: str = Field(min_length=1)
    method: str = "POST"
    path: str = "/"
    body: Any = None
    headers: dict[str, str] = Field(default_factory=dict)
    status: int | None = 200
    envelope: Envelope | None = Field(default_factory=Envelope)
    fields: list[FieldSpec] = Field(default_factory=list)
    timeout_seconds: float | None = Field(default=None, gt=0)
    max_latency_ms: float | None = Field(default=None, gt=0)
    rule: Rule | None = Field(default=None, description="a protocol rule (presets set it; see protocols.py)")

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        method = value.upper()
        if method not in _HTTP_METHODS:
            raise ValueError(f"unknown HTTP method {value!r}")
        return method

    @field_validator("path")
    @classmethod
    def _absolute_path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"path {value!r} must start with '/'")
        return value

    def body_bytes(self) -> bytes | None:
        """The request body as sent on the wire (JSON), or None when the check has no body."""
        if self.body is None:
            return None
        return json.dumps(self.body, separators=(",", ":"), sort_keys=True).encode()


class Contract(PresetFields):
    """A set of golden requests. ``envelope`` is the default for every check that does not set its own.

    With ``protocol`` the preset of that protocol (:mod:`compat_probe.presets`) expands ``model``,
    ``inputs``/``outputs`` and the ``golden`` inputs into checks, placed before the hand-written ``checks``;
    ``checks`` then holds both. Without an explicit ``envelope``, a protocol other than ``envelope`` means
    answers are not wrapped.
    """

    protocol: Protocol | None = None
    envelope: Envelope | None = Field(default_factory=Envelope)
    timeout_seconds: float = Field(default=2.0, gt=0)
    checks: list[Check] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _inherit_envelope(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        if data.get("protocol") is not None:
            keys = set(Preset.model_fields) | {field.alias for field in Preset.model_fields.values() if field.alias}
            preset = Preset.model_validate({key: value for key, value in data.items() if key in keys})
            own = data.get("checks", [])
            if not isinstance(own, list):
                return data
            data = {**data, "checks": [*expand(preset), *own]}
            if preset.protocol != "envelope" and "envelope" not in data:
                data["envelope"] = None
        if "checks" not in data or not isinstance(data["checks"], list):
            return data
        default = data.get("envelope", {})
        checks = [
            {**check, "envelope": default} if isinstance(check, dict) and "envelope" not in check else check
            for check in data["checks"]
        ]
        return {**data, "checks": checks}

    @model_validator(mode="after")
    def _unique_names(self) -> Contract:
        seen: set[str] = set()
        for check in self.checks:
            if check.name in seen:
                raise ValueError(f"duplicate check name {check.name!r}")
            seen.add(check.name)
        return self

    @classmethod
    def from_yaml(cls, text: str) -> Contract:
        """Parse a contract from YAML (or JSON) text."""
        data = yaml.safe_load(text)
        if data is None:
            data = {}
        return cls.model_validate(data)

    def timeout_for(self, check: Check, override: float | None = None) -> float:
        """Per-request timeout: the check's own, else ``override`` (the CLI flag), else the contract's."""
        if check.timeout_seconds is not None:
            return check.timeout_seconds
        if override is not None:
            return override
        return self.timeout_seconds


@dataclass(frozen=True, kw_only=True)
class CheckResult:
    """The verdict on one golden request. ``reasons`` is empty exactly when ``passed``."""

    name: str
    passed: bool
    reasons: list[str] = field(default_factory=list)
    status_code: int | None = None
    elapsed: float | None = None  # seconds; None when no answer arrived

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "passed": self.passed,
            "reasons": list(self.reasons),
            "status": self.status_code,
            "elapsedMs": None if self.elapsed is None else round(self.elapsed * 1000.0, 3),
        }


def score(results: Iterable[CheckResult]) -> float:
    """Share of passed checks in ``[0, 1]``; ``NaN`` when there are no results (no verdict, not healthy)."""
    total = 0
    passed = 0
    for result in results:
        total += 1
        passed += 1 if result.passed else 0
    if total == 0:
        return math.nan
    return passed / total


def evaluate(
    check: Check,
    status_code: int | None,
    body_bytes: bytes | None,
    elapsed: float | None,
    *,
    error: str | None = None,
) -> CheckResult:
    """Judge one answer to ``check``.

    ``status_code``/``body_bytes`` are what came back (None when nothing did), ``elapsed`` the seconds the
    request took, ``error`` a transport failure ("timeout after 2s", "connection refused"): any error fails
    the check with that error as its reason.
    """
    if error is not None or status_code is None or body_bytes is None:
        reason = f"request failed: {error}" if error is not None else "request failed: no response"
        return CheckResult(name=check.name, passed=False, reasons=[reason], status_code=status_code)

    reasons: list[str] = []
    if check.status is not None and status_code != check.status:
        reasons.append(f"HTTP status {status_code}, expected {check.status}")
    if check.max_latency_ms is not None and elapsed is not None and elapsed * 1000.0 > check.max_latency_ms:
        reasons.append(f"latency {elapsed * 1000.0:.1f}ms above maxLatencyMs {check.max_latency_ms:g}")

    rule = check.rule
    if rule is not None and rule.kind in RAW_RULES:
        reasons.extend(judge_raw(rule, status_code, body_bytes))
    else:
        document, parse_error = _parse_json(body_bytes)
        if parse_error is not None:
            reasons.append(parse_error)
        else:
            reasons.extend(_judge_document(check, document))
            if rule is not None:
                reasons.extend(judge(rule, status_code, document))

    return CheckResult(
        name=check.name, passed=not reasons, reasons=reasons, status_code=status_code, elapsed=elapsed
    )


# --------------------------------------------------------------------------------------------------------


def _parse_json(body: bytes) -> tuple[Any, str | None]:
    if not body.strip():
        return None, "response is not JSON: empty body"
    try:
        return json.loads(body), None
    except (UnicodeDecodeError, ValueError) as exc:
        return None, f"response is not JSON: {_short(str(exc))}"


def _judge_document(check: Check, document: Any) -> list[str]:
    envelope = check.envelope
    if envelope is None:
        return _judge_fields(check.fields, document, root="")

    if not isinstance(document, dict):
        return [f"envelope: expected a JSON object, got {json_type(document)}"]
    reasons: list[str] = []
    if envelope.code_key not in document:
        reasons.append(f"envelope: missing {envelope.code_key!r}")
    elif envelope.code is not None and not _same_value(document[envelope.code_key], envelope.code):
        reasons.append(
            f"envelope: {envelope.code_key} is {_short(json.dumps(document[envelope.code_key]))}, "
            f"expected {json.dumps(envelope.code)}"
        )
    if envelope.message_key not in document:
        reasons.append(f"envelope: missing {envelope.message_key!r}")
    elif not isinstance(document[envelope.message_key], str):
        got = json_type(document[envelope.message_key])
        reasons.append(f"envelope: {envelope.message_key} is {got}, expected string")
    if envelope.data_key not in document:
        reasons.append(f"envelope: missing {envelope.data_key!r}")
        return reasons
    return reasons + _judge_fields(check.fields, document[envelope.data_key], root=envelope.data_key)


def _judge_fields(fields: Sequence[FieldSpec], data: Any, *, root: str) -> list[str]:
    reasons: list[str] = []
    for spec in fields:
        found, problems = _resolve(data, spec.path.split("."), root)
        if spec.required:
            reasons.extend(problems)
        for where, value in found:
            if not _has_type(value, spec.type):
                reasons.append(f"{where}: type changed: expected {spec.type}, got {json_type(value)}")
            elif spec.enum is not None and not any(_same_value(value, allowed) for allowed in spec.enum):
                reasons.append(
                    f"{where}: value {_short(json.dumps(value))} not in enum {_short(json.dumps(spec.enum))}"
                )
    return reasons


def _resolve(value: Any, segments: list[str], where: str) -> tuple[list[tuple[str, Any]], list[str]]:
    """Follow a dotted path: the (concrete path, value) pairs found, and why any branch is missing."""
    if not segments:
        return [(where, value)], []
    head, rest = segments[0], segments[1:]
    if head == "*":
        if not isinstance(value, list):
            return [], [f"{_join(where, '*')}: missing (expected an array at {where or 'root'})"]
        found: list[tuple[str, Any]] = []
        problems: list[str] = []
        for index, item in enumerate(value):
            item_found, item_problems = _resolve(item, rest, _join(where, str(index)))
            found.extend(item_found)
            problems.extend(item_problems)
        return found, problems
    here = _join(where, head)
    if isinstance(value, dict):
        if head not in value:
            return [], [f"{here}: missing"]
        return _resolve(value[head], rest, here)
    if isinstance(value, list) and head.isdigit():
        index = int(head)
        if index >= len(value):
            return [], [f"{here}: missing (array has {len(value)} items)"]
        return _resolve(value[index], rest, here)
    return [], [f"{here}: missing"]


def _join(where: str, segment: str) -> str:
    return f"{where}.{segment}" if where else segment


def _has_type(value: Any, expected: FieldType) -> bool:
    if expected == "string":
        return isinstance(value, str)
    if expected == "boolean":
        return isinstance(value, bool)
    if expected == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if expected == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if expected == "object":
        return isinstance(value, dict)
    if expected == "array":
        return isinstance(value, list)
    return value is None


def _same_value(value: Any, expected: JSONScalar) -> bool:
    """JSON equality: ``true`` is not ``1``, but ``1`` equals ``1.0``."""
    if isinstance(value, bool) or isinstance(expected, bool):
        return isinstance(value, bool) and isinstance(expected, bool) and value == expected
    if isinstance(value, dict | list):
        return False
    return bool(value == expected)


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
