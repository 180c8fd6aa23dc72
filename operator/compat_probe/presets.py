"""Contract presets: ``protocol: NAME`` plus a few golden inputs expand into the checks that protocol's
clients rely on. PURE: this module turns contract data into check data, nothing else.

What each preset checks (the check names are what ``model_compat_check_passed{check}`` and the rollout's
failure message show):

``open-inference-v2`` (KServe v2 / Open Inference Protocol: KServe, Triton, MLServer)
  ``v2-ready``: ``GET /v2/health/ready`` answers 2xx; ``v2-model-ready``: ``GET /v2/models/{model}/ready``
  answers 2xx (a model gone from the server fails here); ``v2-metadata``: ``GET /v2/models/{model}`` names
  the model and lists its tensors with the declared datatypes and shapes; ``infer-GOLDEN``: each golden
  input answered with ``model_name`` and every declared output tensor present, with its datatype, a shape
  matching the declared one (``-1`` = any size), as many elements as the shape says and elements of the
  datatype; ``v2-error``: a malformed request gets a 4xx ``{"error": "..."}``.
``openai-chat`` (vLLM, TGI, SGLang, llama.cpp)
  ``models``: the model is listed by ``GET /v1/models``; ``chat-GOLDEN``: a chat completion with
  ``choices[i].message`` (role assistant, content a string unless tool calls), ``finish_reason`` from the
  known set, ``usage`` token counts, ``n`` choices; when the request offers ``tools``: every tool call
  names an offered function and its ``arguments`` are a JSON object with the schema's required keys
  (``tool_choice: required`` or a named function: a tool call must be there); when it asks for
  ``logprobs``: ``logprobs.content[].{token, logprob<=0}``; with ``stream: true``: server-sent events
  ``data: {chat.completion.chunk}``, each with ``choices[].delta``, a finish_reason, ``data: [DONE]`` last,
  and streamed tool-call arguments that join into valid JSON. A golden input with ``prompt`` instead of
  ``messages`` goes to ``/v1/completions``. ``error``: an unknown model gets a 4xx
  ``{"error": {"message": ...}}``.
``kserve-v1``
  ``v1-ready``: ``GET /v1/models/{model}`` is ``{"name": model, "ready": true}``; ``predict-GOLDEN``:
  ``:predict`` answers one prediction per instance, of ``predictionType`` (and ``predictionWidth``
  elements for arrays); ``v1-error``: a request for a model the server does not have gets a 4xx
  ``{"error": "..."}``.
``envelope`` (this project's ``{code, message, data}``)
  ``GOLDEN``: each golden request answered in the envelope with the golden's ``fields``; ``error``: a
  malformed request gets a 4xx in the same envelope (any code, a string message).

Hand-written ``checks`` are appended after the preset's and judged the same way.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from compat_probe.protocols import (
    ErrorRule,
    OpenAIChatRule,
    OpenAICompletionRule,
    OpenAIModelsRule,
    OpenAIStreamRule,
    TensorSpec,
    ToolSpec,
    V1PredictRule,
    V1ReadyRule,
    V2InferRule,
    V2MetadataRule,
    V2ReadyRule,
)

__all__ = ["NO_SUCH_MODEL", "PROTOCOLS", "Golden", "Preset", "Protocol", "expand"]

Protocol = Literal["open-inference-v2", "openai-chat", "kserve-v1", "envelope"]
PROTOCOLS: tuple[Protocol, ...] = ("open-inference-v2", "openai-chat", "kserve-v1", "envelope")

# The error-format check sends a request no server of the protocol can serve: by default, the first golden
# request addressed to a model that does not exist (``errorPath``/``errorBody`` replace either).
NO_SUCH_MODEL = "modelrollout-no-such-model"
_ERROR_BODIES: dict[str, Any] = {
    "open-inference-v2": {"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [1, 1], "data": [0.0]}]},
    "kserve-v1": {"instances": [[0.0]]},
    "openai-chat": {"model": NO_SUCH_MODEL, "messages": [{"role": "user", "content": "hi"}]},
    "envelope": {"modelrollout_bad_request": True},
}


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, validate_by_alias=True, extra="forbid", frozen=True
    )


class Golden(_Model):
    """One golden input. Which keys apply depends on the protocol (see docs/compat-probe.md)."""

    name: str = Field(min_length=1)
    inputs: list[dict[str, Any]] | None = None  # open-inference-v2: the request's input tensors
    outputs: list[str] | None = None  # open-inference-v2: outputs to request (default: all declared)
    instances: list[Any] | None = None  # kserve-v1
    body: Any = None  # openai-chat: the request (model added); otherwise replaces the built body
    path: str | None = None  # envelope: where to POST (default /v1/predict)
    fields: list[dict[str, Any]] = Field(default_factory=list)  # extra field checks on the answer
    max_latency_ms: float | None = Field(default=None, gt=0)
    timeout_seconds: float | None = Field(default=None, gt=0)


class PresetFields(_Model):
    """The fields a contract gives its protocol's preset (the contract and :class:`Preset` share them)."""

    model: str | None = None
    inputs: list[TensorSpec] = Field(default_factory=list)
    outputs: list[TensorSpec] = Field(default_factory=list)
    require_metadata: bool = False
    prediction_type: Literal["string", "number", "integer", "boolean", "array", "object"] | None = None
    prediction_width: int | None = Field(default=None, ge=1)
    error_check: bool = True
    error_path: str | None = None
    error_body: Any = None
    golden: list[Golden] = Field(default_factory=list)


