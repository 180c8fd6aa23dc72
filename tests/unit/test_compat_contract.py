"""The contract model, evaluate and score (pure); the reference server's versions judged by the contract."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from compat_probe.contract import Check, CheckResult, Contract, evaluate, score
from compat_probe.refserver import ConfigError, ModelConfig, parse_config, predict

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "compat-contract.yaml"

CONTRACT = Contract.from_yaml(
    """
envelope: {codeKey: code, messageKey: message, dataKey: data, code: 0}
checks:
  - name: predict
    path: /v1/predict
    body: {text: hello world}
    fields:
      - {path: label, type: string, enum: [positive, negative, neutral]}
      - {path: scores.*.label, type: string}
      - {path: scores.*.score, type: number}
      - {path: model_version, type: string}
      - {path: tokens, type: integer}
      - {path: explanation, type: object, required: false}
"""
)
CHECK = CONTRACT.checks[0]


def good_data() -> dict[str, Any]:
    return {
        "label": "positive",
        "scores": [{"label": "positive", "score": 0.7}, {"label": "negative", "score": 0.3}],
        "model_version": "v1",
        "tokens": 2,
    }


def answer(data: Any = None, *, code: Any = 0, message: Any = "ok", **extra: Any) -> bytes:
    doc = {"code": code, "message": message, "data": good_data() if data is None else data, **extra}
    return json.dumps(doc).encode()


def judge(body: bytes, status: int = 200, check: Check = CHECK) -> CheckResult:
    return evaluate(check, status, body, 0.01)


def test_compatible_answer_passes() -> None:
    result = judge(answer())
    assert result.passed, result.reasons
    assert result.reasons == []
    assert result.name == "predict"


def test_removed_field_fails_and_names_it() -> None:
    data = good_data()
    del data["tokens"]
    result = judge(answer(data))
    assert not result.passed
    assert result.reasons == ["data.tokens: missing"]


def test_retyped_field_fails() -> None:
    data = good_data()
    data["tokens"] = "2"
    result = judge(answer(data))
    assert not result.passed
    assert result.reasons == ["data.tokens: type changed: expected integer, got string"]


def test_boolean_is_not_an_integer_and_float_is_not_an_integer() -> None:
    for value, got in ((True, "boolean"), (2.0, "number")):
        data = good_data()
        data["tokens"] = value
        assert judge(answer(data)).reasons == [f"data.tokens: type changed: expected integer, got {got}"]


def test_integer_is_a_number() -> None:
    data = good_data()
    data["scores"][0]["score"] = 1
    assert judge(answer(data)).passed


def test_added_fields_pass() -> None:
    data = {**good_data(), "calibrated": True, "extra": {"nested": [1, 2]}}
    assert judge(answer(data, trace_id="abc")).passed


def test_wildcard_names_the_broken_element() -> None:
    data = good_data()
    data["scores"][1]["score"] = "0.3"
    del data["scores"][0]["label"]
    result = judge(answer(data))
    assert sorted(result.reasons) == [
        "data.scores.0.label: missing",
        "data.scores.1.score: type changed: expected number, got string",
    ]


def test_wildcard_on_a_non_array_is_missing() -> None:
    data = {**good_data(), "scores": {"positive": 0.7}}
    result = judge(answer(data))
    assert not result.passed
    assert any(reason.startswith("data.scores.*: missing") for reason in result.reasons)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (answer(code=1), "envelope: code is 1, expected 0"),
        (answer(code="0"), 'envelope: code is "0", expected 0'),
        (answer(message=None), "envelope: message is null, expected string"),
        (json.dumps({"code": 0, "message": "ok"}).encode(), "envelope: missing 'data'"),
        (json.dumps({"message": "ok", "data": good_data()}).encode(), "envelope: missing 'code'"),
        (json.dumps(good_data()).encode(), "envelope: missing 'code'"),
        (json.dumps([good_data()]).encode(), "envelope: expected a JSON object, got array"),
    ],
)
def test_wrong_envelope_fails(body: bytes, expected: str) -> None:
    result = judge(body)
    assert not result.passed
    assert expected in result.reasons


def test_configurable_envelope_keys_and_code() -> None:
    contract = Contract.from_yaml(
        """
