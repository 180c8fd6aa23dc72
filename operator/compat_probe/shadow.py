"""Shadow comparison: the stable and the canary revision answer the same input; how far apart are they?

PURE: no I/O here. The functions take response bodies (bytes or decoded JSON) and return values; the
rolling window is a plain in-memory object (the caller serialises access to it across threads).

Two numbers per pair of answers:

- ``prediction_diff``: the largest absolute difference between the two score vectors, label by label
  (a label one side does not return counts as score 0.0 there). For probabilities it lies in ``[0, 1]``.
- top-1 mismatch: the two answers name different top labels. The top label is read from ``label_path``
  when set and present, else it is the arg-max of the scores (ties broken by the smallest label).

Scores are found at a dotted path (``scores_path``, default ``data.scores``) and may be either a list of
objects ``[{label: ..., score: ...}]`` (key names configurable) or a mapping ``{label: score}``.

Unusable answers: when the *stable* answer cannot be read, the pair says nothing about the canary and is
dropped (:func:`compare_responses` returns an ``Unusable`` with ``side="stable"``). When only the *canary*
answer cannot be read (error status, not JSON, no scores), the pair counts as a top-1 mismatch with no
diff: an answer a client cannot use differs from one it can.

Where the pairs come from is not this module's business. The sidecar's tee mode (``server.py``) proxies
live requests to the canary and copies a fraction of them to the stable track; a router-mirrored setup
(Istio/Gateway API mirroring copies live traffic to a second backend) can feed the very same
:func:`compare_responses` + :class:`ShadowWindow` from wherever it collects the two answers, e.g. a
collector that joins mirrored answers by request id.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Comparison",
    "Prediction",
    "PredictionError",
    "ShadowSpec",
    "ShadowStats",
    "ShadowWindow",
    "Unusable",
    "compare",
    "compare_responses",
    "extract_prediction",
    "prediction_diff",
]


class PredictionError(ValueError):
    """An answer from which no prediction can be read."""


@dataclass(frozen=True, kw_only=True)
class ShadowSpec:
    """Where the prediction lives in an answer."""

    scores_path: str = "data.scores"
    label_path: str | None = "data.label"
    label_key: str = "label"
    score_key: str = "score"


@dataclass(frozen=True, kw_only=True)
class Prediction:
    label: str
    scores: Mapping[str, float]


@dataclass(frozen=True, kw_only=True)
class Comparison:
    """One stable/canary pair. ``diff`` is None when the canary answer was unusable."""

    mismatch: bool
    diff: float | None
    stable_label: str | None = None
    canary_label: str | None = None
    reason: str | None = None


@dataclass(frozen=True, kw_only=True)
class Unusable:
    """A pair that cannot be compared because the stable answer is unreadable: it is dropped."""

    side: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class ShadowStats:
    samples: int  # pairs in the window
    mismatches: int  # top-1 mismatches in the window
    mismatch_rate: float  # mismatches / samples; NaN when the window is empty
    max_diff: float  # largest diff in the window; NaN when no pair in it has a diff
    total: int  # pairs ever added (monotonic, for a counter)


def prediction_diff(stable: Mapping[str, float], canary: Mapping[str, float]) -> float:
    """Max absolute score difference over the union of labels (absent label = 0.0); 0.0 when both empty."""
    labels = set(stable) | set(canary)
    return max((abs(stable.get(label, 0.0) - canary.get(label, 0.0)) for label in labels), default=0.0)


def compare(stable: Prediction, canary: Prediction) -> Comparison:
    return Comparison(
        mismatch=stable.label != canary.label,
        diff=prediction_diff(stable.scores, canary.scores),
        stable_label=stable.label,
        canary_label=canary.label,
    )


def extract_prediction(body: bytes | str | Any, spec: ShadowSpec) -> Prediction:
    """Read label and scores from an answer (raw bytes/str are decoded as JSON). Raises PredictionError."""
    document: Any = body
    if isinstance(body, bytes | str):
        try:
            document = json.loads(body)
        except (UnicodeDecodeError, ValueError) as exc:
            raise PredictionError(f"not JSON: {exc}") from exc

    scores = _read_scores(_lookup(document, spec.scores_path), spec)
    label: str | None = None
    if spec.label_path is not None:
        raw = _lookup(document, spec.label_path)
        if raw is not None:
            if not isinstance(raw, str):
                raise PredictionError(f"{spec.label_path} is not a string")
            label = raw
    if label is None:
        if not scores:
            raise PredictionError(f"no label at {spec.label_path} and no scores at {spec.scores_path}")
        label = min(scores, key=lambda name: (-scores[name], name))
    return Prediction(label=label, scores=scores)


def compare_responses(
    stable_status: int,
    stable_body: bytes,
    canary_status: int,
    canary_body: bytes,
    spec: ShadowSpec,
) -> Comparison | Unusable:
    """Compare two raw answers to the same request (see the module docstring for unusable answers)."""
    if not 200 <= stable_status < 300:
        return Unusable(side="stable", reason=f"stable answered HTTP {stable_status}")
    try:
        stable = extract_prediction(stable_body, spec)
    except PredictionError as exc:
        return Unusable(side="stable", reason=f"stable: {exc}")
    if not 200 <= canary_status < 300:
        return Comparison(
            mismatch=True,
            diff=None,
            stable_label=stable.label,
            reason=f"canary answered HTTP {canary_status}",
        )
    try:
        canary = extract_prediction(canary_body, spec)
    except PredictionError as exc:
        return Comparison(mismatch=True, diff=None, stable_label=stable.label, reason=f"canary: {exc}")
    return compare(stable, canary)


class ShadowWindow:
    """The last ``size`` comparisons: mismatch rate, max diff, counts."""

    def __init__(self, size: int = 500) -> None:
        if size < 1:
            raise ValueError("window size must be at least 1")
        self._items: deque[Comparison] = deque(maxlen=size)
        self._total = 0

    def add(self, comparison: Comparison) -> None:
        self._items.append(comparison)
        self._total += 1

    def stats(self) -> ShadowStats:
        samples = len(self._items)
        mismatches = sum(1 for item in self._items if item.mismatch)
        diffs = [item.diff for item in self._items if item.diff is not None]
        return ShadowStats(
            samples=samples,
            mismatches=mismatches,
            mismatch_rate=mismatches / samples if samples else math.nan,
            max_diff=max(diffs) if diffs else math.nan,
            total=self._total,
        )


# --------------------------------------------------------------------------------------------------------


def _lookup(document: Any, path: str) -> Any:
    value = document
    for segment in path.split("."):
        if isinstance(value, dict):
            if segment not in value:
                return None
            value = value[segment]
        elif isinstance(value, list) and segment.isdigit() and int(segment) < len(value):
            value = value[int(segment)]
        else:
            return None
    return value


def _read_scores(raw: Any, spec: ShadowSpec) -> dict[str, float]:
    if raw is None:
        return {}
    pairs: list[tuple[Any, Any]]
    if isinstance(raw, dict):
        pairs = list(raw.items())
    elif isinstance(raw, list):
        pairs = []
        for item in raw:
            if not isinstance(item, dict) or spec.label_key not in item or spec.score_key not in item:
                keys = f"{spec.label_key!r} and {spec.score_key!r}"
                raise PredictionError(f"{spec.scores_path}: items must be objects with {keys}")
            pairs.append((item[spec.label_key], item[spec.score_key]))
    else:
        raise PredictionError(f"{spec.scores_path} is neither a list nor an object")
    scores: dict[str, float] = {}
    for label, value in pairs:
        if not isinstance(label, str):
            raise PredictionError(f"{spec.scores_path}: label {label!r} is not a string")
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise PredictionError(f"{spec.scores_path}: score of {label!r} is not a finite number")
        scores[label] = float(value)
    return scores
