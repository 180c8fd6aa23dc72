"""The compatibility-probe sidecar process: replay loop, tee proxy, and its HTTP endpoints.

I/O lives here (HTTP client and server, files, clocks, threads); the judging is delegated to the pure
modules :mod:`compat_probe.contract` and :mod:`compat_probe.shadow`.

Endpoints on ``--listen`` (GET):

- ``/metrics``: Prometheus text format, every series labelled ``rollout``, ``track``, ``revision``;
- ``/probe/compatibility``: JSON report of the last replay (score, failing checks and their reasons);
- ``/healthz``: 200 while the process serves;
- ``/readyz``: 200 once the first replay has finished (at once when no contract is configured).

With ``--shadow-target`` every other request is proxied to ``--target`` (tee mode, see ``shadow.py``): the
listener is aiohttp on an event loop of its own, so proxied answers stream through and connections stay
alive; the replay loop is a plain thread (it is not in the path of client requests).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import math
import statistics
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import Message
from importlib import metadata
from pathlib import Path
from typing import Any, cast

import aiohttp
import yaml
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from compat_probe.contract import Check, CheckResult, Contract, evaluate, score
from compat_probe.shadow import (
    Comparison,
    ShadowSpec,
    ShadowStats,
    ShadowWindow,
    Unusable,
    compare_responses,
)

__all__ = [
    "RESERVED_PATHS",
    "ContractRunner",
    "FractionSampler",
    "HttpResult",
    "Identity",
    "ProbeApp",
    "ProbeSettings",
    "Report",
    "http_call",
    "load_config_info",
    "load_dependencies",
    "query_prometheus",
]

log = logging.getLogger("compat_probe")

RESERVED_PATHS = frozenset({"/metrics", "/probe/compatibility", "/healthz", "/readyz"})
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "accept-encoding",  # keep answers uncompressed so they can be compared
    }
)
_NOT_RELAYED = _HOP_BY_HOP | {"server", "date"}  # aiohttp writes its own
_POOL_SIZE = 256  # keep-alive connections to the target and to the stable track
SHADOW_HEADER = "X-Modelrollout-Shadow"
_MAX_BODY = 64 * 1024 * 1024
_CONFIG_VALUE_LIMIT = 256

# urllib without the environment's proxies: the probe talks to its own pod and to in-cluster services.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# ------------------------------------------------------------------------------------------- settings


@dataclass(frozen=True, kw_only=True)
class Identity:
    rollout: str = "unknown"
    track: str = "unknown"
    revision: str = "unknown"

    def label_names(self) -> list[str]:
        return ["rollout", "track", "revision"]

    def label_values(self) -> list[str]:
        return [self.rollout, self.track, self.revision]


@dataclass(frozen=True, kw_only=True)
class ProbeSettings:
    target: str
    identity: Identity = field(default_factory=Identity)
    contract: Contract | None = None
    interval: float = 15.0
    timeout: float | None = None  # overrides the contract's default per-request timeout
    baseline_ms: float | None = None
    baseline_query: str | None = None
    prometheus_url: str | None = None
    dependencies: Mapping[str, str] = field(default_factory=dict)
    config: Mapping[str, str] = field(default_factory=dict)
    listen_host: str = "127.0.0.1"
    listen_port: int = 9109
    shadow_target: str | None = None
    shadow_fraction: float = 1.0
    shadow_spec: ShadowSpec = field(default_factory=ShadowSpec)
    shadow_window: int = 500
    shadow_paths: tuple[str, ...] = ()
    shadow_concurrency: int = 8
    proxy_timeout: float = 30.0


# ----------------------------------------------------------------------------------------- HTTP client


@dataclass(frozen=True, kw_only=True)
class HttpResult:
    status: int | None
    body: bytes | None
    headers: list[tuple[str, str]]
    elapsed: float
    error: str | None = None


def http_call(
    method: str,
    url: str,
    *,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float,
) -> HttpResult:
    """One HTTP exchange. Error statuses are results, not errors; ``error`` is set for transport failures."""
    request = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
    started = time.perf_counter()
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            payload = response.read(_MAX_BODY)
            return HttpResult(
                status=response.status,
                body=payload,
                headers=list(response.headers.items()),
                elapsed=time.perf_counter() - started,
            )
    except urllib.error.HTTPError as exc:
        try:
            payload = exc.read(_MAX_BODY)
        except (OSError, http.client.HTTPException):
            payload = b""
        headers_obj = cast("Message | None", exc.headers)
        return HttpResult(
            status=exc.code,
            body=payload,
            headers=list(headers_obj.items()) if headers_obj is not None else [],
            elapsed=time.perf_counter() - started,
        )
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
        return HttpResult(
            status=None,
            body=None,
            headers=[],
            elapsed=time.perf_counter() - started,
            error=_describe_error(exc, timeout),
        )


def _describe_error(exc: BaseException, timeout: float) -> str:
    reason: object = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, TimeoutError):
        return f"timeout after {timeout:g}s"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    return f"connection error: {reason}"


def query_prometheus(base_url: str, query: str, *, timeout: float) -> float:
    """The value of an instant query that yields one number; NaN when it yields none or fails.

    With several series the first one is used: wrap the query in an aggregation (``max(...)``).
    """
    url = base_url.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": query})
    result = http_call("GET", url, timeout=timeout)
    if result.error is not None or result.status != 200 or result.body is None:
        log.warning("baseline query failed: %s", result.error or f"HTTP {result.status}")
        return math.nan
    try:
        data = json.loads(result.body)["data"]
        if data["resultType"] == "scalar":
            return float(data["result"][1])
        series = data["result"]
        if not series:
            return math.nan
        return float(series[0]["value"][1])
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        log.warning("baseline query answered something unexpected: %s", exc)
        return math.nan


# ------------------------------------------------------------------------------------ static info files


def _load_structured(path: Path) -> Any:
    """YAML or JSON (JSON is YAML)."""
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def load_dependencies(packages: Sequence[str], manifest: Path | None) -> dict[str, str]:
    """Package -> version, from a manifest file and from the installed distributions named.

    The manifest may be a mapping ``{torch: 2.5.1}``, the same under a ``dependencies`` key, a list of
    ``{name|package, version}`` objects, or a list of ``name==version`` strings. A named package that is not
    installed is reported with version ``not-installed``.
    """
    found: dict[str, str] = {}
    if manifest is not None:
        data = _load_structured(manifest)
        if isinstance(data, dict) and isinstance(data.get("dependencies"), dict | list):
            data = data["dependencies"]
        if isinstance(data, dict):
            found.update({str(name): _scalar_text(version) for name, version in data.items()})
        elif isinstance(data, list):
            for item in data:
                if isinstance(item, dict):
                    name = item.get("name", item.get("package"))
                    if name is None or "version" not in item:
                        raise ValueError(f"{manifest}: entry {item!r} needs name and version")
                    found[str(name)] = _scalar_text(item["version"])
                elif isinstance(item, str) and "==" in item:
                    name, _, version = item.partition("==")
                    found[name.strip()] = version.strip()
                else:
                    raise ValueError(f"{manifest}: cannot read dependency entry {item!r}")
        elif data is not None:
            raise ValueError(f"{manifest}: expected a mapping or a list of dependencies")
    for package in packages:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not-installed"
    return found


def load_config_info(path: Path | None) -> dict[str, str]:
    """A model config file flattened to dotted keys with text values (``model_config_info{key,value}``)."""
    if path is None:
        return {}
    data = _load_structured(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of config keys")
    flat: dict[str, str] = {}
    _flatten(data, "", flat)
    return flat


def _flatten(data: Mapping[Any, Any], prefix: str, out: dict[str, str]) -> None:
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            _flatten(value, name, out)
        else:
            out[name] = _scalar_text(value)[:_CONFIG_VALUE_LIMIT]


def _scalar_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)


# ------------------------------------------------------------------------------------------- the replay


@dataclass(frozen=True, kw_only=True)
class Report:
    results: tuple[CheckResult, ...]
    score: float
    latency_p50_ms: float
    baseline_ms: float
    latency_impact_ms: float
    finished_at: float
    duration: float

    def failing(self) -> list[CheckResult]:
        return [result for result in self.results if not result.passed]

    def as_dict(self) -> dict[str, Any]:
        return {
            "score": _json_number(self.score),
            "checks": len(self.results),
            "passed": sum(1 for result in self.results if result.passed),
            "failing": [{"name": r.name, "reasons": list(r.reasons)} for r in self.failing()],
            "results": [result.as_dict() for result in self.results],
            "latencyP50Ms": _json_number(self.latency_p50_ms),
            "baselineMs": _json_number(self.baseline_ms),
            "latencyImpactMs": _json_number(self.latency_impact_ms),
            "finishedAt": self.finished_at,
            "durationSeconds": round(self.duration, 4),
        }


class ContractRunner:
    """Replays a contract against the target once per :meth:`run_once`."""

    def __init__(self, settings: ProbeSettings, contract: Contract) -> None:
        self._settings = settings
        self._contract = contract
        self._target = settings.target.rstrip("/")

    def run_once(self) -> Report:
        started = time.perf_counter()
        results = [self._run_check(check) for check in self._contract.checks]
        latencies = [result.elapsed * 1000.0 for result in results if result.elapsed is not None]
        p50 = statistics.median(latencies) if latencies else math.nan
        baseline = self._baseline()
        return Report(
            results=tuple(results),
            score=score(results),
            latency_p50_ms=p50,
            baseline_ms=baseline,
            latency_impact_ms=p50 - baseline,  # NaN when either side is NaN
            finished_at=time.time(),
            duration=time.perf_counter() - started,
        )

    def _run_check(self, check: Check) -> CheckResult:
        timeout = self._contract.timeout_for(check, self._settings.timeout)
        body = check.body_bytes()
        headers = {"Accept": "application/json", **check.headers}
        if body is not None:
            headers.setdefault("Content-Type", "application/json")
        answer = http_call(
            check.method, self._target + check.path, body=body, headers=headers, timeout=timeout
        )
        return evaluate(check, answer.status, answer.body, answer.elapsed, error=answer.error)

    def _baseline(self) -> float:
        settings = self._settings
        if settings.baseline_query is not None and settings.prometheus_url is not None:
            value = query_prometheus(
                settings.prometheus_url, settings.baseline_query, timeout=self._contract.timeout_seconds
            )
            if not math.isnan(value):
                return value
        return settings.baseline_ms if settings.baseline_ms is not None else math.nan


# ---------------------------------------------------------------------------------------------- shadow


class FractionSampler:
    """Picks exactly ``floor(n * fraction)`` of the first n requests, evenly spread; thread-safe."""

    def __init__(self, fraction: float) -> None:
        if not 0.0 <= fraction <= 1.0:
            raise ValueError("fraction must be within [0, 1]")
        self._fraction = fraction
        self._seen = 0
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            self._seen += 1
            return math.floor(self._seen * self._fraction) > math.floor((self._seen - 1) * self._fraction)


class ShadowTee:
    """Copies sampled requests to the stable track and feeds both answers to the comparator.

    Runs on the proxy's event loop; the counters are also read from other threads (under a lock).
    """

    def __init__(self, settings: ProbeSettings) -> None:
        assert settings.shadow_target is not None
        self._settings = settings
        self._target = settings.shadow_target.rstrip("/")
        self._sampler = FractionSampler(settings.shadow_fraction)
        self._lock = threading.Lock()
        self._window = ShadowWindow(settings.shadow_window)
        self._errors: dict[str, int] = {"stable": 0, "transport": 0}
        self._dropped = 0
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def wants(self, path: str) -> bool:
        prefixes = self._settings.shadow_paths
        if prefixes and not any(path.startswith(prefix) for prefix in prefixes):
            return False
        return self._sampler.take()

    def submit(
        self,
        session: aiohttp.ClientSession,
        method: str,
        path: str,
        headers: Sequence[tuple[str, str]],
        body: bytes | None,
        canary_status: int,
        canary_body: bytes,
    ) -> None:
        """Send the copy as a task on the running loop; drop it when too many copies are in flight."""
        if self._in_flight >= self._settings.shadow_concurrency:
            with self._lock:
                self._dropped += 1
            return
        self._in_flight += 1
        task = asyncio.get_running_loop().create_task(
            self._shadow(session, method, path, headers, body, canary_status, canary_body)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _shadow(
        self,
        session: aiohttp.ClientSession,
        method: str,
        path: str,
        headers: Sequence[tuple[str, str]],
        body: bytes | None,
        canary_status: int,
        canary_body: bytes,
    ) -> None:
        try:
            copy_headers = [*headers, (SHADOW_HEADER, "true")]
            try:
                async with session.request(
                    method,
                    self._target + path,
                    data=body,
                    headers=copy_headers,
                    timeout=aiohttp.ClientTimeout(total=self._settings.proxy_timeout),
                ) as answer:
                    stable_status = answer.status
                    kept = bytearray()
                    async for chunk in answer.content.iter_any():  # the whole answer (a stream too)
                        kept.extend(chunk[: _MAX_BODY - len(kept)])
                    stable_body = bytes(kept)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                with self._lock:
                    self._errors["transport"] += 1
                log.debug("shadow request failed: %s", _describe_async_error(exc, self._settings.proxy_timeout))
                return
            outcome = compare_responses(
                stable_status, stable_body, canary_status, canary_body, self._settings.shadow_spec
            )
            self.record(outcome)
        finally:
            self._in_flight -= 1

    def record(self, outcome: Comparison | Unusable) -> None:
        with self._lock:
            if isinstance(outcome, Unusable):
                self._errors[outcome.side] = self._errors.get(outcome.side, 0) + 1
                log.debug("shadow pair dropped: %s", outcome.reason)
            else:
                self._window.add(outcome)

    def snapshot(self) -> tuple[ShadowStats, dict[str, int], int]:
        with self._lock:
            return self._window.stats(), dict(self._errors), self._dropped

    @property
    def in_flight(self) -> int:
        """Copies sent to stable and not yet compared."""
        return self._in_flight

    async def drain(self) -> None:
        """Wait for the copies in flight (on shutdown)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=self._settings.proxy_timeout)


