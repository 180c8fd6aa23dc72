"""A reference model server for tests and the demo, whose versions break the way model upgrades break.

    python -m compat_probe.refserver --port 8080 --version v1 [--config FILE] [--latency-ms N]
                                     [--labels positive,negative,neutral] [--rollout R --track T --revision V]

``POST /v1/predict`` with ``{"text": "..."}`` answers, deterministically from the text::

    {"code": 0, "message": "ok",
     "data": {"label": "positive", "scores": [{"label": "positive", "score": 0.61}, ...],
              "model_version": "v1", "tokens": 4}}

Versions (``--version``):

- ``v1``: the answer above;
- ``v2-compatible``: adds an optional field (``data.calibrated``): a compatible change;
- ``v2-drop-field``: drops ``data.tokens``;
- ``v2-retype``: ``data.tokens`` becomes a string;
- ``v2-slow``: same answer, 250 ms slower (on top of ``--latency-ms``);
- ``v2-relabel``: the scores move one label over, so the top-1 label differs for every input.

Config (``--config``, YAML/JSON): v1 reads ``max_seq_len`` and ``use_fp16``; every v2 renamed them to
``max_length`` and ``amp``. A config carrying the other generation's key makes the server refuse to start
(exit code 2) with a message naming the key and its new name, the way a real upgrade breaks on a renamed
config key. ``max_seq_len``/``max_length`` caps ``data.tokens``.

Other endpoints: ``GET /healthz``; ``GET /metrics`` (``model_requests_total{code}``,
``model_request_latency_seconds``, ``model_api_compatibility_score``, all labelled rollout/track/revision);
``POST /admin/score {"value": 0.5}`` sets ``model_api_compatibility_score`` (``null`` = NaN), so the
operator's demo and tests can drive a score without a sidecar;
``POST /admin/metric {"name": ..., "value": ...}`` does the same for ``model_compat_latency_impact_ms``,
``model_shadow_mismatch_rate`` and ``model_shadow_prediction_diff`` (absent until first set);
``POST /admin/latency {"ms": 100}`` changes the added latency at run time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any, cast

import yaml
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

__all__ = [
    "SLOW_EXTRA_MS",
    "VERSIONS",
    "ConfigError",
    "ModelConfig",
    "RefServer",
    "main",
    "parse_config",
    "predict",
]

log = logging.getLogger("compat_probe.refserver")

VERSIONS = ("v1", "v2-compatible", "v2-drop-field", "v2-retype", "v2-slow", "v2-relabel")
SLOW_EXTRA_MS = 250.0
DEFAULT_LABELS = ("positive", "negative", "neutral")
RENAMED_KEYS = {"max_seq_len": "max_length", "use_fp16": "amp"}  # v1 name -> v2 name
SETTABLE_GAUGES = (
    "model_api_compatibility_score",
    "model_compat_latency_impact_ms",
    "model_shadow_mismatch_rate",
    "model_shadow_prediction_diff",
)
_MAX_BODY = 1024 * 1024


class ConfigError(ValueError):
    """The config does not fit the version: the server must not start."""


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    max_length: int = 512
    amp: bool = False


def parse_config(version: str, data: Mapping[str, Any] | None) -> ModelConfig:
    """Validate a config for ``version``; raises ConfigError on a key of the other generation."""
    data = dict(data or {})
    v2 = version != "v1"
    for old, new in RENAMED_KEYS.items():
        if v2 and old in data:
            raise ConfigError(
                f"config key {old!r} was renamed to {new!r} in {version}; rename it in the config "
                f"(a ModelRollout migrates it with spec.model.configMigrations: {{from: {old}, to: {new}}})"
            )
        if not v2 and new in data:
            raise ConfigError(
                f"config key {new!r} is unknown to {version}, which calls it {old!r}; "
                "this config was written for v2"
            )
    length_key, amp_key = ("max_length", "amp") if v2 else ("max_seq_len", "use_fp16")
    length = data.get(length_key, 512)
    amp = data.get(amp_key, False)
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ConfigError(f"config key {length_key!r} must be a positive integer, got {length!r}")
    if not isinstance(amp, bool):
        raise ConfigError(f"config key {amp_key!r} must be true or false, got {amp!r}")
    return ModelConfig(max_length=length, amp=amp)


def predict(text: str, *, version: str, labels: Sequence[str], config: ModelConfig) -> dict[str, Any]:
    """The ``data`` part of the answer: deterministic in ``text``; shaped by ``version``."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    logits = [digest[i % len(digest)] / 255.0 * 4.0 for i in range(len(labels))]
    peak = max(logits)
    weights = [math.exp(logit - peak) for logit in logits]
    total = sum(weights)
    probabilities = [weight / total for weight in weights]
    if version == "v2-relabel" and len(labels) > 1:
        probabilities = probabilities[-1:] + probabilities[:-1]  # label i gets label i-1's score
    scores = [{"label": label, "score": round(p, 6)} for label, p in zip(labels, probabilities, strict=True)]
    top = max(range(len(labels)), key=lambda i: (probabilities[i], -i))
    tokens = min(len(text.split()), config.max_length)
    data: dict[str, Any] = {
        "label": labels[top],
        "scores": scores,
        "model_version": version,
        "tokens": tokens,
    }
    if version == "v2-compatible":
        data["calibrated"] = True
    elif version == "v2-drop-field":
        del data["tokens"]
    elif version == "v2-retype":
        data["tokens"] = str(tokens)
    return data


