"""Contract presets per protocol: every break a preset claims to detect, judged on answers.

The open-inference-v2 and kserve-v1 answers are recorded from the real servers (MLServer 1.7.1 with
mlserver-sklearn, KServe 0.21.0's model server, iris logistic regression; hack/modelservers/). No
OpenAI-compatible server runs here without downloading weights, so the OpenAI answers are written to the
OpenAI API reference (chat completion, chunk, tool call and error objects) in the form vLLM serves them.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from pydantic import ValidationError

from compat_probe.contract import Check, CheckResult, Contract, evaluate

# ---------------------------------------------------------------------------------------------- recorded

MLSERVER_INFER: dict[str, Any] = {
    "model_name": "iris", "model_version": "v1", "id": "95ea8093-12fd-4a48-84f3-433f7660a5f0", "parameters": {},
    "outputs": [
        {"name": "predict", "shape": [2, 1], "datatype": "INT64", "parameters": {"content_type": "np"},
         "data": [0, 2]},
        {"name": "predict_proba", "shape": [2, 3], "datatype": "FP64", "parameters": {"content_type": "np"},
         "data": [0.981656829444016, 0.01834315616093856, 1.4395045350105303e-8, 0.000055262878832923325,
                  0.0800835527736498, 0.9198611843475173]},
    ],
}
MLSERVER_METADATA = {"name": "iris", "versions": [], "platform": "", "inputs": [], "outputs": [], "parameters": {}}
MLSERVER_NOT_FOUND = {"error": "Model modelrollout-no-such-model not found"}
KSERVE_V1_PREDICT = {"predictions": [[0.981656829444016, 0.01834315616093856, 1.4395045350105303e-8],
                                     [0.000055262878832923325, 0.0800835527736498, 0.9198611843475173]]}
KSERVE_V1_READY = {"name": "iris", "ready": True}

V2 = Contract.from_yaml("""
protocol: open-inference-v2
model: iris
outputs:
  - {name: predict, datatype: INT64, shape: [-1, 1]}
  - {name: predict_proba, datatype: FP64, shape: [-1, 3]}
golden:
  - name: two-flowers
    inputs: [{name: input-0, datatype: FP64, shape: [2, 4], data: [5.1, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3]}]
    outputs: [predict, predict_proba]
checks:
  - {name: docs, method: GET, path: /v2, status: 200}