envelope: {codeKey: status, messageKey: msg, dataKey: result, code: 200}
checks:
  - {name: c, fields: [{path: label, type: string}]}
"""
    )
    check = contract.checks[0]
    ok = json.dumps({"status": 200, "msg": "fine", "result": {"label": "x"}}).encode()
    assert evaluate(check, 200, ok, 0.0).passed
    old_keys = json.dumps({"code": 0, "message": "fine", "data": {"label": "x"}}).encode()
    assert not evaluate(check, 200, old_keys, 0.0).passed


def test_without_envelope_paths_start_at_the_root() -> None:
    contract = Contract.from_yaml("envelope: null\nchecks: [{name: c, fields: [{path: label, type: string}]}]")
    check = contract.checks[0]
    assert check.envelope is None
    assert evaluate(check, 200, b'{"label": "x"}', 0.0).passed
    assert evaluate(check, 200, b'{"labels": "x"}', 0.0).reasons == ["label: missing"]


@pytest.mark.parametrize("body", [b"<html>oops</html>", b"", b"   ", b"\xff\xfe", b"{'code': 0}"])
def test_non_json_fails(body: bytes) -> None:
    result = judge(body)
    assert not result.passed
    assert len(result.reasons) == 1
    assert result.reasons[0].startswith("response is not JSON")


def test_timeout_fails_with_reason() -> None:
    result = evaluate(CHECK, None, None, None, error="timeout after 2s")
    assert not result.passed
    assert result.reasons == ["request failed: timeout after 2s"]
    assert result.elapsed is None


def test_connection_error_fails_with_reason() -> None:
    result = evaluate(CHECK, None, None, 0.001, error="connection refused")
    assert result.reasons == ["request failed: connection refused"]


def test_no_answer_without_an_error_still_fails() -> None:
    assert evaluate(CHECK, None, None, None).reasons == ["request failed: no response"]


def test_enum_violation_fails() -> None:
    data = {**good_data(), "label": "POSITIVE"}
    result = judge(answer(data))
    assert not result.passed
    assert result.reasons == ['data.label: value "POSITIVE" not in enum ["positive", "negative", "neutral"]']


def test_enum_does_not_confuse_true_with_one() -> None:
    contract = Contract.from_yaml("checks: [{name: c, fields: [{path: n, type: number, enum: [1, 2]}]}]")
    check = contract.checks[0]
    assert evaluate(check, 200, answer({"n": 1.0}), 0.0).passed
    assert not evaluate(check, 200, answer({"n": 3}), 0.0).passed
    bools = Contract.from_yaml("checks: [{name: c, fields: [{path: b, type: boolean, enum: [true]}]}]")
    assert evaluate(bools.checks[0], 200, answer({"b": True}), 0.0).passed
    assert not evaluate(bools.checks[0], 200, answer({"b": False}), 0.0).passed


def test_optional_field_may_be_absent_but_not_retyped() -> None:
    assert judge(answer({**good_data()})).passed
    assert judge(answer({**good_data(), "explanation": {"why": "x"}})).passed
    result = judge(answer({**good_data(), "explanation": "because"}))
    assert result.reasons == ["data.explanation: type changed: expected object, got string"]


def test_http_status_is_checked_and_body_still_judged() -> None:
    data = good_data()
    del data["label"]
    result = judge(answer(data), status=500)
    assert result.reasons == ["HTTP status 500, expected 200", "data.label: missing"]


def test_max_latency() -> None:
    contract = Contract.from_yaml("checks: [{name: c, maxLatencyMs: 100}]")
    check = contract.checks[0]
    assert evaluate(check, 200, answer(), 0.05).passed
    slow = evaluate(check, 200, answer(), 0.25)
    assert slow.reasons == ["latency 250.0ms above maxLatencyMs 100"]


def test_score_is_share_passed_and_nan_without_checks() -> None:
    ok = CheckResult(name="a", passed=True)
    bad = CheckResult(name="b", passed=False, reasons=["x"])
    assert score([ok, ok, bad, bad]) == 0.5
    assert score([ok]) == 1.0
    assert score([bad]) == 0.0
    assert math.isnan(score([]))
    assert math.isnan(score(iter(())))


def test_contract_defaults_and_inheritance() -> None:
    contract = Contract.from_yaml(
        """
