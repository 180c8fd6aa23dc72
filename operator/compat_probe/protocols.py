"""What clients of each model-serving protocol rely on, as rules a contract check applies to an answer.

PURE: no I/O here. A rule judges the bytes (or the decoded JSON) of one answer and returns the reasons it
fails, one human-readable reason per broken promise, naming the place (``outputs[predict].datatype``).

Protocols (the ``protocol`` of a contract, expanded into checks by :mod:`compat_probe.presets`):

- ``open-inference-v2``: the Open Inference Protocol (KServe v2) served by KServe, Triton and MLServer:
  ``/v2/health/ready``, model metadata at ``/v2/models/{name}`` and inference at
  ``/v2/models/{name}/infer`` with named, typed, shaped tensors;
- ``openai-chat``: the OpenAI-compatible API served by vLLM, TGI, SGLang and llama.cpp: ``/v1/models``,
  ``/v1/chat/completions`` (also streamed as server-sent events), tool calls and ``logprobs``;
- ``kserve-v1``: KServe's v1 protocol, ``/v1/models/{name}`` and ``/v1/models/{name}:predict``;
- ``envelope``: this project's ``{code, message, data}`` envelope (the reference server).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

__all__ = [
    "FINISH_REASONS",
    "RAW_RULES",
    "ErrorRule",
    "OpenAIChatRule",
    "OpenAICompletionRule",
    "OpenAIModelsRule",
    "OpenAIStreamRule",
    "Rule",
    "TensorSpec",
    "ToolSpec",
    "V1PredictRule",
    "V1ReadyRule",
    "V2InferRule",
    "V2MetadataRule",
    "V2ReadyRule",
    "judge",
    "judge_raw",
    "parse_sse",
    "tensor_rows",
]

V2_DATATYPES = frozenset(
    {"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES"}
)
FINISH_REASONS = frozenset({"stop", "length", "tool_calls", "content_filter", "function_call"})


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, validate_by_alias=True, extra="forbid", frozen=True
    )


class TensorSpec(_Model):
    """A named tensor: its datatype and shape (``-1`` matches any size in that dimension)."""

    name: str = Field(min_length=1)
    datatype: str
    shape: list[int] = Field(default_factory=list)

    def describe(self) -> str:
        return f"{self.datatype}{self.shape}"


class ToolSpec(_Model):
    """A function the request offers as a tool: its name and the argument keys its schema requires."""

    name: str
    required: list[str] = Field(default_factory=list)


class V2ReadyRule(_Model):
    kind: Literal["v2-ready"] = "v2-ready"


class V2MetadataRule(_Model):
    """``GET /v2/models/{name}``: the model is still served under its name with the declared tensors."""

    kind: Literal["v2-metadata"] = "v2-metadata"
    model: str
    inputs: list[TensorSpec] = Field(default_factory=list)
    outputs: list[TensorSpec] = Field(default_factory=list)
    require_declared: bool = False  # every declared tensor must be listed (else only listed ones are compared)


class V2InferRule(_Model):
    """``POST /v2/models/{name}/infer``: every expected output tensor is there with its datatype and shape."""

    kind: Literal["v2-infer"] = "v2-infer"
    model: str
    outputs: list[TensorSpec] = Field(default_factory=list)


class ErrorRule(_Model):
    """A bad request gets a 4xx answer in the protocol's error format."""

    kind: Literal["error"] = "error"
    protocol: Literal["open-inference-v2", "kserve-v1", "openai-chat", "envelope"]


class V1ReadyRule(_Model):
    kind: Literal["v1-ready"] = "v1-ready"
    model: str


class V1PredictRule(_Model):
    """``:predict``: one prediction per instance, each of the declared JSON type (and width for arrays)."""

    kind: Literal["v1-predict"] = "v1-predict"
    instances: int
    prediction_type: Literal["string", "number", "integer", "boolean", "array", "object"] | None = None
    width: int | None = None  # arrays: number of elements per prediction (e.g. one probability per class)


class OpenAIModelsRule(_Model):
    kind: Literal["openai-models"] = "openai-models"
    model: str


class OpenAIChatRule(_Model):
    """A (non-streamed) chat completion, judged by what the request asked for."""

    kind: Literal["openai-chat"] = "openai-chat"
    choices: int = 1
    tools: list[ToolSpec] = Field(default_factory=list)
    tool_call_required: bool = False
    logprobs: bool = False
    top_logprobs: int = 0