""")


def check(contract: Contract, name: str) -> Check:
    return next(c for c in contract.checks if c.name == name)


def judge(contract: Contract, name: str, doc: Any, status: int = 200) -> CheckResult:
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return evaluate(check(contract, name), status, body, 0.01)


def reasons(contract: Contract, name: str, doc: Any, status: int = 200) -> str:
    result = judge(contract, name, doc, status)
    assert not result.passed
    return "; ".join(result.reasons)


def passes(contract: Contract, name: str, doc: Any, status: int = 200) -> None:
    result = judge(contract, name, doc, status)
    assert result.passed, result.reasons


def infer(**changes: Any) -> dict[str, Any]:
    doc = copy.deepcopy(MLSERVER_INFER)
    for output in doc["outputs"]:
        output.update(changes.get(output["name"], {}))
    return doc


# -------------------------------------------------------------------------------------- open inference v2


def test_v2_preset_expands_to_the_protocol_checks_before_hand_written_ones() -> None:
    names = [c.name for c in V2.checks]
    assert names == ["v2-ready", "v2-model-ready", "v2-metadata", "infer-two-flowers", "v2-error", "docs"]
    golden = check(V2, "infer-two-flowers")
    assert golden.path == "/v2/models/iris/infer" and golden.method == "POST" and golden.envelope is None
    assert golden.body["outputs"] == [{"name": "predict"}, {"name": "predict_proba"}]
    assert check(V2, "v2-error").path == "/v2/models/modelrollout-no-such-model/infer"
    assert V2.envelope is None  # a protocol contract's hand-written checks are not enveloped either


def test_v2_recorded_answers_pass() -> None:
    passes(V2, "v2-ready", b"", 200)  # MLServer answers readiness with an empty body
    passes(V2, "v2-model-ready", b"", 200)
    passes(V2, "v2-metadata", MLSERVER_METADATA)
    passes(V2, "infer-two-flowers", MLSERVER_INFER)
    passes(V2, "v2-error", MLSERVER_NOT_FOUND, 404)


def test_v2_renamed_output() -> None:
    assert "outputs[predict_proba]: missing (got: predict, probabilities)" in reasons(
        V2, "infer-two-flowers", infer(predict_proba={"name": "probabilities"}))


def test_v2_changed_datatype() -> None:
    doc = infer(predict={"datatype": "BYTES", "data": ["setosa", "virginica"]})
    assert "outputs[predict].datatype: changed: expected INT64, got BYTES" in reasons(V2, "infer-two-flowers", doc)


def test_v2_changed_shape() -> None:
    doc = infer(predict_proba={"shape": [2, 2], "data": [0.9, 0.1, 0.2, 0.8]})
    assert "outputs[predict_proba].shape: [2, 2] does not match [-1, 3]" in reasons(V2, "infer-two-flowers", doc)


def test_v2_data_that_does_not_fill_its_shape_or_its_datatype() -> None:
    short = infer(predict_proba={"data": [0.5, 0.5]})
    assert "outputs[predict_proba].data: 2 elements, shape [2, 3] needs 6" in reasons(V2, "infer-two-flowers", short)
    strings = infer(predict={"data": ["0", "2"]})
    assert "outputs[predict].data.0: string is not a INT64 element" in reasons(V2, "infer-two-flowers", strings)


def test_v2_model_gone_or_renamed() -> None:
    assert "not ready: HTTP 404" in reasons(V2, "v2-model-ready", MLSERVER_NOT_FOUND, 404)
    assert "name: is 'iris-v2', expected 'iris'" in reasons(V2, "v2-metadata", {**MLSERVER_METADATA, "name": "iris-v2"})
    assert "model_name: is 'flowers', expected 'iris'" in reasons(V2, "infer-two-flowers",
                                                                  {**MLSERVER_INFER, "model_name": "flowers"})
    assert "outputs: missing" in reasons(V2, "infer-two-flowers", {"model_name": "iris"})


def test_v2_server_not_ready() -> None:
    assert "not ready: HTTP 503" in reasons(V2, "v2-ready", b"", 503)


def test_v2_metadata_tensors_must_keep_datatype_and_shape() -> None:
    listed = {**MLSERVER_METADATA, "outputs": [{"name": "predict", "datatype": "FP32", "shape": [-1, 1]}]}
    assert "outputs[predict].datatype: changed: expected INT64, got FP32" in reasons(V2, "v2-metadata", listed)
    strict = Contract.from_yaml("""