# ---------------------------------------------------------------------------------------------- metrics


class _ProbeCollector(Collector):
    def __init__(self, app: ProbeApp) -> None:
        self._app = app

    def collect(self) -> Iterable[Metric]:
        app = self._app
        names = app.settings.identity.label_names()
        values = app.settings.identity.label_values()

        def gauge(name: str, doc: str, value: float, extra: Mapping[str, str] | None = None) -> Metric:
            extra = extra or {}
            family = GaugeMetricFamily(name, doc, labels=[*names, *extra])
            family.add_metric([*values, *extra.values()], value)
            return family

        def counter(name: str, doc: str, value: float) -> Metric:
            family = CounterMetricFamily(name, doc, labels=names)
            family.add_metric(values, value)
            return family

        report, runs = app.latest()
        if app.settings.contract is not None:
            nan = math.nan
            yield gauge(
                "model_api_compatibility_score",
                "Share of golden contract checks passed in the last replay (0..1); NaN: no verdict yet.",
                report.score if report else nan,
            )
            yield gauge(
                "model_compat_latency_impact_ms",
                "p50 latency of the golden set minus the baseline, in ms; NaN: no baseline.",
                report.latency_impact_ms if report else nan,
            )
            yield gauge(
                "model_compat_latency_p50_ms",
                "p50 latency of the golden set in the last replay, in ms (a stable track's baseline).",
                report.latency_p50_ms if report else nan,
            )
            yield gauge(
                "model_compat_latency_baseline_ms",
                "Baseline latency used for model_compat_latency_impact_ms, in ms.",
                report.baseline_ms if report else nan,
            )
            checks = GaugeMetricFamily(
                "model_compat_check_passed",
                "1 when the named golden check passed in the last replay, else 0.",
                labels=[*names, "check"],
            )
            for result in report.results if report else ():
                checks.add_metric([*values, result.name], 1.0 if result.passed else 0.0)
            yield checks
            yield counter("model_compat_runs", "Contract replays finished.", runs)
            if report is not None:
                yield gauge(
                    "model_compat_last_run_timestamp_seconds",
                    "Unix time the last replay finished.",
                    report.finished_at,
                )

        deps = GaugeMetricFamily(
            "model_dependency_info",
            "Packages and versions the revision runs with (value is always 1).",
            labels=[*names, "package", "version"],
        )
        for package, version in sorted(app.settings.dependencies.items()):
            deps.add_metric([*values, package, version], 1.0)
        yield deps

        config = GaugeMetricFamily(
            "model_config_info",
            "Model configuration keys and values the revision runs with (value is always 1).",
            labels=[*names, "key", "value"],
        )
        for key, value in sorted(app.settings.config.items()):
            config.add_metric([*values, key, value], 1.0)
        yield config

        if app.tee is not None:
            stats, errors, dropped = app.tee.snapshot()
            yield gauge(
                "model_shadow_prediction_diff",
                "Max absolute score difference between canary and stable over the shadow window.",
                stats.max_diff,
            )
            yield gauge(
                "model_shadow_mismatch_rate",
                "Share of shadow pairs in the window whose top-1 labels differ; NaN: no pairs.",
                stats.mismatch_rate,
            )
            yield gauge("model_shadow_window_samples", "Shadow pairs in the window.", stats.samples)
            yield counter("model_shadow_samples", "Shadow pairs compared.", stats.total)
            errs = CounterMetricFamily(
                "model_shadow_errors",
                "Shadow copies that could not be compared (side: stable answer unusable | transport).",
                labels=[*names, "side"],
            )
            for side, count in sorted(errors.items()):
                errs.add_metric([*values, side], count)
            yield errs
            yield counter("model_shadow_dropped", "Shadow copies skipped: too many in flight.", dropped)
            proxied = CounterMetricFamily(
                "model_proxy_requests", "Requests proxied to the target, by status.", labels=[*names, "code"]
            )
            for code, count in sorted(app.proxied().items()):
                proxied.add_metric([*values, code], count)
            yield proxied