class OpenAIStreamRule(_Model):
    """A streamed chat completion: ``data: {chunk}`` events, a finish_reason, then ``data: [DONE]``."""

    kind: Literal["openai-stream"] = "openai-stream"
    tools: list[ToolSpec] = Field(default_factory=list)
    tool_call_required: bool = False
    logprobs: bool = False


class OpenAICompletionRule(_Model):
    kind: Literal["openai-completion"] = "openai-completion"
    choices: int = 1
    logprobs: bool = False


Rule = Annotated[
    V2ReadyRule
    | V2MetadataRule
    | V2InferRule
    | ErrorRule
    | V1ReadyRule
    | V1PredictRule
    | OpenAIModelsRule
    | OpenAIChatRule
    | OpenAIStreamRule
    | OpenAICompletionRule,
    Field(discriminator="kind"),
]

# Rules that judge the raw bytes (no JSON document): readiness may answer with an empty body, and a
# stream is a sequence of server-sent events.
RAW_RULES = frozenset({"v2-ready", "openai-stream"})


def judge_raw(rule: Rule, status: int, body: bytes) -> list[str]:
    """Reasons a raw answer breaks a rule in :data:`RAW_RULES`."""
    if isinstance(rule, V2ReadyRule):
        return [] if 200 <= status < 300 else [f"not ready: HTTP {status}"]
    if isinstance(rule, OpenAIStreamRule):
        return _judge_stream(rule, body)
    raise ValueError(f"rule {rule.kind} judges JSON, not raw bytes")


def judge(rule: Rule, status: int, document: Any) -> list[str]:
    """Reasons a decoded JSON answer breaks ``rule``."""
    if isinstance(rule, V2MetadataRule):
        return _judge_v2_metadata(rule, document)
    if isinstance(rule, V2InferRule):
        return _judge_v2_infer(rule, document)
    if isinstance(rule, ErrorRule):
        return _judge_error(rule, status, document)
    if isinstance(rule, V1ReadyRule):
        return _judge_v1_ready(rule, document)
    if isinstance(rule, V1PredictRule):
        return _judge_v1_predict(rule, document)
    if isinstance(rule, OpenAIModelsRule):
        return _judge_openai_models(rule, document)
    if isinstance(rule, OpenAIChatRule):
        return _judge_openai_chat(rule, document)
    if isinstance(rule, OpenAICompletionRule):
        return _judge_openai_completion(rule, document)
    raise ValueError(f"rule {rule.kind} judges raw bytes, not JSON")


# ------------------------------------------------------------------------------------------------ v2


def _openai_answer(doc: Any, kind: str, n: int, *, required: tuple[str, ...] = ()) -> tuple[list[Any] | None,
                                                                                            list[str]]:
    """What every OpenAI-compatible answer of ``kind`` must have (the object type, ``required`` string fields,
    usage, ``n`` choices): its choices (None when it has none to judge) and the reasons it breaks that."""
    if not isinstance(doc, dict):
        return None, [f"expected a JSON object, got {json_type(doc)}"]
    reasons: list[str] = []
    if doc.get("object") != kind:
        reasons.append(f"object: is {_short(doc.get('object'))}, expected {kind!r}")
    reasons += [f"{key}: missing" for key in required if not isinstance(doc.get(key), str)]
    reasons.extend(_usage_problems(doc.get("usage")))
    choices = doc.get("choices")
    if not isinstance(choices, list) or not choices:
        return None, [*reasons, "choices: missing or empty"]
    if len(choices) != n:
        reasons.append(f"choices: {len(choices)}, expected {n} (n)")
    return choices, reasons


def _named(doc: dict[str, Any], key: str, expected: str) -> list[str]:
    """``doc[key]`` names the model ``expected``: nothing, or why not."""
    value = doc.get(key)
    if not isinstance(value, str):
        return [f"{key}: missing"]
    return [] if value == expected else [f"{key}: is {value!r}, expected {expected!r}"]


def _judge_v2_metadata(rule: V2MetadataRule, doc: Any) -> list[str]:
    if not isinstance(doc, dict):
        return [f"metadata: expected a JSON object, got {json_type(doc)}"]
    reasons = _named(doc, "name", rule.model)
    for side, declared in (("inputs", rule.inputs), ("outputs", rule.outputs)):
        listed = doc.get(side, [])
        if listed is None:
            listed = []
        if not isinstance(listed, list):
            reasons.append(f"{side}: expected an array, got {json_type(listed)}")
            continue
        by_name: dict[str, Any] = {}
        for index, item in enumerate(listed):
            problem = _tensor_metadata_problem(item)
            if problem is not None:
                reasons.append(f"{side}.{index}: {problem}")
            else:
                by_name[item["name"]] = item
        for spec in declared:
            item = by_name.get(spec.name)
            if item is None:
                if rule.require_declared:
                    reasons.append(f"{side}[{spec.name}]: missing (listed: {sorted(by_name) or 'none'})")
                continue
            reasons.extend(_tensor_mismatch(f"{side}[{spec.name}]", spec, item["datatype"], item["shape"]))
    return reasons


