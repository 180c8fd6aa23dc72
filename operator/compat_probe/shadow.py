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

Per protocol (``ShadowSpec.protocol``), what is compared and why:

- ``envelope`` (default): the label/scores above.
- ``open-inference-v2``: every output tensor the stable answer returns (or only ``ShadowSpec.output``) must
  come back from the canary under the same name, datatype and shape, else the canary answer is unusable (a
  mismatch). Floating-point tensors are compared element by element: ``diff`` is the largest absolute
  difference, and a row (the last dimension, e.g. one probability vector per instance) whose arg-max
  differs is a top-1 mismatch; other tensors (labels: INT64, BYTES, BOOL) mismatch where a row differs.
  A request with a batch of n instances counts n rows, so the mismatch rate is per instance.
- ``kserve-v1``: ``predictions`` element by element: probability vectors as above, numbers by their
  difference, labels (strings, integers) by equality; a different count or type is unusable.
- ``openai-chat``: exact text equality is not expected of a language model (sampling, and any retraining,
  changes wording), so the text is not compared. What clients act on is: ``finish_reason`` (a ``length``
  instead of ``stop`` truncates answers), the names of the tool calls and whether their arguments are
  still a JSON object; any of these differing is a mismatch. Where both answers carry token ``logprobs``,
  ``diff`` is the largest absolute difference of the logprobs over the tokens both generated alike (up to
  the first differing token). Streamed answers (server-sent events) are reassembled first.

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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from compat_probe.protocols import parse_sse, tensor_rows

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
    protocol: str = "envelope"  # envelope | open-inference-v2 | kserve-v1 | openai-chat
    output: str | None = None  # open-inference-v2: compare only this output tensor


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
    rows: int = 1  # instances compared in this pair (a batched request has several)
    mismatched_rows: int | None = None  # of those, how many differ in top-1; None: 1 if mismatch else 0

    def mismatch_count(self) -> int:
        if self.mismatched_rows is not None:
            return self.mismatched_rows
        return self.rows if self.mismatch else 0


@dataclass(frozen=True, kw_only=True)
class Unusable:
    """A pair that cannot be compared because the stable answer is unreadable: it is dropped."""

    side: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class ShadowStats:
    samples: int  # pairs in the window
    mismatches: int  # top-1 mismatches (rows) in the window
    mismatch_rate: float  # mismatches / rows; NaN when the window is empty
    max_diff: float  # largest diff in the window; NaN when no pair in it has a diff
    total: int  # pairs ever added (monotonic, for a counter)
    rows: int = 0  # rows (instances) in the window; equals samples for one instance per request


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
    if spec.protocol != "envelope":
        return _compare_protocol(stable_body, canary_status, canary_body, spec)
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
        rows = sum(item.rows for item in self._items)
        mismatches = sum(item.mismatch_count() for item in self._items)
        diffs = [item.diff for item in self._items if item.diff is not None]
        return ShadowStats(
            samples=samples,
            mismatches=mismatches,
            mismatch_rate=mismatches / rows if rows else math.nan,
            max_diff=max(diffs) if diffs else math.nan,
            total=self._total,
            rows=rows,
        )


# ------------------------------------------------------------------------------------------ per protocol


class _Unreadable(ValueError):
    pass


def _compare_protocol(
    stable_body: bytes, canary_status: int, canary_body: bytes, spec: ShadowSpec
) -> Comparison | Unusable:
    reader = _READERS.get(spec.protocol)
    if reader is None:
        raise ValueError(f"unknown shadow protocol {spec.protocol!r}")
    try:
        stable = reader(stable_body, spec)
    except _Unreadable as exc:
        return Unusable(side="stable", reason=f"stable: {exc}")
    rows = max(1, stable.rows)
    if not 200 <= canary_status < 300:
        return Comparison(mismatch=True, diff=None, reason=f"canary answered HTTP {canary_status}", rows=rows,
                          mismatched_rows=rows)
    try:
        canary = reader(canary_body, spec)
        result: Comparison = stable.compare(canary)
        return result
    except _Unreadable as exc:
        return Comparison(mismatch=True, diff=None, reason=f"canary: {exc}", rows=rows, mismatched_rows=rows)


