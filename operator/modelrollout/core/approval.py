"""Approval tokens: ``REVISION-STEP``, binding an approval to one revision and one step."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from modelrollout.core.steps import step_of

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


def check_token(
    value: str, *, revision: str, step: int | None, total: int, gates: Collection[int] = (),
    what: str = "approval",
) -> TokenCheck:
    """Judge ``value`` against the gate at ``step`` of ``revision`` (``step`` None: no gate now).

    ``total`` is the number of steps of the revision and ``gates`` the steps at which a gate will stop it (the
    spec's gates and the preflight gate); a token for a later step is kept (pre-approval) only when a gate
    will be there, and only for ``what="approval"``: a promote token must be the current one.
    """
    token = parse_token(value)
    if token is None:
        return TokenCheck(False, False, f"malformed {what} {value!r}: expected REVISION-STEP")
    if token.revision != revision:
        return TokenCheck(False, False, f"{what} {value} is for revision {token.revision}, not {revision}")
    if step is not None and token.step == step:
        return TokenCheck(True, False, "")
    if token.step >= total:
        return TokenCheck(False, False, f"{what} {value} names step index {token.step}, but revision {revision} has "
                          f"{total} steps (indices 0-{total - 1}): there is no such step")
    named = f"step {step_of(token.step, total)}"
    if step is not None and token.step < step:
        return TokenCheck(False, False, f"{what} {value} is for {named}, already passed")
    if what != "approval":
        return TokenCheck(False, False, f"{what} {value} is for {named}, not the current step")
    if token.step in gates:
        return TokenCheck(False, True, f"{what} {value} is for the gate at {named}; kept until that gate")
    listed = ", ".join(f"index {g} (step {step_of(g, total)})" for g in sorted(gates)) or "none"
    return TokenCheck(False, False, f"{what} {value} is for {named}, which is not a gate and will not wait for an "
                      f"approval (gates of this revision: {listed})")


def approve_command(name: str, namespace: str, token: str) -> str:
    """The exact command that approves a gate."""
    ns = "" if namespace == "default" else f" -n {namespace}"
    return f"kubectl annotate mro {name}{ns} {APPROVE}={token} --overwrite"