protocol: open-inference-v2
model: iris
requireMetadata: true
outputs: [{name: predict, datatype: INT64, shape: [-1, 1]}]
""")
    assert "outputs[predict]: missing (listed: none)" in reasons(strict, "v2-metadata", MLSERVER_METADATA)


def test_v2_error_format() -> None:
    assert "HTTP status 500, expected a 4xx client error" in reasons(V2, "v2-error", {"error": "boom"}, 500)
    assert "response is not JSON" in reasons(V2, "v2-error", b"Internal Server Error", 500)
    assert "error: missing" in reasons(V2, "v2-error", {"detail": "not found"}, 404)


# --------------------------------------------------------------------------------------------- kserve v1

V1 = Contract.from_yaml("""
protocol: kserve-v1
model: iris
predictionType: array
predictionWidth: 3
golden:
  - name: two-flowers
    instances: [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
""")


def test_v1_preset_and_recorded_answers() -> None:
    assert [c.name for c in V1.checks] == ["v1-ready", "predict-two-flowers", "v1-error"]
    assert check(V1, "predict-two-flowers").path == "/v1/models/iris:predict"
    passes(V1, "v1-ready", KSERVE_V1_READY)
    passes(V1, "predict-two-flowers", KSERVE_V1_PREDICT)
    passes(V1, "v1-error", {"error": "Model with name modelrollout-no-such-model does not exist."}, 404)


def test_v1_breaks() -> None:
    assert "ready: is false, expected true" in reasons(V1, "v1-ready", {"name": "iris", "ready": False})
    assert "predictions: missing" in reasons(V1, "predict-two-flowers", {"outputs": []})
    assert "predictions: 1 for 2 instances" in reasons(V1, "predict-two-flowers", {"predictions": [[0.1, 0.2, 0.7]]})
    labels = {"predictions": ["setosa", "virginica"]}
    assert "predictions.0: type changed: expected array, got string" in reasons(V1, "predict-two-flowers", labels)
    binary = {"predictions": [[0.9, 0.1], [0.2, 0.8]]}
    assert "predictions.0: 2 elements, expected 3" in reasons(V1, "predict-two-flowers", binary)
    assert "error: missing" in reasons(V1, "v1-error", {"detail": "x"}, 404)


# ------------------------------------------------------------------------------------------------ OpenAI

OPENAI = Contract.from_yaml("""
protocol: openai-chat
model: qwen2.5-0.5b
golden:
  - name: hello
    body: {messages: [{role: user, content: Say hello}], max_tokens: 16, logprobs: true, top_logprobs: 2}
  - name: hello-stream
    body: {messages: [{role: user, content: Say hello}], max_tokens: 16, stream: true}
  - name: weather
    body:
      messages: [{role: user, content: "Weather in Paris?"}]
      tool_choice: required
      tools:
        - type: function
          function:
            name: get_weather
            parameters: {type: object, properties: {city: {type: string}}, required: [city]}
  - name: weather-stream
    body:
      messages: [{role: user, content: "Weather in Paris?"}]
      stream: true
      tools: [{type: function, function: {name: get_weather, parameters: {required: [city]}}}]
  - name: legacy
    body: {prompt: Say hello, max_tokens: 8}
""")

USAGE = {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}


def chat(content: Any = "Hello!", finish: Any = "stop", **extra: Any) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": content},
                              "finish_reason": finish,
                              "logprobs": {"content": [
                                  {"token": "Hello", "logprob": -0.01, "top_logprobs": [
                                      {"token": "Hello", "logprob": -0.01}, {"token": "Hi", "logprob": -4.6}]},
                                  {"token": "!", "logprob": -0.2, "top_logprobs": []}]}}
    choice.update(extra.pop("choice", {}))
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1765000000, "model": "qwen2.5-0.5b",
            "choices": [choice], "usage": USAGE, **extra}


def tool_answer(arguments: str = '{"city": "Paris"}', name: str = "get_weather") -> dict[str, Any]:
    return chat(content=None, finish="tool_calls", choice={"logprobs": None, "message": {
        "role": "assistant", "content": None,
        "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": name, "arguments": arguments}}]}})


def sse(*events: Any) -> bytes:
    return b"".join(
        b"data: " + (e.encode() if isinstance(e, str) else json.dumps(e).encode()) + b"\n\n" for e in events
    )


def chunk(delta: dict[str, Any], finish: Any = None, obj: str = "chat.completion.chunk") -> dict[str, Any]:
    return {"id": "chatcmpl-2", "object": obj, "created": 1765000000, "model": "qwen2.5-0.5b",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


STREAM = sse(chunk({"role": "assistant", "content": ""}), chunk({"content": "Hel"}), chunk({"content": "lo"}),
             chunk({}, "stop"), "[DONE]")


def tool_stream(*parts: str) -> bytes:
    first = chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                   "function": {"name": "get_weather", "arguments": ""}}]})
    rest = [chunk({"tool_calls": [{"index": 0, "function": {"arguments": part}}]}) for part in parts]
    return sse(first, *rest, chunk({}, "tool_calls"), "[DONE]")


def test_openai_preset_expansion() -> None:
    names = [c.name for c in OPENAI.checks]
    assert names == ["models", "chat-hello", "chat-hello-stream", "chat-weather", "chat-weather-stream",
                     "chat-legacy", "error"]
    hello = check(OPENAI, "chat-hello")
    assert hello.path == "/v1/chat/completions" and hello.body["model"] == "qwen2.5-0.5b"
    assert check(OPENAI, "chat-legacy").path == "/v1/completions"
    assert check(OPENAI, "error").body["model"] == "modelrollout-no-such-model"


def test_openai_well_formed_answers_pass() -> None:
    passes(OPENAI, "models", {"object": "list", "data": [{"id": "qwen2.5-0.5b", "object": "model"}]})
    passes(OPENAI, "chat-hello", chat())
    passes(OPENAI, "chat-hello-stream", STREAM)
    passes(OPENAI, "chat-weather", tool_answer())
    passes(OPENAI, "chat-weather-stream", tool_stream('{"city": ', '"Paris"}'))
    passes(OPENAI, "chat-legacy", {"id": "cmpl-1", "object": "text_completion", "model": "qwen2.5-0.5b",
                                   "choices": [{"index": 0, "text": " Hello", "finish_reason": "length"}],
                                   "usage": USAGE})
    passes(OPENAI, "error", {"error": {"message": "The model does not exist.", "type": "NotFoundError",
                                       "param": None, "code": 404}}, 404)


def test_openai_model_gone_from_models() -> None:
    gone = {"object": "list", "data": [{"id": "qwen2.5-1.5b", "object": "model"}]}
    assert "model 'qwen2.5-0.5b' gone from /v1/models (listed: qwen2.5-1.5b)" in reasons(OPENAI, "models", gone)


def test_openai_chat_without_message_content() -> None:
    no_content = chat(choice={"message": {"role": "assistant"}})
    assert "choices.0.message.content: missing" in reasons(OPENAI, "chat-hello", no_content)
    assert "choices.0.message: missing" in reasons(OPENAI, "chat-hello", chat(choice={"message": None}))
    assert "choices: missing or empty" in reasons(OPENAI, "chat-hello", {**chat(), "choices": []})


def test_openai_finish_reason_object_and_usage() -> None:
    assert "choices.0.finish_reason: 'eos' is not one of" in reasons(OPENAI, "chat-hello", chat(finish="eos"))
    assert "choices.0.finish_reason: missing" in reasons(OPENAI, "chat-hello", chat(finish=None))
    assert "object: is 'chat.completions', expected 'chat.completion'" in reasons(
        OPENAI, "chat-hello", {**chat(), "object": "chat.completions"})
    assert "usage: missing" in reasons(OPENAI, "chat-hello", {**chat(), "usage": None})


def test_openai_logprobs_that_were_asked_for() -> None:
    assert "choices.0.logprobs.content: missing" in reasons(OPENAI, "chat-hello", chat(choice={"logprobs": None}))
    positive = chat(choice={"logprobs": {"content": [{"token": "Hi", "logprob": 0.5, "top_logprobs": []}]}})
    assert "is not a log-probability" in reasons(OPENAI, "chat-hello", positive)
    no_top = chat(choice={"logprobs": {"content": [{"token": "Hi", "logprob": -0.5}]}})
    assert "top_logprobs: missing (the request asked for 2)" in reasons(OPENAI, "chat-hello", no_top)


def test_openai_tool_call_arguments_must_stay_json_with_the_required_keys() -> None:
    assert "arguments: not valid JSON" in reasons(OPENAI, "chat-weather", tool_answer("{city: Paris}"))
    assert "arguments: JSON array, expected an object" in reasons(OPENAI, "chat-weather", tool_answer('["Paris"]'))
    assert "arguments: required city missing" in reasons(OPENAI, "chat-weather", tool_answer('{"town": "Paris"}'))
    assert "'getWeather' is not a tool the request offered" in reasons(
        OPENAI, "chat-weather", tool_answer(name="getWeather"))
    assert "tool_calls: missing (the request requires a tool call)" in reasons(OPENAI, "chat-weather", chat())


def test_openai_stream_framing_changes() -> None:
    no_done = sse(chunk({"content": "Hi"}), chunk({}, "stop"))
    assert "stream: does not end with 'data: [DONE]'" in reasons(OPENAI, "chat-hello-stream", no_done)
    renamed = sse(chunk({"content": "Hi"}, obj="chat.completion"), chunk({}, "stop"), "[DONE]")
    assert "expected 'chat.completion.chunk'" in reasons(OPENAI, "chat-hello-stream", renamed)
    no_finish = sse(chunk({"content": "Hi"}), "[DONE]")
    assert "stream: no chunk carries a finish_reason" in reasons(OPENAI, "chat-hello-stream", no_finish)
    not_json = sse("Hi there", chunk({}, "stop"), "[DONE]")
    assert "stream: event 0 is not JSON" in reasons(OPENAI, "chat-hello-stream", not_json)
    whole = json.dumps(chat()).encode()  # the server stopped streaming and answers in one JSON body
    assert "stream: no data events" in reasons(OPENAI, "chat-hello-stream", whole)
    unterminated = STREAM[:-1]
    assert "not terminated by a blank line" in reasons(OPENAI, "chat-hello-stream", unterminated)
    content_moved = sse(chunk({"content": {"text": "Hi"}}), chunk({}, "stop"), "[DONE]")
    assert "delta.content is object" in reasons(OPENAI, "chat-hello-stream", content_moved)


def test_openai_streamed_tool_arguments_must_join_into_json() -> None:
    assert "tool_calls.0.function.arguments: not valid JSON" in reasons(
        OPENAI, "chat-weather-stream", tool_stream('{"city": ', "Paris}"))


def test_openai_completions_and_error_format() -> None:
    assert "choices.0.text: missing" in reasons(OPENAI, "chat-legacy", {
        "object": "text_completion", "choices": [{"index": 0, "message": {}}], "usage": USAGE})
    assert "error: not an object" in reasons(OPENAI, "error", {"error": "no such model"}, 404)
    assert "error.message: missing" in reasons(OPENAI, "error", {"error": {"type": "x"}}, 404)
    assert "HTTP status 200, expected a 4xx client error" in reasons(OPENAI, "error", chat(), 200)


# ---------------------------------------------------------------------------------------------- envelope

ENVELOPE = Contract.from_yaml("""
protocol: envelope
golden:
  - name: predict
    body: {text: hello}
    fields: [{path: label, type: string}]
""")


def test_envelope_preset_keeps_the_envelope_and_checks_the_error_format() -> None:
    assert [c.name for c in ENVELOPE.checks] == ["predict", "error"]
    assert check(ENVELOPE, "predict").path == "/v1/predict"
    ok = {"code": 0, "message": "ok", "data": {"label": "positive"}}
    passes(ENVELOPE, "predict", ok)
    assert "envelope: code is 1, expected 0" in reasons(ENVELOPE, "predict", {**ok, "code": 1})
    assert "data.label: missing" in reasons(ENVELOPE, "predict", {**ok, "data": {}})
    passes(ENVELOPE, "error", {"code": 400, "message": "unknown field", "data": None}, 400)
    assert "envelope: missing 'message'" in reasons(ENVELOPE, "error", {"code": 400, "data": None}, 400)
    assert "HTTP status 500" in reasons(ENVELOPE, "error", {"code": 500, "message": "x", "data": None}, 500)


# ----------------------------------------------------------------------------------------------- loading


def test_preset_validation() -> None:
    with pytest.raises(ValidationError, match="needs `model`"):
        Contract.from_yaml("protocol: open-inference-v2\n")
    with pytest.raises(ValidationError, match="protocol"):
        Contract.from_yaml("protocol: grpc\nmodel: x\n")
    with pytest.raises(ValidationError, match="duplicate check name"):
        Contract.from_yaml("protocol: kserve-v1\nmodel: m\nchecks: [{name: v1-ready, path: /}]\n")
    with pytest.raises(ValidationError, match="needs `inputs`"):
        Contract.from_yaml("protocol: open-inference-v2\nmodel: m\ngolden: [{name: g}]\n")
    no_error = Contract.from_yaml("protocol: kserve-v1\nmodel: m\nerrorCheck: false\n")
    assert [c.name for c in no_error.checks] == ["v1-ready"]


# ------------------------------------------------------------------- the remaining claimed breaks, one each


def test_v2_metadata_listing_a_malformed_tensor_and_an_unknown_datatype() -> None:
    listed = {**MLSERVER_METADATA, "outputs": [{"name": "predict", "datatype": "INT64"}]}
    assert "outputs.0: shape: not an array of integers" in reasons(V2, "v2-metadata", listed)
    odd = infer(predict={"datatype": "INT65"})
    assert "outputs[predict].datatype: unknown datatype 'INT65'" in reasons(V2, "infer-two-flowers", odd)
    no_data = copy.deepcopy(MLSERVER_INFER)
    del no_data["outputs"][0]["data"]
    assert "outputs[predict].data: missing" in reasons(V2, "infer-two-flowers", no_data)


def test_v1_ready_names_the_model() -> None:
    assert "name: is 'flowers', expected 'iris'" in reasons(V1, "v1-ready", {"name": "flowers", "ready": True})


def test_openai_identity_choices_count_and_role() -> None:
    assert "id: missing" in reasons(OPENAI, "chat-hello", {**chat(), "id": None})
    assert "model: missing" in reasons(OPENAI, "chat-hello", {**chat(), "model": 7})
    two = Contract.from_yaml("protocol: openai-chat\nmodel: m\ngolden: [{name: n, body: {messages: [], n: 2}}]\n")
    assert "choices: 1, expected 2 (n)" in reasons(two, "chat-n", chat())
    user = chat(choice={"message": {"role": "user", "content": "Hello"}})
    assert "choices.0.message.role: is 'user', expected 'assistant'" in reasons(OPENAI, "chat-hello", user)
    no_token = chat(choice={"logprobs": {"content": [{"logprob": -0.5, "top_logprobs": []}]}})
    assert "logprobs.content.0.token: missing" in reasons(OPENAI, "chat-hello", no_token)
    assert "usage.total_tokens: not an integer" in reasons(
        OPENAI, "chat-hello", {**chat(), "usage": {**USAGE, "total_tokens": "12"}})


def test_openai_stream_delta_and_done_placement() -> None:
    no_delta = sse({"object": "chat.completion.chunk", "choices": [{"index": 0, "text": "Hi"}]}, "[DONE]")
    assert "chunk 0: choices[].delta missing" in reasons(OPENAI, "chat-hello-stream", no_delta)
    early_done = sse(chunk({"content": "Hi"}), "[DONE]", chunk({}, "stop"))
    found = reasons(OPENAI, "chat-hello-stream", early_done)
    assert "stream: 'data: [DONE]' is event 1, not the last" in found
    assert "stream: does not end with 'data: [DONE]'" in found


def test_openai_completions_object() -> None:
    chat_shaped = {"object": "chat.completion", "choices": [{"index": 0, "text": "Hi", "finish_reason": "stop"}],
                   "usage": USAGE}
    assert "object: is 'chat.completion', expected 'text_completion'" in reasons(OPENAI, "chat-legacy", chat_shaped)
