"""Approval tokens: ``REVISION-STEP``, binding an approval to one revision and one step."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_TOKEN = re.compile(r"^([0-9a-f]{6,64})-([0-9]{1,4})$")

APPROVE = "modelrollout.io/approve"
ABORT = "modelrollout.io/abort"
RETRY = "modelrollout.io/retry"
PROMOTE = "modelrollout.io/promote"
ROLLBACK_TO = "modelrollout.io/rollback-to"
CONTROL_ANNOTATIONS = (APPROVE, ABORT, RETRY, PROMOTE, ROLLBACK_TO)


def annotation_managers(managed_fields: Sequence[Mapping[str, Any]] | None) -> dict[str, str]:
    """Who set each control annotation, from metadata.managedFields. Pure."""
    out: dict[str, str] = {}
    for entry in managed_fields or []:
        annotations = ((entry.get("fieldsV1") or {}).get("f:metadata") or {}).get("f:annotations") or {}
        for key in CONTROL_ANNOTATIONS:
            if f"f:{key}" in annotations:
                out[key] = str(entry.get("manager") or "unknown")
    return out


@dataclass(frozen=True)
class Token:
    """A parsed token."""

    revision: str
    step: int

    def __str__(self) -> str:
        return f"{self.revision}-{self.step}"


def build_token(revision: str, step: int) -> str:
    """The token that opens the gate at ``step`` of ``revision``."""
    return str(Token(revision, step))


def parse_token(value: str) -> Token | None:
    """The token in ``value``, or None when it is not of the form ``REVISION-STEP``."""
    match = _TOKEN.match(value.strip())
    if not match:
        return None
    return Token(match.group(1), int(match.group(2)))


@dataclass(frozen=True)
class TokenCheck:
    """What a presented token means for the gate at (revision, step)."""

    opens: bool
    """It opens this gate."""
    pending: bool
    """It is for a later gate of the same revision: keep it for then (GitOps pre-approval)."""
    reason: str
    """Why it does not open the gate, in words (empty when it does)."""


def check_token(value: str, *, revision: str, step: int | None) -> TokenCheck:
    """Judge ``value`` against the gate at ``step`` of ``revision`` (``step`` None: no gate now)."""
    token = parse_token(value)
    if token is None:
        return TokenCheck(False, False, f"malformed approval {value!r}: expected REVISION-STEP")
    if token.revision != revision:
        return TokenCheck(False, False, f"approval {value} is for revision {token.revision}, not {revision}")
    if step is not None and token.step == step:
        return TokenCheck(True, False, "")
    if step is None or token.step > step:
        return TokenCheck(False, True, f"approval {value} is for step {token.step}; kept until that gate")
    return TokenCheck(False, False, f"approval {value} is for step {token.step}, already passed")


def approve_command(name: str, namespace: str, token: str) -> str:
    """The exact command that approves a gate."""
    ns = "" if namespace == "default" else f" -n {namespace}"
    return f"kubectl annotate mro {name}{ns} {APPROVE}={token} --overwrite"