# --------------------------------------------------------------------------------------------- the app


class ProbeApp:
    """The sidecar: replay thread + HTTP server (+ tee). ``start`` binds, ``stop`` shuts everything down."""

    def __init__(self, settings: ProbeSettings) -> None:
        self.settings = settings
        self.tee = ShadowTee(settings) if settings.shadow_target is not None else None
        self.runner = ContractRunner(settings, settings.contract) if settings.contract is not None else None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_ProbeCollector(self))
        self._lock = threading.Lock()
        self._report: Report | None = None
        self._runs = 0
        self._proxied: dict[str, int] = {}
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._server: _AsyncServer | None = None
        self._target_answered = False
        self._waiting_logged = False
        if self.runner is None:
            self._ready.set()

    # -- state

    def latest(self) -> tuple[Report | None, int]:
        with self._lock:
            return self._report, self._runs

    def proxied(self) -> dict[str, int]:
        with self._lock:
            return dict(self._proxied)

    def count_proxied(self, code: str) -> None:
        with self._lock:
            self._proxied[code] = self._proxied.get(code, 0) + 1

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def run_once(self, *, wait_for_target: bool = False) -> Report | None:
        """Replay the contract once and publish the report.

        With ``wait_for_target`` (the replay loop), a replay in which every request was refused before the
        target ever answered is not published: a model server still starting (loading weights) is no
        verdict, not an incompatible one, so the score stays NaN and /readyz 503. Once the target answered
        a request, refusals are failures like any other (a server that died is broken).
        """
        if self.runner is None:
            return None
        report = self.runner.run_once()
        if wait_for_target and not self._target_answered:
            if report.results and all(_refused(result) for result in report.results):
                if not self._waiting_logged:
                    log.info("target %s refuses connections: no verdict until it answers", self.settings.target)
                    self._waiting_logged = True
                return None
            self._target_answered = True
        with self._lock:
            previous = self._report
            self._report = report
            self._runs += 1
        self._ready.set()
        changed = previous is None or _failures(previous) != _failures(report)
        log.log(
            logging.INFO if changed else logging.DEBUG,
            "compatibility score %.3f%s",
            report.score,
            "".join(f"; {name}: {', '.join(reasons)}" for name, reasons in _failures(report)),
        )
        return report

    def compatibility(self) -> dict[str, Any]:
        report, runs = self.latest()
        identity = self.settings.identity
        doc: dict[str, Any] = {
            "rollout": identity.rollout,
            "track": identity.track,
            "revision": identity.revision,
            "target": self.settings.target,
            "contract": self.runner is not None,
            "runs": runs,
        }
        if report is None:
            doc.update({"score": None, "checks": 0, "passed": 0, "failing": [], "results": []})
        else:
            doc.update(report.as_dict())
        if self.tee is not None:
            stats, errors, dropped = self.tee.snapshot()
            doc["shadow"] = {
                "samples": stats.samples,
                "mismatches": stats.mismatches,
                "mismatchRate": _json_number(stats.mismatch_rate),
                "maxDiff": _json_number(stats.max_diff),
                "total": stats.total,
                "errors": errors,
                "dropped": dropped,
            }
        return doc

    def metrics(self) -> bytes:
        return generate_latest(self.registry)

    # -- lifecycle

    def start(self) -> tuple[str, int]:
        """Bind the listener and start serving and replaying; returns the bound (host, port)."""
        server = _AsyncServer(self)
        bound = server.start()
        self._server = server
        if self.runner is not None:
            self._spawn("compat-replay", self._replay_loop)
        return bound

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.stop(timeout)
        for thread in self._threads:
            thread.join(timeout)

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _replay_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once(wait_for_target=True)
            except Exception:  # the loop must survive anything one replay does
                log.exception("contract replay failed")
            self._stop.wait(self.settings.interval)