def _tensor_metadata_problem(item: Any) -> str | None:
    if not isinstance(item, dict):
        return f"expected an object, got {json_type(item)}"
    if not isinstance(item.get("name"), str):
        return "name: missing"
    if not isinstance(item.get("datatype"), str):
        return "datatype: missing"
    shape = item.get("shape")
    if not isinstance(shape, list) or not all(_is_int(dim) for dim in shape):
        return "shape: not an array of integers"
    return None


def _tensor_mismatch(where: str, spec: TensorSpec, datatype: str, shape: Sequence[int]) -> list[str]:
    reasons: list[str] = []
    if datatype != spec.datatype:
        reasons.append(f"{where}.datatype: changed: expected {spec.datatype}, got {datatype}")
    if spec.shape and not _shape_matches(spec.shape, shape):
        reasons.append(f"{where}.shape: {list(shape)} does not match {spec.shape}")
    return reasons


def _shape_matches(expected: Sequence[int], actual: Sequence[int]) -> bool:
    if len(expected) != len(actual):
        return False
    return all(want in (-1, got) or got == -1 for want, got in zip(expected, actual, strict=True))


def _judge_v2_infer(rule: V2InferRule, doc: Any) -> list[str]:
    if not isinstance(doc, dict):
        return [f"infer: expected a JSON object, got {json_type(doc)}"]
    reasons = _named(doc, "model_name", rule.model)
    outputs = doc.get("outputs")
    if not isinstance(outputs, list):
        return [*reasons, "outputs: missing" if outputs is None else "outputs: not an array"]
    by_name: dict[str, dict[str, Any]] = {}
    for index, item in enumerate(outputs):
        problem = _tensor_metadata_problem(item)
        if problem is not None:
            reasons.append(f"outputs.{index}: {problem}")
            continue
        where = f"outputs[{item['name']}]"
        if item["datatype"] not in V2_DATATYPES:
            reasons.append(f"{where}.datatype: unknown datatype {item['datatype']!r}")
        if "data" not in item:
            reasons.append(f"{where}.data: missing")
            continue
        reasons.extend(_tensor_data_problems(where, item))
        by_name[item["name"]] = item
    for spec in rule.outputs:
        item = by_name.get(spec.name)
        if item is None:
            if not any(isinstance(o, dict) and o.get("name") == spec.name for o in outputs):
                names = sorted(str(o.get("name")) for o in outputs if isinstance(o, dict))
                reasons.append(f"outputs[{spec.name}]: missing (got: {', '.join(names) or 'none'})")
            continue
        reasons.extend(_tensor_mismatch(f"outputs[{spec.name}]", spec, item["datatype"], item["shape"]))
    return reasons


def _tensor_data_problems(where: str, item: dict[str, Any]) -> list[str]:
    flat = list(_flatten(item["data"]))
    size = math.prod(item["shape"])
    reasons: list[str] = []
    if len(flat) != size:
        reasons.append(f"{where}.data: {len(flat)} elements, shape {item['shape']} needs {size}")
    datatype = item["datatype"]
    for index, element in enumerate(flat):
        if not _element_fits(datatype, element):
            reasons.append(f"{where}.data.{index}: {json_type(element)} is not a {datatype} element")
            break
    return reasons


def _element_fits(datatype: str, element: Any) -> bool:
    if datatype == "BOOL":
        return isinstance(element, bool)
    if datatype.startswith(("INT", "UINT")):
        return _is_int(element) or (isinstance(element, float) and element.is_integer())
    if datatype.startswith("FP"):
        return isinstance(element, int | float) and not isinstance(element, bool)
    if datatype == "BYTES":
        return isinstance(element, str)
    return True


def _flatten(data: Any) -> Iterator[Any]:
    if isinstance(data, list):
        for item in data:
            yield from _flatten(item)
    else:
        yield data