@dataclass(frozen=True, kw_only=True)
class _Tensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    rows: list[list[Any]]

    @property
    def floating(self) -> bool:
        return self.datatype.startswith("FP")


@dataclass(frozen=True, kw_only=True)
class _Tensors:
    """Output tensors (v2), or v1 predictions as one tensor per kind of element."""

    tensors: list[_Tensor]

    @property
    def rows(self) -> int:
        return len(self.tensors[0].rows) if self.tensors else 0

    def compare(self, canary: _Tensors) -> Comparison:
        by_name = {tensor.name: tensor for tensor in canary.tensors}
        diff: float | None = None
        bad_rows: set[int] = set()
        for tensor in self.tensors:
            other = by_name.get(tensor.name)
            if other is None:
                raise _Unreadable(f"output {tensor.name!r} missing")
            if (other.datatype, other.shape) != (tensor.datatype, tensor.shape):
                raise _Unreadable(
                    f"output {tensor.name!r} is {other.datatype}{list(other.shape)}, "
                    f"stable has {tensor.datatype}{list(tensor.shape)}"
                )
            for index, (mine, theirs) in enumerate(zip(tensor.rows, other.rows, strict=True)):
                if tensor.floating:
                    row_diff = max((abs(float(a) - float(b)) for a, b in zip(mine, theirs, strict=True)), default=0.0)
                    diff = row_diff if diff is None else max(diff, row_diff)
                    if len(mine) > 1 and _argmax(mine) != _argmax(theirs):
                        bad_rows.add(index)
                elif mine != theirs:
                    bad_rows.add(index)
        rows = max(1, self.rows)
        return Comparison(mismatch=bool(bad_rows), diff=diff, rows=rows, mismatched_rows=len(bad_rows))


def _argmax(row: list[Any]) -> int:
    return max(range(len(row)), key=lambda index: (float(row[index]), -index))


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise _Unreadable(f"not JSON: {exc}") from exc


def _read_v2(body: bytes, spec: ShadowSpec) -> _Tensors:
    doc = _json(body)
    outputs = doc.get("outputs") if isinstance(doc, dict) else None
    if not isinstance(outputs, list) or not outputs:
        raise _Unreadable("no outputs")
    tensors: list[_Tensor] = []
    for item in outputs:
        if spec.output is not None and isinstance(item, dict) and item.get("name") != spec.output:
            continue
        try:
            rows = tensor_rows(item)
        except ValueError as exc:
            raise _Unreadable(f"output {item.get('name') if isinstance(item, dict) else item!r}: {exc}") from exc
        if item["datatype"].startswith("FP") and not all(_finite(value) for row in rows for value in row):
            raise _Unreadable(f"output {item['name']!r}: not finite numbers")
        tensors.append(_Tensor(name=item["name"], datatype=item["datatype"], shape=tuple(item["shape"]), rows=rows))
    if not tensors:
        raise _Unreadable(f"no output {spec.output!r}")
    return _Tensors(tensors=tensors)


def _read_v1(body: bytes, spec: ShadowSpec) -> _Tensors:
    doc = _json(body)
    predictions = doc.get("predictions") if isinstance(doc, dict) else None
    if not isinstance(predictions, list) or not predictions:
        raise _Unreadable("no predictions")
    first = predictions[0]
    if isinstance(first, list):
        if not all(isinstance(p, list) and all(_finite(v) for v in p) for p in predictions):
            raise _Unreadable("predictions: not all arrays of numbers")
        datatype = "FP64"
        rows = [list(p) for p in predictions]
    elif isinstance(first, float) or (_finite(first) and any(isinstance(p, float) for p in predictions)):
        if not all(_finite(p) for p in predictions):
            raise _Unreadable("predictions: not all numbers")
        datatype, rows = "FP64", [[p] for p in predictions]
    else:
        if any(isinstance(p, list | dict | float) or type(p) is not type(first) for p in predictions):
            raise _Unreadable("predictions: mixed types")
        datatype, rows = f"LABEL-{type(first).__name__}", [[p] for p in predictions]
    width = len(rows[0])
    if any(len(row) != width for row in rows):
        raise _Unreadable("predictions: rows of different lengths")
    return _Tensors(tensors=[_Tensor(name="predictions", datatype=datatype, shape=(len(rows), width), rows=rows)])


