"""Revisions: a stable short hash of what a rollout releases (``spec.template`` + ``spec.model``)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

REVISION_LENGTH = 10


def revision_of(template: Mapping[str, Any], model: Mapping[str, Any] | None) -> str:
    """The revision of a pod template and model description, as stored by the apiserver.

    Key order does not matter; any change of value does.
    """
    canonical = json.dumps({"template": template, "model": model or {}}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:REVISION_LENGTH]


CONFIG_MAP_LIMIT = 1024 * 1024
"""The apiserver's limit on a ConfigMap's data (keys and values together), in bytes."""
RECORD_HEADROOM = 16 * 1024
"""Bytes kept free below :data:`CONFIG_MAP_LIMIT` for the record's metadata."""


def fitting(order: Sequence[str], entries: Mapping[str, str], keep: int,
            limit: int = CONFIG_MAP_LIMIT - RECORD_HEADROOM) -> list[str]:
    """The newest revisions of ``order`` (oldest first) to keep recorded: at most ``keep + 1``, and only as many
    as fit in one ConfigMap (dropping the oldest first). Empty when even the newest alone does not fit."""
    kept = [r for r in order if r in entries][-(max(keep, 1) + 1):]
    while kept and sum(len(r.encode()) + len(entries[r].encode()) for r in kept) > limit:
        kept = kept[1:]
    return kept