def tensor_rows(item: Any) -> list[list[Any]]:
    """A v2 output tensor's data as rows (the last dimension), e.g. one probability vector per instance.

    Raises ValueError when the tensor is not ``{name, datatype, shape, data}`` with matching sizes.
    """
    if not isinstance(item, dict) or _tensor_metadata_problem(item) is not None or "data" not in item:
        raise ValueError("not a tensor {name, datatype, shape, data}")
    flat = list(_flatten(item["data"]))
    shape: list[int] = item["shape"]
    if len(flat) != math.prod(shape):
        raise ValueError(f"{len(flat)} elements, shape {shape}")
    width = shape[-1] if len(shape) >= 2 else 1
    if width <= 0:
        return []
    return [flat[start : start + width] for start in range(0, len(flat), width)]


# -------------------------------------------------------------------------------------------- errors


def _judge_error(rule: ErrorRule, status: int, doc: Any) -> list[str]:
    reasons = [] if 400 <= status < 500 else [f"HTTP status {status}, expected a 4xx client error"]
    if not isinstance(doc, dict):
        return [*reasons, f"error: expected a JSON object, got {json_type(doc)}"]
    if rule.protocol in ("open-inference-v2", "kserve-v1"):
        if not isinstance(doc.get("error"), str):
            reasons.append("error: missing" if "error" not in doc else "error: not a string")
    elif rule.protocol == "openai-chat":
        error = doc.get("error")
        if not isinstance(error, dict):
            reasons.append("error: missing" if error is None else "error: not an object")
        elif not isinstance(error.get("message"), str):
            reasons.append("error.message: missing")
    return reasons


# ------------------------------------------------------------------------------------------ kserve v1


def _judge_v1_ready(rule: V1ReadyRule, doc: Any) -> list[str]:
    if not isinstance(doc, dict):
        return [f"expected a JSON object, got {json_type(doc)}"]
    reasons = []
    if doc.get("name") != rule.model:
        reasons.append(f"name: is {_short(doc.get('name'))}, expected {rule.model!r}")
    if doc.get("ready") is not True:
        reasons.append(f"ready: is {_short(doc.get('ready'))}, expected true")
    return reasons


_V1_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
}


def _judge_v1_predict(rule: V1PredictRule, doc: Any) -> list[str]:
    if not isinstance(doc, dict):
        return [f"expected a JSON object, got {json_type(doc)}"]
    predictions = doc.get("predictions")
    if not isinstance(predictions, list):
        return ["predictions: missing" if predictions is None else "predictions: not an array"]
    reasons: list[str] = []
    if len(predictions) != rule.instances:
        reasons.append(f"predictions: {len(predictions)} for {rule.instances} instances")
    if rule.prediction_type is not None:
        fits = _V1_TYPES[rule.prediction_type]
        for index, item in enumerate(predictions):
            if not fits(item):
                reasons.append(
                    f"predictions.{index}: type changed: expected {rule.prediction_type}, got {json_type(item)}"
                )
                break
    if rule.width is not None:
        for index, item in enumerate(predictions):
            if isinstance(item, list) and len(item) != rule.width:
                reasons.append(f"predictions.{index}: {len(item)} elements, expected {rule.width}")
                break
    return reasons


# -------------------------------------------------------------------------------------------- OpenAI


def _judge_openai_models(rule: OpenAIModelsRule, doc: Any) -> list[str]:
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        return ["data: missing (expected {object: list, data: [...]})"]
    ids = [item.get("id") for item in doc["data"] if isinstance(item, dict)]
    if rule.model not in ids:
        return [f"model {rule.model!r} gone from /v1/models (listed: {', '.join(map(str, ids)) or 'none'})"]
    return []


def _judge_openai_chat(rule: OpenAIChatRule, doc: Any) -> list[str]:
    choices, reasons = _openai_answer(doc, "chat.completion", rule.choices, required=("id", "model"))
    if choices is None:
        return reasons
    for index, choice in enumerate(choices):
        where = f"choices.{index}"
        if not isinstance(choice, dict):
            reasons.append(f"{where}: not an object")
            continue
        reasons.extend(_finish_reason_problems(where, choice.get("finish_reason"), final=True))
        message = choice.get("message")
        if not isinstance(message, dict):
            reasons.append(f"{where}.message: missing")
            continue
        if message.get("role") != "assistant":
            reasons.append(f"{where}.message.role: is {_short(message.get('role'))}, expected 'assistant'")
        tool_calls = message.get("tool_calls") or []
        content = message.get("content")
        if not isinstance(content, str) and not (content is None and tool_calls):
            reasons.append(f"{where}.message.content: {'missing' if content is None else 'not a string'}")
        if rule.tools or tool_calls:
            reasons.extend(_tool_call_problems(f"{where}.message.tool_calls", tool_calls, rule.tools))
            if rule.tool_call_required and not tool_calls:
                reasons.append(f"{where}.message.tool_calls: missing (the request requires a tool call)")
        if rule.logprobs:
            reasons.extend(_logprob_problems(f"{where}.logprobs", choice.get("logprobs"), rule.top_logprobs))
    return reasons