@dataclass(frozen=True, kw_only=True)
class _Chat:
    finish_reason: Any
    tool_names: tuple[str, ...]
    arguments_ok: bool
    logprobs: list[tuple[str, float]] | None

    rows = 1

    def compare(self, canary: _Chat) -> Comparison:
        reasons: list[str] = []
        if canary.finish_reason != self.finish_reason:
            reasons.append(f"finish_reason {self.finish_reason!r} -> {canary.finish_reason!r}")
        if canary.tool_names != self.tool_names:
            reasons.append(f"tool calls {list(self.tool_names)} -> {list(canary.tool_names)}")
        if self.arguments_ok and not canary.arguments_ok:
            reasons.append("tool-call arguments are no longer a JSON object")
        diff: float | None = None
        if self.logprobs is not None and canary.logprobs is not None:
            diff = 0.0
            for (token, mine), (other_token, theirs) in zip(self.logprobs, canary.logprobs, strict=False):
                if token != other_token:
                    break
                diff = max(diff, abs(mine - theirs))
        return Comparison(
            mismatch=bool(reasons),
            diff=diff,
            stable_label=str(self.finish_reason),
            canary_label=str(canary.finish_reason),
            reason="; ".join(reasons) or None,
        )


def _read_chat(body: bytes, spec: ShadowSpec) -> _Chat:
    stripped = body.lstrip()
    if stripped.startswith(b"data:") or stripped.startswith(b":"):
        events, problems = parse_sse(body)
        if problems or not events:
            raise _Unreadable("; ".join(problems) or "empty stream")
        return _chat_from_chunks([_json(event.encode()) for event in events if event != "[DONE]"])
    doc = _json(body)
    choices = doc.get("choices") if isinstance(doc, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise _Unreadable("no choices")
    choice = choices[0]
    message: dict[str, Any] = choice["message"] if isinstance(choice.get("message"), dict) else {}
    names: list[str] = []
    arguments: list[Any] = []
    for call in message.get("tool_calls") or []:
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            names.append(str(function.get("name")))
            arguments.append(function.get("arguments"))
    return _Chat(
        finish_reason=choice.get("finish_reason"),
        tool_names=tuple(names),
        arguments_ok=all(_json_object(text) for text in arguments),
        logprobs=_logprobs(choice.get("logprobs")),
    )


def _chat_from_chunks(chunks: list[Any]) -> _Chat:
    finish: Any = None
    names: dict[int, str] = {}
    arguments: dict[int, list[str]] = {}
    logprobs: list[tuple[str, float]] | None = None
    for chunk in chunks:
        for choice in (chunk.get("choices") or []) if isinstance(chunk, dict) else []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta: dict[str, Any] = choice["delta"] if isinstance(choice.get("delta"), dict) else {}
            for call in delta.get("tool_calls") or []:
                if not isinstance(call, dict):
                    continue
                index = int(call.get("index", 0))
                function = call.get("function") or {}
                if isinstance(function.get("name"), str):
                    names[index] = function["name"]
                if isinstance(function.get("arguments"), str):
                    arguments.setdefault(index, []).append(function["arguments"])
            part = _logprobs(choice.get("logprobs"))
            if part is not None:
                logprobs = [*(logprobs or []), *part]
            if choice.get("finish_reason") is not None:
                finish = choice["finish_reason"]
    return _Chat(
        finish_reason=finish,
        tool_names=tuple(names[index] for index in sorted(names)),
        arguments_ok=all(_json_object("".join(arguments.get(index, []))) for index in names),
        logprobs=logprobs,
    )


def _logprobs(raw: Any) -> list[tuple[str, float]] | None:
    if not isinstance(raw, dict) or not isinstance(raw.get("content"), list):
        return None
    out: list[tuple[str, float]] = []
    for entry in raw["content"]:
        if isinstance(entry, dict) and isinstance(entry.get("token"), str) and _finite(entry.get("logprob")):
            out.append((entry["token"], float(entry["logprob"])))
    return out


def _json_object(text: Any) -> bool:
    if not isinstance(text, str):
        return False
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


_READERS: dict[str, Callable[[bytes, ShadowSpec], Any]] = {
    "open-inference-v2": _read_v2,
    "kserve-v1": _read_v1,
    "openai-chat": _read_chat,
}


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