class Preset(PresetFields):
    """The preset part of a contract: what :func:`expand` reads."""

    protocol: Protocol


def expand(preset: Preset) -> list[dict[str, Any]]:
    """The checks (as contract data) the preset stands for."""
    if preset.protocol != "envelope" and not preset.model:
        raise ValueError(f"protocol {preset.protocol} needs `model` (the model's name on the server)")
    if preset.protocol == "open-inference-v2":
        return _v2(preset)
    if preset.protocol == "openai-chat":
        return _openai(preset)
    if preset.protocol == "kserve-v1":
        return _v1(preset)
    return _envelope(preset)


def _common(golden: Golden) -> dict[str, Any]:
    out: dict[str, Any] = {"fields": golden.fields}
    if golden.max_latency_ms is not None:
        out["maxLatencyMs"] = golden.max_latency_ms
    if golden.timeout_seconds is not None:
        out["timeoutSeconds"] = golden.timeout_seconds
    return out


def _error_check(preset: Preset, name: str, path: str, golden_body: Any = None) -> list[dict[str, Any]]:
    if not preset.error_check:
        return []
    body = preset.error_body
    if body is None:
        body = golden_body if golden_body is not None else _ERROR_BODIES[preset.protocol]
    check: dict[str, Any] = {
        "name": name,
        "method": "POST",
        "path": preset.error_path or path,
        "body": body,
        "status": None,  # the rule wants any 4xx
        "rule": ErrorRule(protocol=preset.protocol),
    }
    if preset.protocol == "envelope":
        check["envelope"] = {"code": None}
    else:
        check["envelope"] = None
    return [check]


def _v2(preset: Preset) -> list[dict[str, Any]]:
    model = str(preset.model)
    base = f"/v2/models/{model}"
    checks: list[dict[str, Any]] = [
        {"name": "v2-ready", "method": "GET", "path": "/v2/health/ready", "status": None, "rule": V2ReadyRule()},
        {"name": "v2-model-ready", "method": "GET", "path": f"{base}/ready", "status": None, "rule": V2ReadyRule()},
        {
            "name": "v2-metadata",
            "method": "GET",
            "path": base,
            "rule": V2MetadataRule(
                model=model, inputs=preset.inputs, outputs=preset.outputs, require_declared=preset.require_metadata
            ),
        },
    ]
    for golden in preset.golden:
        if golden.body is not None:
            body = golden.body
        else:
            if golden.inputs is None:
                raise ValueError(f"golden {golden.name!r}: open-inference-v2 needs `inputs` (or `body`)")
            body = {"inputs": golden.inputs}
            if golden.outputs is not None:
                body["outputs"] = [{"name": name} for name in golden.outputs]
        wanted = golden.outputs
        if wanted is None and isinstance(body, dict) and isinstance(body.get("outputs"), list):
            wanted = [str(o.get("name")) for o in body["outputs"] if isinstance(o, dict)]
        expected = [spec for spec in preset.outputs if wanted is None or spec.name in wanted]
        checks.append(
            {
                "name": f"infer-{golden.name}",
                "method": "POST",
                "path": f"{base}/infer",
                "body": body,
                "rule": V2InferRule(model=model, outputs=expected),
                **_common(golden),
            }
        )
    first = checks[3]["body"] if len(checks) > 3 else None
    checks.extend(_error_check(preset, "v2-error", f"/v2/models/{NO_SUCH_MODEL}/infer", first))
    return [{"envelope": None, **check} for check in checks]


