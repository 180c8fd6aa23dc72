"""Shadow comparison per protocol: v2 tensors element-wise, v1 predictions, OpenAI chat without text."""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import pytest

from compat_probe.shadow import Comparison, ShadowSpec, ShadowWindow, Unusable, compare_responses

V2 = ShadowSpec(protocol="open-inference-v2")
V1 = ShadowSpec(protocol="kserve-v1")
CHAT = ShadowSpec(protocol="openai-chat")

STABLE_PROBA = [0.98, 0.02, 0.0, 0.0001, 0.08, 0.9199]


def v2(proba: list[float], labels: list[Any] | None = None, **proba_changes: Any) -> bytes:
    outputs: list[dict[str, Any]] = [
        {"name": "predict", "shape": [2, 1], "datatype": "INT64", "data": labels if labels is not None else [0, 2]},
        {"name": "predict_proba", "shape": [2, 3], "datatype": "FP64", "data": proba, **proba_changes},
    ]
    return json.dumps({"model_name": "iris", "outputs": outputs}).encode()


def compared(stable: bytes, canary: bytes, spec: ShadowSpec, status: int = 200) -> Comparison:
    outcome = compare_responses(200, stable, status, canary, spec)
    assert isinstance(outcome, Comparison), outcome
    return outcome


def test_v2_drift_within_tolerance_is_a_diff_without_mismatch() -> None:
    drifted = [p + d for p, d in zip(STABLE_PROBA, [-0.004, 0.004, 0.0, 0.003, -0.002, -0.001], strict=True)]
    result = compared(v2(STABLE_PROBA), v2(drifted), V2)
    assert not result.mismatch
    assert result.diff == pytest.approx(0.004)
    assert (result.rows, result.mismatched_rows) == (2, 0)


def test_v2_top1_is_counted_per_instance_of_a_batch() -> None:
    flipped = [0.3, 0.7, 0.0, 0.0001, 0.08, 0.9199]  # first row's arg-max moves from class 0 to 1
    result = compared(v2(STABLE_PROBA), v2(flipped, labels=[1, 2]), V2)
    assert result.mismatch and (result.rows, result.mismatched_rows) == (2, 1)
    assert result.diff == pytest.approx(0.68)
    window = ShadowWindow(10)
    window.add(result)
    window.add(compared(v2(STABLE_PROBA), v2(STABLE_PROBA), V2))
    stats = window.stats()
    assert (stats.samples, stats.rows, stats.mismatches) == (2, 4, 1)
    assert stats.mismatch_rate == pytest.approx(0.25)


def test_v2_renamed_retyped_or_reshaped_output_makes_the_canary_unusable() -> None:
    stable = v2(STABLE_PROBA)
    renamed = json.loads(stable)
    renamed["outputs"][1]["name"] = "probabilities"
    result = compared(stable, json.dumps(renamed).encode(), V2)
    assert result.mismatch and result.diff is None and result.mismatched_rows == 2
    assert result.reason == "canary: output 'predict_proba' missing"
    retyped = compared(stable, v2(STABLE_PROBA, labels=["setosa", "virginica"]), V2)
    assert retyped.mismatch and retyped.mismatched_rows == 2  # other label values in both rows
    labels = json.loads(v2(STABLE_PROBA))
    labels["outputs"][0]["datatype"] = "BYTES"
    labels["outputs"][0]["data"] = ["setosa", "virginica"]
    bytes_result = compared(stable, json.dumps(labels).encode(), V2)
    assert bytes_result.reason == "canary: output 'predict' is BYTES[2, 1], stable has INT64[2, 1]"
    binary = compared(stable, v2([0.9, 0.1, 0.2, 0.8], shape=[2, 2]), V2)
    assert binary.reason == "canary: output 'predict_proba' is FP64[2, 2], stable has FP64[2, 3]"
    assert compared(stable, b"oops", V2, status=500).reason == "canary answered HTTP 500"


def test_v2_only_the_named_output_and_unreadable_stable() -> None:
    only = ShadowSpec(protocol="open-inference-v2", output="predict_proba")
    result = compared(v2(STABLE_PROBA), v2(STABLE_PROBA, labels=[1, 1]), only)  # labels differ, ignored
    assert not result.mismatch and result.diff == 0.0
    stable_bad = compare_responses(200, b'{"outputs": []}', 200, v2(STABLE_PROBA), V2)
    assert isinstance(stable_bad, Unusable) and stable_bad.side == "stable"
    short = compare_responses(200, v2([0.5]), 200, v2(STABLE_PROBA), V2)
    assert isinstance(short, Unusable)