# ------------------------------------------------------------------------------------------ HTTP server


class _AsyncServer:
    """The sidecar's listener: aiohttp on an event loop in its own thread.

    Serves the sidecar's own endpoints and, in tee mode, proxies everything else to ``--target`` over a
    pooled keep-alive client session: the answer is relayed chunk by chunk as it arrives (server-sent
    events reach the client as the model server sends them, nothing is buffered before the client sees
    it), while a copy of up to 64 MiB is kept for the shadow comparison once the answer is complete.
    """

    def __init__(self, app: ProbeApp) -> None:
        self._app = app
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="compat-http", daemon=True)
        self._started = threading.Event()
        self._bound: tuple[str, int] | None = None
        self._error: BaseException | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._stopped: asyncio.Event | None = None

    def start(self) -> tuple[str, int]:
        self._thread.start()
        if not self._started.wait(30.0):
            raise OSError("the HTTP server did not start within 30 s")
        if self._error is not None:
            raise self._error
        assert self._bound is not None
        return self._bound

    def stop(self, timeout: float) -> None:
        if self._stopped is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join(timeout)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        self._stopped = asyncio.Event()
        settings = self._app.settings
        try:
            web_app = web.Application(client_max_size=_MAX_BODY)
            web_app.router.add_route("*", "/{tail:.*}", self._dispatch)
            self._runner = web.AppRunner(web_app, access_log=None, handle_signals=False)
            await self._runner.setup()
            site = web.TCPSite(self._runner, settings.listen_host, settings.listen_port, reuse_address=True)
            await site.start()
            address = self._runner.addresses[0]
            self._bound = (str(address[0]), int(address[1]))
            if self._app.tee is not None:
                self._session = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=_POOL_SIZE, keepalive_timeout=30.0),
                    auto_decompress=False,
                    trust_env=False,  # no environment proxies: the probe talks to its own pod and the stable Service
                    skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"),
                )
        except BaseException as exc:  # report a bind failure to start()
            self._error = exc
            self._started.set()
            if self._runner is not None:
                await self._runner.cleanup()
            return
        self._started.set()
        await self._stopped.wait()
        if self._app.tee is not None:
            await self._app.tee.drain()
        await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if request.method == "GET" and path in RESERVED_PATHS:
            return self._serve_own(path)
        if self._app.tee is not None:
            return await self._proxy(request)
        return _json_response(404, {"error": "not found"})

    def _serve_own(self, path: str) -> web.Response:
        app = self._app
        if path == "/metrics":
            response = web.Response(status=200, body=app.metrics())
            response.headers["Content-Type"] = CONTENT_TYPE_LATEST
            return response
        if path == "/probe/compatibility":
            return _json_response(200, app.compatibility())
        if path == "/healthz":
            return _json_response(200, {"status": "ok"})
        if app.ready:
            return _json_response(200, {"status": "ready"})
        return _json_response(503, {"status": "waiting for the first contract replay"})

    async def _proxy(self, request: web.Request) -> web.StreamResponse:
        app = self._app
        tee = app.tee
        session = self._session
        assert tee is not None and session is not None
        try:
            body = await request.read() if request.body_exists else None
        except web.HTTPRequestEntityTooLarge:
            return _json_response(413, {"error": "request body too large"})
        headers = [(name, value) for name, value in request.headers.items() if name.lower() not in _HOP_BY_HOP]
        path_qs = request.rel_url.raw_path_qs
        timeout = aiohttp.ClientTimeout(total=app.settings.proxy_timeout)
        response: web.StreamResponse | None = None
        kept = bytearray()
        try:
            async with session.request(
                request.method,
                app.settings.target.rstrip("/") + path_qs,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=timeout,
            ) as upstream:
                response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
                for name, value in upstream.headers.items():
                    if name.lower() not in _NOT_RELAYED:
                        response.headers.add(name, value)
                if upstream.content_length is not None:
                    response.content_length = upstream.content_length
                status = upstream.status
                try:
                    await response.prepare(request)
                    if request.method != "HEAD":
                        async for chunk in upstream.content.iter_any():
                            await response.write(chunk)
                            if len(kept) < _MAX_BODY:
                                kept.extend(chunk[: _MAX_BODY - len(kept)])
                    await response.write_eof()
                except ConnectionResetError:
                    # the client went away mid-answer (a cancelled stream): stop reading the target (leaving
                    # the block closes that connection), count the answer, compare nothing
                    app.count_proxied(str(status))
                    log.debug("client closed the connection mid-answer")
                    return response
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            if response is not None and response.prepared:
                # headers (and maybe part of a stream) are out: all that is left is to end the connection
                app.count_proxied("error")
                log.debug("target failed mid-answer: %s", exc)
                raise
            app.count_proxied("error")
            return _json_response(502, {"error": f"target: {_describe_async_error(exc, app.settings.proxy_timeout)}"})
        app.count_proxied(str(status))
        if tee.wants(path_qs.split("?", 1)[0]):
            tee.submit(session, request.method, path_qs, headers, body, status, bytes(kept))
        return response


def _json_response(status: int, doc: Mapping[str, Any]) -> web.Response:
    payload = json.dumps(doc, allow_nan=False, sort_keys=True).encode() + b"\n"
    return web.Response(status=status, body=payload, content_type="application/json")


def _describe_async_error(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return f"timeout after {timeout:g}s"
    if isinstance(exc, aiohttp.ClientConnectorError) and isinstance(exc.os_error, ConnectionRefusedError):
        return "connection refused"
    return f"connection error: {exc}"



def _refused(result: CheckResult) -> bool:
    return result.status_code is None and result.reasons == ["request failed: connection refused"]


def _failures(report: Report) -> list[tuple[str, tuple[str, ...]]]:
    return [(result.name, tuple(result.reasons)) for result in report.failing()]


def _json_number(value: float) -> float | None:
    return None if math.isnan(value) or math.isinf(value) else value
