"""Shadow comparison math, the rolling window, and the tee sampler."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from compat_probe.refserver import ModelConfig, predict
from compat_probe.server import FractionSampler
from compat_probe.shadow import (
    Comparison,
    Prediction,
    PredictionError,
    ShadowSpec,
    ShadowWindow,
    Unusable,
    compare,
    compare_responses,
    extract_prediction,
    prediction_diff,
)

SPEC = ShadowSpec()
LABELS = ("positive", "negative", "neutral")


def envelope(label: str, scores: Any) -> bytes:
    return json.dumps({"code": 0, "message": "ok", "data": {"label": label, "scores": scores}}).encode()


def listed(**scores: float) -> list[dict[str, Any]]:
    return [{"label": label, "score": score} for label, score in scores.items()]


# ------------------------------------------------------------------------------------------------- diff math


def test_diff_is_max_absolute_difference() -> None:
    assert prediction_diff({"a": 0.7, "b": 0.3}, {"a": 0.4, "b": 0.6}) == pytest.approx(0.3)
    assert prediction_diff({"a": 0.9, "b": 0.1}, {"a": 0.85, "b": 0.15}) == pytest.approx(0.05)
    assert prediction_diff({"a": 0.5}, {"a": 0.5}) == 0.0


def test_diff_counts_an_absent_label_as_zero() -> None:
    assert prediction_diff({"a": 0.6, "b": 0.4}, {"a": 0.6, "c": 0.4}) == pytest.approx(0.4)
    assert prediction_diff({}, {}) == 0.0


def test_compare_top1() -> None:
    same = compare(Prediction(label="a", scores={"a": 0.6}), Prediction(label="a", scores={"a": 0.55}))
    assert not same.mismatch
    assert same.diff == pytest.approx(0.05)
    other = compare(Prediction(label="a", scores={}), Prediction(label="b", scores={}))
    assert other.mismatch
    assert (other.stable_label, other.canary_label) == ("a", "b")


# ------------------------------------------------------------------------------------------------ extraction


def test_extract_from_list_and_from_mapping() -> None:
    from_list = extract_prediction(envelope("a", listed(a=0.6, b=0.4)), SPEC)
    from_map = extract_prediction(envelope("a", {"a": 0.6, "b": 0.4}), SPEC)
    assert from_list == from_map == Prediction(label="a", scores={"a": 0.6, "b": 0.4})


def test_top1_from_argmax_when_no_label_path_or_label_absent() -> None:
    body = json.dumps({"data": {"scores": {"b": 0.3, "a": 0.3, "c": 0.4}}}).encode()
    assert extract_prediction(body, SPEC).label == "c"
    tie = json.dumps({"data": {"scores": {"b": 0.5, "a": 0.5}}}).encode()
    assert extract_prediction(tie, ShadowSpec(label_path=None)).label == "a"


def test_custom_paths_and_keys() -> None:
    spec = ShadowSpec(scores_path="predictions.0.probs", label_path=None, label_key="class", score_key="p")
    doc = {"predictions": [{"probs": [{"class": "x", "p": 0.2}, {"class": "y", "p": 0.8}]}]}
    assert extract_prediction(doc, spec) == Prediction(label="y", scores={"x": 0.2, "y": 0.8})


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        json.dumps({"data": {}}).encode(),
        json.dumps({"data": {"scores": "high"}}).encode(),
        json.dumps({"data": {"scores": [{"label": "a"}]}}).encode(),
        json.dumps({"data": {"scores": {"a": True}}}).encode(),
        json.dumps({"data": {"label": 3, "scores": {"a": 1.0}}}).encode(),
    ],
)
def test_unreadable_predictions_raise(body: bytes) -> None:
    with pytest.raises(PredictionError):
        extract_prediction(body, SPEC)


def test_compare_responses_unusable_sides() -> None:
    good = envelope("a", listed(a=0.8, b=0.2))
    assert isinstance(compare_responses(500, good, 200, good, SPEC), Unusable)
    assert isinstance(compare_responses(200, b"<html>", 200, good, SPEC), Unusable)
    failed = compare_responses(200, good, 503, b"", SPEC)
    assert failed == Comparison(mismatch=True, diff=None, stable_label="a", reason="canary answered HTTP 503")
    garbage = compare_responses(200, good, 200, b"oops", SPEC)
    assert isinstance(garbage, Comparison) and garbage.mismatch and garbage.diff is None
    equal = compare_responses(200, good, 200, good, SPEC)
    assert equal == Comparison(mismatch=False, diff=0.0, stable_label="a", canary_label="a")


# ---------------------------------------------------------------------------------------------------- window


def test_window_rates_and_nan_when_empty() -> None:
    window = ShadowWindow(size=10)
    empty = window.stats()
    assert empty.samples == 0 and empty.total == 0
    assert math.isnan(empty.mismatch_rate) and math.isnan(empty.max_diff)

    window.add(Comparison(mismatch=False, diff=0.1))
    window.add(Comparison(mismatch=True, diff=0.4))
    window.add(Comparison(mismatch=True, diff=None))
    window.add(Comparison(mismatch=False, diff=0.0))
    stats = window.stats()
    assert (stats.samples, stats.mismatches, stats.total) == (4, 2, 4)
    assert stats.mismatch_rate == 0.5
    assert stats.max_diff == pytest.approx(0.4)


def test_window_rolls() -> None:
    window = ShadowWindow(size=3)
    window.add(Comparison(mismatch=True, diff=0.9))
    for _ in range(3):
        window.add(Comparison(mismatch=False, diff=0.1))
    stats = window.stats()
    assert (stats.samples, stats.mismatches, stats.total) == (3, 0, 4)
    assert stats.mismatch_rate == 0.0
    assert stats.max_diff == pytest.approx(0.1)
    with pytest.raises(ValueError):
        ShadowWindow(size=0)


# ------------------------------------------------------------------------------------------------ properties

probabilities = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
label_names = st.sampled_from(["a", "b", "c", "d", "e"])
score_maps = st.dictionaries(label_names, probabilities, max_size=5)


@given(score_maps, score_maps)
def test_diff_of_probabilities_is_within_0_and_1(a: dict[str, float], b: dict[str, float]) -> None:
    diff = prediction_diff(a, b)
    assert 0.0 <= diff <= 1.0
    assert diff == prediction_diff(b, a)
    assert prediction_diff(a, a) == 0.0


@given(
    st.lists(
        st.builds(Comparison, mismatch=st.booleans(), diff=st.none() | probabilities),
        max_size=60,
    ),
    st.integers(min_value=1, max_value=20),
)
def test_window_mismatch_rate_is_within_0_and_1(items: list[Comparison], size: int) -> None:
    window = ShadowWindow(size=size)
    for item in items:
        window.add(item)
        stats = window.stats()
        assert stats.samples <= size
        assert stats.total >= stats.samples
        assert 0.0 <= stats.mismatch_rate <= 1.0
        assert math.isnan(stats.max_diff) or 0.0 <= stats.max_diff <= 1.0
    assert window.stats().total == len(items)


@given(st.text(max_size=40))
def test_refserver_versions_through_the_comparator(text: str) -> None:
    def body(version: str) -> bytes:
        data = predict(text, version=version, labels=LABELS, config=ModelConfig())
        return json.dumps({"code": 0, "message": "ok", "data": data}).encode()

    same = compare_responses(200, body("v1"), 200, body("v2-compatible"), SPEC)
    assert isinstance(same, Comparison)
    assert not same.mismatch
    assert same.diff == 0.0
    relabelled = compare_responses(200, body("v1"), 200, body("v2-relabel"), SPEC)
    assert isinstance(relabelled, Comparison)
    assert relabelled.diff is not None and 0.0 <= relabelled.diff <= 1.0
    scores = extract_prediction(body("v1"), SPEC).scores
    if len(set(scores.values())) == len(scores):  # no tie: the top label always moves
        assert relabelled.mismatch


@given(st.floats(min_value=0.0, max_value=1.0), st.integers(min_value=0, max_value=300))
def test_sampler_takes_the_fraction(fraction: float, n: int) -> None:
    sampler = FractionSampler(fraction)
    taken = sum(sampler.take() for _ in range(n))
    assert taken == math.floor(n * fraction)


def test_sampler_rejects_out_of_range() -> None:
    with pytest.raises(ValueError):
        FractionSampler(1.5)
