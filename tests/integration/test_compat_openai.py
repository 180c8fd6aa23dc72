"""The openai-chat preset over HTTP: the real ``compat-probe --once`` against a local server that speaks the
OpenAI-compatible API (as vLLM serves it: /v1/models, /v1/chat/completions with tools, logprobs and
server-sent-event streams, /v1/completions, 404 errors in OpenAI's error format).

No real OpenAI-compatible server runs here without downloading model weights (docs/compat-probe.md), so
this server answers with fixed documents; ``mode`` switches it to the breaks an upgrade can bring.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..localhttp import LocalServer, QuietHandler

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = ROOT / "examples" / "compat-contract-openai.yaml"
MODEL = "qwen2.5-0.5b-instruct"
USAGE = {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14}


class OpenAIServer(LocalServer):
    def __init__(self) -> None:
        self.mode = "ok"
        super().__init__(_Handler)


class _Handler(QuietHandler):
    server: OpenAIServer

    def do_GET(self) -> None:
        served = "qwen2.5-1.5b-instruct" if self.server.mode == "renamed" else MODEL
        self.send_json(200, {"object": "list", "data": [{"id": served, "object": "model", "owned_by": "vllm"}]})

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        mode = self.server.mode
        if request.get("model") != MODEL:
            self.send_json(404, {"error": {"message": f"The model `{request.get('model')}` does not exist.",
                                       "type": "NotFoundError", "param": None, "code": 404}})
            return
        if request.get("stream"):
            self._stream(mode)
            return
        message: dict[str, Any] = {"role": "assistant", "content": "Hello", "tool_calls": []}
        finish = "stop"
        if request.get("tools"):
            arguments = "{city: Paris}" if mode == "broken-tools" else '{"city": "Paris"}'
            message = {"role": "assistant", "content": None, "tool_calls": [
                {"id": "chatcmpl-tool-1", "type": "function",
                 "function": {"name": "get_weather", "arguments": arguments}}]}
            finish = "tool_calls"
        choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
        if request.get("logprobs"):
            choice["logprobs"] = {"content": [{"token": "Hello", "logprob": -0.02, "bytes": [72, 101, 108, 108, 111],
                                               "top_logprobs": [{"token": "Hello", "logprob": -0.02},
                                                                {"token": "Hi", "logprob": -4.1}]}]}
        self.send_json(200, {"id": "chatcmpl-1", "object": "chat.completion", "created": 1765000000, "model": MODEL,
                         "choices": [choice], "usage": USAGE})

    def _stream(self, mode: str) -> None:
        obj = "chat.completion" if mode == "broken-stream" else "chat.completion.chunk"
        chunks = [{"id": "chatcmpl-2", "object": obj, "created": 1765000000, "model": MODEL,
                   "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
                  for delta, finish in (({"role": "assistant", "content": ""}, None), ({"content": "Hello"}, None),
                                        ({}, "stop"))]
        body = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def server() -> Iterator[OpenAIServer]:
    srv = OpenAIServer()
    yield srv
    srv.close()


def probe_once(url: str) -> tuple[int, dict[str, list[str]], float]:
    done = subprocess.run(
        [sys.executable, "-m", "compat_probe", "--target", url, "--contract", str(CONTRACT), "--once",
         "--log-level", "WARNING"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "operator")},
    )
    assert done.returncode in (0, 1), done.stderr
    report = json.loads(done.stdout)
    return done.returncode, {f["name"]: f["reasons"] for f in report["failing"]}, report["score"]


@pytest.mark.parametrize(("mode", "failing", "reason"), [
    ("ok", set(), None),
    ("renamed", {"models"}, "model 'qwen2.5-0.5b-instruct' gone from /v1/models (listed: qwen2.5-1.5b-instruct)"),
    ("broken-tools", {"chat-weather-tool"}, "choices.0.message.tool_calls.0.function.arguments: not valid JSON"),
    ("broken-stream", {"chat-hello-stream"}, "chunk 0: object is 'chat.completion', expected 'chat.completion.chunk'"),
])
def test_openai_preset_against_an_openai_speaking_server(
        server: OpenAIServer, mode: str, failing: set[str], reason: str | None) -> None:
    server.mode = mode
    code, found, score = probe_once(server.url)
    assert set(found) == failing, found
    assert code == (0 if not failing else 1)
    assert score == pytest.approx(1.0 - len(failing) / 5)
    if reason is not None:
        assert any(r.startswith(reason) for r in next(iter(found.values()))), found