def _judge_openai_completion(rule: OpenAICompletionRule, doc: Any) -> list[str]:
    choices, reasons = _openai_answer(doc, "text_completion", rule.choices)
    if choices is None:
        return reasons
    for index, choice in enumerate(choices):
        if not isinstance(choice, dict) or not isinstance(choice.get("text"), str):
            reasons.append(f"choices.{index}.text: missing")
            continue
        reasons.extend(_finish_reason_problems(f"choices.{index}", choice.get("finish_reason"), final=True))
        if rule.logprobs:
            lp = choice.get("logprobs")
            if not isinstance(lp, dict) or not isinstance(lp.get("token_logprobs"), list):
                reasons.append(f"choices.{index}.logprobs.token_logprobs: missing")
    return reasons


def _usage_problems(usage: Any) -> list[str]:
    if not isinstance(usage, dict):
        return ["usage: missing"]
    return [
        f"usage.{key}: {'missing' if key not in usage else 'not an integer'}"
        for key in ("prompt_tokens", "completion_tokens", "total_tokens")
        if not _is_int(usage.get(key))
    ]


def _finish_reason_problems(where: str, value: Any, *, final: bool) -> list[str]:
    if value is None:
        return [f"{where}.finish_reason: missing"] if final else []
    if value not in FINISH_REASONS:
        return [f"{where}.finish_reason: {_short(value)} is not one of {sorted(FINISH_REASONS)}"]
    return []


def _tool_call_problems(where: str, tool_calls: Any, tools: Sequence[ToolSpec]) -> list[str]:
    if not isinstance(tool_calls, list):
        return [f"{where}: not an array"]
    offered = {tool.name: tool for tool in tools}
    reasons: list[str] = []
    for index, call in enumerate(tool_calls):
        here = f"{where}.{index}"
        if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
            reasons.append(f"{here}.function: missing")
            continue
        if not isinstance(call.get("id"), str):
            reasons.append(f"{here}.id: missing")
        if call.get("type", "function") != "function":
            reasons.append(f"{here}.type: is {_short(call.get('type'))}, expected 'function'")
        function = call["function"]
        reasons.extend(_function_problems(f"{here}.function", function.get("name"), function.get("arguments"), offered))
    return reasons


def _function_problems(where: str, name: Any, arguments: Any, offered: dict[str, ToolSpec]) -> list[str]:
    reasons: list[str] = []
    if not isinstance(name, str):
        reasons.append(f"{where}.name: missing")
    elif offered and name not in offered:
        reasons.append(f"{where}.name: {name!r} is not a tool the request offered ({', '.join(sorted(offered))})")
    if not isinstance(arguments, str):
        return [*reasons, f"{where}.arguments: {'missing' if arguments is None else 'not a JSON string'}"]
    try:
        parsed = json.loads(arguments)
    except ValueError as exc:
        return [*reasons, f"{where}.arguments: not valid JSON: {_short(str(exc))}"]
    if not isinstance(parsed, dict):
        return [*reasons, f"{where}.arguments: JSON {json_type(parsed)}, expected an object"]
    tool = offered.get(name) if isinstance(name, str) else None
    if tool is not None:
        missing = [key for key in tool.required if key not in parsed]
        if missing:
            reasons.append(f"{where}.arguments: required {', '.join(missing)} missing")
    return reasons


def _logprob_problems(where: str, logprobs: Any, top: int) -> list[str]:
    if not isinstance(logprobs, dict) or not isinstance(logprobs.get("content"), list):
        return [f"{where}.content: missing (the request asked for logprobs)"]
    for index, entry in enumerate(logprobs["content"]):
        here = f"{where}.content.{index}"
        if not isinstance(entry, dict) or not isinstance(entry.get("token"), str):
            return [f"{here}.token: missing"]
        value = entry.get("logprob")
        if not isinstance(value, int | float) or not _is_number(value) or value > 0:
            return [f"{here}.logprob: {_short(value)} is not a log-probability (a number <= 0)"]
        if top and not isinstance(entry.get("top_logprobs"), list):
            return [f"{here}.top_logprobs: missing (the request asked for {top})"]
    return []