envelope: {code: 200}
timeoutSeconds: 5
checks:
  - {name: inherits}
  - {name: own, envelope: {code: 400}, timeoutSeconds: 0.5, method: get}
"""
    )
    inherits, own = contract.checks
    assert inherits.envelope is not None and inherits.envelope.code == 200
    assert own.envelope is not None and own.envelope.code == 400
    assert own.method == "GET"
    assert contract.timeout_for(inherits) == 5
    assert contract.timeout_for(inherits, 1.5) == 1.5
    assert contract.timeout_for(own, 1.5) == 0.5
    assert Contract.from_yaml("").checks == []


def test_body_bytes_is_json() -> None:
    assert json.loads(CHECK.body_bytes() or b"") == {"text": "hello world"}
    assert Contract.from_yaml("checks: [{name: c, method: GET}]").checks[0].body_bytes() is None


@pytest.mark.parametrize(
    "text",
    [
        "checks: [{name: a}, {name: a}]",  # duplicate names
        "checks: [{name: a, fields: [{path: 'x..y', type: string}]}]",  # empty segment
        "checks: [{name: a, fields: [{path: x, type: str}]}]",  # unknown type
        "checks: [{name: a, method: FETCH}]",
        "checks: [{name: a, path: v1/predict}]",  # relative path
        "checks: [{name: a, fieldz: []}]",  # typo: unknown keys are rejected
        "timeoutSeconds: 0",
    ],
)
def test_invalid_contracts_are_rejected(text: str) -> None:
    with pytest.raises(ValidationError):
        Contract.from_yaml(text)


# --------------------------------------------------------------- the example contract vs the reference server


def _refserver_answer(check: Check, version: str) -> tuple[int, bytes]:
    body = check.body if isinstance(check.body, dict) else {}
    text = body.get("text")
    if not isinstance(text, str):
        return 400, json.dumps({"code": 400, "message": "bad", "data": None}).encode()
    data = predict(text, version=version, labels=("positive", "negative", "neutral"), config=ModelConfig())
    return 200, json.dumps({"code": 0, "message": "ok", "data": data}).encode()


def _example_score(version: str) -> tuple[float, list[str]]:
    contract = Contract.from_yaml(EXAMPLE.read_text(encoding="utf-8"))
    results = [evaluate(check, *_refserver_answer(check, version), 0.001) for check in contract.checks]
    return score(results), [reason for result in results for reason in result.reasons]


@pytest.mark.parametrize("version", ["v1", "v2-compatible", "v2-slow", "v2-relabel"])
def test_example_contract_passes_compatible_versions(version: str) -> None:
    assert _example_score(version) == (1.0, [])


def test_example_contract_catches_drop_and_retype() -> None:
    value, reasons = _example_score("v2-drop-field")
    assert value < 1.0
    assert "data.tokens: missing" in reasons
    value, reasons = _example_score("v2-retype")
    assert value < 1.0
    assert "data.tokens: type changed: expected integer, got string" in reasons


def test_refserver_config_rename() -> None:
    expected = ModelConfig(max_length=8, amp=True)
    assert parse_config("v1", {"max_seq_len": 8, "use_fp16": True}) == expected
    assert parse_config("v2-compatible", {"max_length": 8, "amp": True}) == expected
    with pytest.raises(ConfigError, match=r"'max_seq_len' was renamed to 'max_length'"):
        parse_config("v2-compatible", {"max_seq_len": 8})
    with pytest.raises(ConfigError, match=r"'use_fp16' was renamed to 'amp'"):
        parse_config("v2-relabel", {"use_fp16": True})
    with pytest.raises(ConfigError, match=r"'max_length' is unknown to v1"):
        parse_config("v1", {"max_length": 8})
    with pytest.raises(ConfigError, match=r"positive integer"):
        parse_config("v1", {"max_seq_len": "8"})


def test_refserver_max_length_caps_tokens() -> None:
    data = predict("a b c d e", version="v1", labels=("x", "y"), config=ModelConfig(max_length=3))
    assert data["tokens"] == 3