def _tools(body: dict[str, Any]) -> tuple[list[ToolSpec], bool]:
    tools: list[ToolSpec] = []
    for tool in body.get("tools") or []:
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise ValueError("tools[].function.name is required")
        parameters = function.get("parameters") or {}
        required = parameters.get("required") or [] if isinstance(parameters, dict) else []
        tools.append(ToolSpec(name=function["name"], required=[str(key) for key in required]))
    choice = body.get("tool_choice")
    required_call = bool(tools) and (choice == "required" or isinstance(choice, dict))
    return tools, required_call


def _openai(preset: Preset) -> list[dict[str, Any]]:
    model = str(preset.model)
    checks: list[dict[str, Any]] = [
        {"name": "models", "method": "GET", "path": "/v1/models", "rule": OpenAIModelsRule(model=model)}
    ]
    for golden in preset.golden:
        if not isinstance(golden.body, dict):
            raise ValueError(f"golden {golden.name!r}: openai-chat needs `body` (the chat request)")
        body = {"model": model, **golden.body}
        logprobs = bool(body.get("logprobs"))
        choices = int(body.get("n") or 1)
        rule: OpenAIChatRule | OpenAIStreamRule | OpenAICompletionRule
        if "prompt" in body and "messages" not in body:
            path = "/v1/completions"
            rule = OpenAICompletionRule(choices=choices, logprobs=body.get("logprobs") is not None)
        else:
            path = "/v1/chat/completions"
            tools, required_call = _tools(body)
            if body.get("stream"):
                rule = OpenAIStreamRule(tools=tools, tool_call_required=required_call, logprobs=logprobs)
            else:
                rule = OpenAIChatRule(
                    choices=choices,
                    tools=tools,
                    tool_call_required=required_call,
                    logprobs=logprobs,
                    top_logprobs=int(body.get("top_logprobs") or 0),
                )
        checks.append({"name": f"chat-{golden.name}", "method": "POST", "path": path, "body": body, "rule": rule,
                       **_common(golden)})
    checks.extend(_error_check(preset, "error", "/v1/chat/completions"))
    return [{"envelope": None, **check} for check in checks]


def _v1(preset: Preset) -> list[dict[str, Any]]:
    model = str(preset.model)
    checks: list[dict[str, Any]] = [
        {"name": "v1-ready", "method": "GET", "path": f"/v1/models/{model}", "rule": V1ReadyRule(model=model)}
    ]
    for golden in preset.golden:
        if golden.body is not None:
            body = golden.body
            instances = body.get("instances") if isinstance(body, dict) else None
        else:
            instances = golden.instances
            body = {"instances": instances}
        if not isinstance(instances, list):
            raise ValueError(f"golden {golden.name!r}: kserve-v1 needs `instances` (a list)")
        rule = V1PredictRule(
            instances=len(instances), prediction_type=preset.prediction_type, width=preset.prediction_width
        )
        checks.append({"name": f"predict-{golden.name}", "method": "POST", "path": f"/v1/models/{model}:predict",
                       "body": body, "rule": rule, **_common(golden)})
    first = checks[1]["body"] if len(checks) > 1 else None
    checks.extend(_error_check(preset, "v1-error", f"/v1/models/{NO_SUCH_MODEL}:predict", first))
    return [{"envelope": None, **check} for check in checks]


def _envelope(preset: Preset) -> list[dict[str, Any]]:
    checks: list[dict[str, Any]] = []
    path = "/v1/predict"
    for golden in preset.golden:
        checks.append({"name": golden.name, "method": "POST", "path": golden.path or path, "body": golden.body,
                       **_common(golden)})
        path = golden.path or path
    checks.extend(_error_check(preset, "error", path))
    return checks