# ----------------------------------------------------------------------------------------- streaming


def parse_sse(body: bytes) -> tuple[list[str], list[str]]:
    """The ``data`` payloads of a server-sent-events body, and framing problems found on the way.

    Events are separated by a blank line; an event's ``data:`` lines are joined by newlines; comments
    (``:``) and other fields (``event``, ``id``, ``retry``) are allowed and ignored.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return [], [f"stream: not UTF-8: {exc}"]
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    problems: list[str] = []
    events: list[str] = []
    if text.strip() and not text.endswith("\n\n"):
        problems.append("stream: the last event is not terminated by a blank line")
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        data: list[str] = []
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            name, sep, value = line.partition(":")
            if not sep:
                problems.append(f"stream: line {_short(line)} is not 'field: value'")
                continue
            if name == "data":
                data.append(value[1:] if value.startswith(" ") else value)
            elif name not in ("event", "id", "retry"):
                problems.append(f"stream: unknown field {name!r}")
        if data:
            events.append("\n".join(data))
    return events, problems


def _judge_stream(rule: OpenAIStreamRule, body: bytes) -> list[str]:
    events, reasons = parse_sse(body)
    if not events:
        return [*reasons, "stream: no data events"]
    if events[-1] != "[DONE]":
        reasons.append("stream: does not end with 'data: [DONE]'")
    chunks: list[dict[str, Any]] = []
    for index, payload in enumerate(events):
        if payload == "[DONE]":
            if index != len(events) - 1:
                reasons.append(f"stream: 'data: [DONE]' is event {index}, not the last")
            continue
        try:
            chunk = json.loads(payload)
        except ValueError:
            reasons.append(f"stream: event {index} is not JSON: {_short(payload)}")
            continue
        if not isinstance(chunk, dict):
            reasons.append(f"stream: event {index} is not a JSON object")
            continue
        chunks.append(chunk)
    if not chunks:
        return [*reasons, "stream: no chunks"]
    finish: Any = None
    arguments: dict[int, list[str]] = {}
    names: dict[int, Any] = {}
    logprob_entries = 0
    for index, chunk in enumerate(chunks):
        where = f"chunk {index}"
        if chunk.get("object") != "chat.completion.chunk":
            reasons.append(f"{where}: object is {_short(chunk.get('object'))}, expected 'chat.completion.chunk'")
            break
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            reasons.append(f"{where}: choices missing")
            break
        for choice in choices:
            if not isinstance(choice, dict) or not isinstance(choice.get("delta"), dict):
                reasons.append(f"{where}: choices[].delta missing")
                break
            delta = choice["delta"]
            content = delta.get("content")
            if content is not None and not isinstance(content, str):
                reasons.append(f"{where}: delta.content is {json_type(content)}, expected a string")
            for call in delta.get("tool_calls") or []:
                if not isinstance(call, dict) or not _is_int(call.get("index")):
                    reasons.append(f"{where}: delta.tool_calls[].index missing")
                    continue
                function = call.get("function") or {}
                if isinstance(function.get("name"), str):
                    names[call["index"]] = function["name"]
                if isinstance(function.get("arguments"), str):
                    arguments.setdefault(call["index"], []).append(function["arguments"])
            if isinstance(choice.get("logprobs"), dict) and isinstance(choice["logprobs"].get("content"), list):
                logprob_entries += len(choice["logprobs"]["content"])
            if choice.get("finish_reason") is not None:
                reasons.extend(_finish_reason_problems(where, choice["finish_reason"], final=False))
                finish = choice["finish_reason"]
    if finish is None:
        reasons.append("stream: no chunk carries a finish_reason")
    offered = {tool.name: tool for tool in rule.tools}
    for index in sorted(set(names) | set(arguments)):
        joined = "".join(arguments.get(index, []))
        reasons.extend(_function_problems(f"tool_calls.{index}.function", names.get(index), joined, offered))
    if rule.tool_call_required and not names:
        reasons.append("stream: no tool call (the request requires one)")
    if rule.logprobs and logprob_entries == 0:
        reasons.append("stream: no logprobs (the request asked for them)")
    return reasons


# ------------------------------------------------------------------------------------------- helpers


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def json_type(value: Any) -> str:
    """The JSON type of a decoded value, as messages name it (``object``, ``integer``, ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
