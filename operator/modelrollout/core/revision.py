"""Revisions: a stable short hash of what a rollout releases (``spec.template`` + ``spec.model``)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

REVISION_LENGTH = 10


def revision_of(template: Mapping[str, Any], model: Mapping[str, Any] | None) -> str:
    """The revision of a pod template and model description, as stored by the apiserver.

    Key order does not matter; any change of value does.
    """
    canonical = json.dumps({"template": template, "model": model or {}}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:REVISION_LENGTH]