def test_v1_probability_vectors_numbers_and_labels() -> None:
    def body(predictions: Any) -> bytes:
        return json.dumps({"predictions": predictions}).encode()

    stable = body([[0.98, 0.02, 0.0], [0.0, 0.08, 0.92]])
    drift = compared(stable, body([[0.975, 0.025, 0.0], [0.0, 0.08, 0.92]]), V1)
    assert not drift.mismatch and drift.diff == pytest.approx(0.005)
    flip = compared(stable, body([[0.4, 0.6, 0.0], [0.0, 0.08, 0.92]]), V1)
    assert (flip.rows, flip.mismatched_rows) == (2, 1)
    narrower = compared(stable, body([[0.98, 0.02], [0.1, 0.9]]), V1)
    assert narrower.mismatch and narrower.diff is None and "stable has FP64[2, 3]" in str(narrower.reason)
    labels = compared(body([0, 2, 1]), body([0, 1, 1]), V1)
    assert (labels.rows, labels.mismatched_rows, labels.diff) == (3, 1, None)
    renamed = compared(body([0, 2]), body(["setosa", "virginica"]), V1)
    assert renamed.mismatch and renamed.mismatched_rows == 2
    scores = compared(body([1.5, 2.0]), body([1.5, 2.25]), V1)
    assert not scores.mismatch and scores.diff == pytest.approx(0.25)


def chat(finish: str = "stop", content: str = "Hello!", tool: tuple[str, str] | None = None,
         logprobs: list[tuple[str, float]] | None = None) -> bytes:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool is not None:
        message = {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": tool[0], "arguments": tool[1]}}]}
    choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": finish}
    if logprobs is not None:
        choice["logprobs"] = {"content": [{"token": t, "logprob": lp, "top_logprobs": []} for t, lp in logprobs]}
    return json.dumps({"object": "chat.completion", "choices": [choice]}).encode()


def test_chat_text_is_not_compared_but_finish_reason_is() -> None:
    same = compared(chat(content="Hello!"), chat(content="Hi there."), CHAT)
    assert not same.mismatch and same.diff is None
    truncated = compared(chat(), chat(finish="length"), CHAT)
    assert truncated.mismatch and truncated.reason == "finish_reason 'stop' -> 'length'"


def test_chat_tool_calls_names_and_json_arguments() -> None:
    stable = chat(finish="tool_calls", tool=("get_weather", '{"city": "Paris"}'))
    reworded = compared(stable, chat(finish="tool_calls", tool=("get_weather", '{"city": "Paris, FR"}')), CHAT)
    assert not reworded.mismatch
    other = compared(stable, chat(finish="tool_calls", tool=("search", '{"q": "weather"}')), CHAT)
    assert other.mismatch and "tool calls ['get_weather'] -> ['search']" in str(other.reason)
    broken = compared(stable, chat(finish="tool_calls", tool=("get_weather", "{city: Paris}")), CHAT)
    assert broken.mismatch and "no longer a JSON object" in str(broken.reason)


def test_chat_logprobs_compared_over_the_common_prefix() -> None:
    stable = chat(logprobs=[("Hello", -0.01), ("!", -0.2), (" How", -1.0)])
    canary = chat(logprobs=[("Hello", -0.03), ("!", -0.25), (" What", -0.1)])  # diverges at token 3
    result = compared(stable, canary, CHAT)
    assert not result.mismatch and result.diff == pytest.approx(0.05)
    assert compared(stable, chat(), CHAT).diff is None  # only one side has logprobs: nothing to compare


def test_chat_streams_are_reassembled() -> None:
    def stream(finish: str, arguments: list[str]) -> bytes:
        chunks: list[Any] = [{"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "id": "c", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}}]}]
        chunks += [{"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": a}}]},
                                 "logprobs": {"content": [{"token": a, "logprob": -0.5}]}}]} for a in arguments]
        chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
        return b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"

    stable = stream("tool_calls", ['{"city": ', '"Paris"}'])
    assert not compared(stable, copy.copy(stable), CHAT).mismatch
    broken = compared(stable, stream("tool_calls", ['{"city": ', "Paris}"]), CHAT)
    assert broken.mismatch and "no longer a JSON object" in str(broken.reason)
    assert compared(stable, stable, CHAT).diff == 0.0
    unusable = compare_responses(200, b"data: {not json}\n\n", 200, stable, CHAT)
    assert isinstance(unusable, Unusable)


def test_window_rate_stays_nan_until_rows_arrive() -> None:
    assert math.isnan(ShadowWindow(3).stats().mismatch_rate)