# ------------------------------------------------------------------------------------------------ server


class RefServer:
    def __init__(
        self,
        *,
        version: str,
        labels: Sequence[str],
        config: ModelConfig,
        latency_ms: float,
        identity: Mapping[str, str],
        score: float = 1.0,
    ) -> None:
        self.version = version
        self.labels = tuple(labels)
        self.config = config
        self._latency_ms = latency_ms
        self._lock = threading.Lock()
        self.identity = dict(identity)
        names = list(self.identity)
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "model_requests", "Predict requests by HTTP status.", [*names, "code"], registry=self.registry
        )
        self.latency = Histogram(
            "model_request_latency_seconds",
            "Predict request latency.",
            names,
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
        )
        self.gauges = {
            name: Gauge(name, f"{name} (settable via /admin)", names, registry=self.registry)
            for name in SETTABLE_GAUGES
        }
        self.set_gauge("model_api_compatibility_score", score)

    @property
    def latency_ms(self) -> float:
        with self._lock:
            extra = SLOW_EXTRA_MS if self.version == "v2-slow" else 0.0
            return self._latency_ms + extra

    def set_latency(self, ms: float) -> None:
        with self._lock:
            self._latency_ms = ms

    def set_gauge(self, name: str, value: float) -> None:
        self.gauges[name].labels(**self.identity).set(value)

    def answer(self, body: bytes) -> tuple[int, dict[str, Any]]:
        """HTTP status and JSON document for a predict request."""
        try:
            request = json.loads(body) if body else None
        except ValueError:
            return 400, {"code": 400, "message": "request body is not JSON", "data": None}
        text = request.get("text", request.get("inputs")) if isinstance(request, dict) else None
        if not isinstance(text, str):
            return 400, {"code": 400, "message": 'expected {"text": string}', "data": None}
        data = predict(text, version=self.version, labels=self.labels, config=self.config)
        return 200, {"code": 0, "message": "ok", "data": data}


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    model: RefServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "refserver"

    @property
    def model(self) -> RefServer:
        return cast(_HTTPServer, self.server).model

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        if self.path == "/healthz":
            self._json(200, {"status": "ok", "version": self.model.version})
        elif self.path == "/metrics":
            self._send(200, generate_latest(self.model.registry), CONTENT_TYPE_LATEST)
        else:
            self._json(404, {"code": 404, "message": f"no route {self.path}", "data": None})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_BODY:
            self._json(413, {"code": 413, "message": "body too large", "data": None})
            return
        body = self.rfile.read(length) if length > 0 else b""
        if self.path == "/v1/predict":
            self._predict(body)
        elif self.path.startswith("/admin/"):
            self._admin(self.path, body)
        else:
            self._json(404, {"code": 404, "message": f"no route {self.path}", "data": None})

    def _predict(self, body: bytes) -> None:
        model = self.model
        started = time.perf_counter()
        delay = model.latency_ms / 1000.0
        if delay > 0:
            time.sleep(delay)  # the model's simulated compute time
        status, doc = model.answer(body)
        self._json(status, doc)
        model.requests.labels(**model.identity, code=str(status)).inc()
        model.latency.labels(**model.identity).observe(time.perf_counter() - started)

    def _admin(self, path: str, body: bytes) -> None:
        model = self.model
        try:
            doc = json.loads(body) if body else {}
            if not isinstance(doc, dict):
                raise ValueError("expected a JSON object")
            if path == "/admin/score":
                value = _gauge_value(doc.get("value", "missing"))
                model.set_gauge("model_api_compatibility_score", value)
                self._json(200, {"value": _json_number(value)})
            elif path == "/admin/metric":
                name = doc.get("name")
                if name not in SETTABLE_GAUGES:
                    raise ValueError(f"name must be one of {', '.join(SETTABLE_GAUGES)}")
                value = _gauge_value(doc.get("value", "missing"))
                model.set_gauge(str(name), value)
                self._json(200, {"name": name, "value": _json_number(value)})
            elif path == "/admin/latency":
                ms = doc.get("ms")
                if isinstance(ms, bool) or not isinstance(ms, int | float) or not 0 <= ms <= 60_000:
                    raise ValueError('expected {"ms": number within 0..60000}')
                model.set_latency(float(ms))
                self._json(200, {"ms": float(ms)})
            else:
                self._json(404, {"error": f"no admin route {path}"})
        except ValueError as exc:
            self._json(400, {"error": str(exc)})

    def _json(self, status: int, doc: Mapping[str, Any]) -> None:
        self._send(status, json.dumps(doc, separators=(",", ":")).encode(), "application/json")

    def _send(self, status: int, payload: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def _gauge_value(raw: Any) -> float:
    if raw is None:
        return math.nan
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise ValueError('expected {"value": number or null}')
    return float(raw)


def _json_number(value: float) -> float | None:
    return None if math.isnan(value) else value


# -------------------------------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    env = os.environ
    parser = argparse.ArgumentParser(
        prog="python -m compat_probe.refserver",
        description="Reference model server for compat-probe tests and the demo.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True, help="0 picks a free port (printed on stdout)")
    parser.add_argument("--version", default="v1", choices=VERSIONS)
    parser.add_argument("--config", type=Path, help="YAML/JSON model config")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added to every predict request")
    parser.add_argument("--labels", default=",".join(DEFAULT_LABELS), help="comma-separated class labels")
    parser.add_argument("--score", type=float, default=1.0, help="initial model_api_compatibility_score")
    parser.add_argument("--rollout", default=env.get("MODELROLLOUT_ROLLOUT", "unknown"))
    parser.add_argument("--track", default=env.get("MODELROLLOUT_TRACK", "unknown"))
    parser.add_argument("--revision", default=env.get("MODELROLLOUT_REVISION", "unknown"))
    parser.add_argument("--log-level", default="INFO")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=str(args.log_level).upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    labels = [label.strip() for label in args.labels.split(",") if label.strip()]
    if not labels or len(set(labels)) != len(labels):
        print("refserver: --labels needs distinct, non-empty labels", file=sys.stderr)
        return 2
    if args.latency_ms < 0:
        print("refserver: --latency-ms must not be negative", file=sys.stderr)
        return 2
    try:
        raw = yaml.safe_load(args.config.read_text(encoding="utf-8")) if args.config else None
        if raw is not None and not isinstance(raw, dict):
            raise ConfigError(f"{args.config}: expected a mapping of config keys")
        config = parse_config(args.version, raw)
    except (OSError, yaml.YAMLError, ConfigError) as exc:
        print(f"refserver: refusing to start {args.version}: {exc}", file=sys.stderr)
        return 2

    disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series
    model = RefServer(
        version=args.version,
        labels=labels,
        config=config,
        latency_ms=args.latency_ms,
        identity={"rollout": args.rollout, "track": args.track, "revision": args.revision},
        score=args.score,
    )
    try:
        httpd = _HTTPServer((args.host, args.port), _Handler)
    except OSError as exc:
        print(f"refserver: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    httpd.model = model

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    thread = threading.Thread(target=httpd.serve_forever, name="refserver-http", daemon=True)
    thread.start()
    host, port = httpd.server_address[:2]
    print(f"refserver {args.version} listening on http://{host!s}:{port}", flush=True)
    stop.wait()
    httpd.shutdown()
    httpd.server_close()
    thread.join(5.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
