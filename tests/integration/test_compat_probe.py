"""The probe sidecar and the reference server as real processes on 127.0.0.1.

No control plane and no Prometheus needed: the tests scrape /metrics themselves.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = ROOT / "examples" / "compat-contract.yaml"
DEADLINE = 20.0
T = TypeVar("T")

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# ----------------------------------------------------------------------------------- small local helpers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    probe: Callable[[], T | None],
    *,
    timeout: float = DEADLINE,
    what: str = "condition",
    interval: float = 0.05,
) -> T:
    """Poll ``probe`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


def http(method: str, url: str, body: Any = None, timeout: float = 5.0) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def try_get(url: str) -> tuple[int, bytes] | None:
    try:
        return http("GET", url, timeout=2.0)
    except (urllib.error.URLError, OSError):
        return None


def samples(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Metric sample name -> [(labels, value)] from a /metrics endpoint; empty when it does not answer."""
    answer = try_get(url + "/metrics")
    if answer is None or answer[0] != 200:
        return {}
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(answer[1].decode()):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return found


def value(url: str, name: str) -> float | None:
    series = samples(url).get(name)
    return series[0][1] if series else None


class Proc:
    def __init__(self, name: str, args: list[str], tmp: Path) -> None:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT / "operator"), os.environ.get("PYTHONPATH", "")]),
        }
        self.name = name
        self.stdout = tmp / f"{name}.out"
        self.stderr = tmp / f"{name}.err"
        with self.stdout.open("wb") as out, self.stderr.open("wb") as err:
            self.popen = subprocess.Popen([sys.executable, *args], stdout=out, stderr=err, env=env, cwd=ROOT)

    def logs(self) -> str:
        out, err = self.stdout.read_text(), self.stderr.read_text()
        return f"--- {self.name} stdout\n{out}\n--- {self.name} stderr\n{err}"

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    started: list[Proc] = []

    def start(name: str, *args: str) -> Proc:
        proc = Proc(name, list(args), tmp_path)
        started.append(proc)
        return proc

    yield start
    for proc in reversed(started):
        proc.stop()


def start_refserver(start: Callable[..., Proc], version: str, *extra: str, track: str = "canary") -> str:
    port = free_port()
    proc = start(
        f"refserver-{version}-{port}",
        "-m",
        "compat_probe.refserver",
        "--port",
        str(port),
        "--version",
        version,
        "--rollout",
        "chat",
        "--track",
        track,
        "--revision",
        version,
        *extra,
    )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert proc.popen.poll() is None, proc.logs()
        answer = try_get(url + "/healthz")
        return answer is not None and answer[0] == 200

    wait_until(healthy, what=f"refserver {version} on {url}")
    return url


def start_probe(start: Callable[..., Proc], target: str, *extra: str) -> tuple[str, Proc]:
    port = free_port()
    proc = start(
        f"probe-{port}",
        "-m",
        "compat_probe",
        "--target",
        target,
        "--listen",
        f"127.0.0.1:{port}",
        "--interval",
        "0.2",
        "--rollout",
        "chat",
        "--track",
        "canary",
        "--revision",
        "7f2a1b",
        *extra,
    )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert proc.popen.poll() is None, proc.logs()
        answer = try_get(url + "/healthz")
        return answer is not None and answer[0] == 200

    wait_until(healthy, what=f"probe on {url}")
    return url, proc


# -------------------------------------------------------------------------------------------------- tests


def test_v1_scores_one_with_labels_dependencies_and_config(procs: Callable[..., Proc], tmp_path: Path) -> None:
    target = start_refserver(procs, "v1")
    config = tmp_path / "model.yaml"
    config.write_text("max_seq_len: 2048\nuse_fp16: true\ntokenizer: {name: bpe}\n")
    deps = tmp_path / "deps.json"
    deps.write_text(json.dumps({"torch": "2.5.1", "transformers": "4.46.0"}))
    probe, _ = start_probe(
        procs,
        target,
        "--contract",
        str(CONTRACT),
        "--baseline-ms",
        "0",
        "--dependency",
        "PyYAML",
        "--dependencies-file",
        str(deps),
        "--config-file",
        str(config),
    )

    wait_until(lambda: value(probe, "model_api_compatibility_score") == 1.0, what="score 1.0")
    found = samples(probe)
    identity = {"rollout": "chat", "track": "canary", "revision": "7f2a1b"}
    for name, series in found.items():
        for labels, _ in series:
            assert {key: labels.get(key) for key in identity} == identity, name
    impact = found["model_compat_latency_impact_ms"][0][1]
    assert math.isfinite(impact) and impact >= 0.0
    deps_seen = {labels["package"]: labels["version"] for labels, _ in found["model_dependency_info"]}
    assert deps_seen["torch"] == "2.5.1" and deps_seen["transformers"] == "4.46.0"
    assert deps_seen["PyYAML"][0].isdigit()
    config_seen = {labels["key"]: labels["value"] for labels, _ in found["model_config_info"]}
    assert config_seen == {"max_seq_len": "2048", "use_fp16": "true", "tokenizer.name": "bpe"}

    assert try_get(probe + "/readyz") == (200, b'{"status": "ready"}\n')
    status, body = http("GET", probe + "/probe/compatibility")
    report = json.loads(body)
    assert status == 200
    assert report["score"] == 1.0 and report["failing"] == [] and report["checks"] == 4


def test_dropped_field_lowers_the_score_and_is_named(procs: Callable[..., Proc]) -> None:
    target = start_refserver(procs, "v2-drop-field")
    probe, _ = start_probe(procs, target, "--contract", str(CONTRACT))

    score = wait_until(
        lambda: (v := value(probe, "model_api_compatibility_score")) is not None and not math.isnan(v) and v,
        what="a score",
    )
    assert 0.0 <= score < 1.0
    report = json.loads(http("GET", probe + "/probe/compatibility")[1])
    reasons = [reason for check in report["failing"] for reason in check["reasons"]]
    assert "data.tokens: missing" in reasons
    assert {check["name"] for check in report["failing"]} >= {"predict-short", "predict-long"}
    # no baseline given: the latency impact is NaN, not a number that could pass a threshold
    assert math.isnan(value(probe, "model_compat_latency_impact_ms") or 0.0)
    checks = {labels["check"]: v for labels, v in samples(probe)["model_compat_check_passed"]}
    assert checks["predict-short"] == 0.0 and checks["bad-request-keeps-envelope"] == 1.0


def test_timeouts_fail_every_check(procs: Callable[..., Proc]) -> None:
    target = start_refserver(procs, "v2-slow", "--latency-ms", "500")  # 750 ms per answer
    probe, _ = start_probe(procs, target, "--contract", str(CONTRACT), "--timeout", "0.2")

    wait_until(lambda: value(probe, "model_api_compatibility_score") == 0.0, what="score 0")
    report = json.loads(http("GET", probe + "/probe/compatibility")[1])
    assert all(check["reasons"] == ["request failed: timeout after 0.2s"] for check in report["failing"])


def test_tee_mode_compares_canary_with_stable(procs: Callable[..., Proc]) -> None:
    canary = start_refserver(procs, "v2-relabel")
    stable = start_refserver(procs, "v1", track="stable")
    probe, _ = start_probe(
        procs,
        canary,
        "--contract",
        str(CONTRACT),
        "--shadow-target",
        stable,
        "--shadow-fraction",
        "1.0",
        "--shadow-path",
        "/v1/predict",
    )

    texts = [f"request number {i} about the product" for i in range(12)]
    for text in texts:
        status, body = http("POST", probe + "/v1/predict", {"text": text})
        assert status == 200
        assert json.loads(body)["data"]["model_version"] == "v2-relabel"  # the client gets the canary's answer

    wait_until(
        lambda: (value(probe, "model_shadow_samples_total") or 0) >= len(texts),
        what="all shadow pairs compared",
    )
    found = samples(probe)
    assert found["model_shadow_mismatch_rate"][0][1] > 0.0
    assert 0.0 < found["model_shadow_prediction_diff"][0][1] <= 1.0
    proxied = {labels["code"]: v for labels, v in found["model_proxy_requests_total"]}
    assert proxied == {"200": len(texts)}
    # the stable track received the copies
    stable_requests = samples(stable)["model_requests_total"]
    assert sum(v for _, v in stable_requests) >= len(texts)

    # reserved paths are the probe's, everything else is proxied
    assert http("GET", probe + "/healthz")[1] == b'{"status": "ok"}\n'
    status, body = http("POST", probe + "/v1/predict", {"wrong": 1})
    assert status == 400 and json.loads(body)["code"] == 400


def test_baseline_from_prometheus(procs: Callable[..., Proc]) -> None:
    queries: list[str] = []

    class FakePrometheus(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query).get("query", [""])[0]
            queries.append(query)
            doc = {
                "status": "success",
                "data": {"resultType": "vector", "result": [{"metric": {}, "value": [0, "0.25"]}]},
            }
            payload = json.dumps(doc).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), FakePrometheus)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        target = start_refserver(procs, "v1")
        query = 'max(model_compat_latency_p50_ms{rollout="chat",track="stable"})'
        probe, _ = start_probe(
            procs,
            target,
            "--contract",
            str(CONTRACT),
            "--prometheus-url",
            f"http://127.0.0.1:{server.server_address[1]}",
            "--baseline-query",
            query,
        )
        wait_until(lambda: value(probe, "model_compat_latency_baseline_ms") == 0.25, what="baseline 0.25")
        found = samples(probe)
        p50 = found["model_compat_latency_p50_ms"][0][1]
        impact = found["model_compat_latency_impact_ms"][0][1]
        assert impact == pytest.approx(p50 - 0.25)
        assert query in queries
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_refserver_admin_score(procs: Callable[..., Proc]) -> None:
    url = start_refserver(procs, "v1")
    assert value(url, "model_api_compatibility_score") == 1.0
    assert http("POST", url + "/admin/score", {"value": 0.5}) == (200, b'{"value":0.5}')
    assert value(url, "model_api_compatibility_score") == 0.5
    assert http("POST", url + "/admin/score", {"value": "high"})[0] == 400
    assert http("POST", url + "/admin/metric", {"name": "model_shadow_mismatch_rate", "value": 0.2})[0] == 200
    assert value(url, "model_shadow_mismatch_rate") == 0.2
    labels = samples(url)["model_api_compatibility_score"][0][0]
    assert labels == {"rollout": "chat", "track": "canary", "revision": "v1"}


def test_refserver_refuses_a_renamed_config_key(procs: Callable[..., Proc], tmp_path: Path) -> None:
    config = tmp_path / "old.yaml"
    config.write_text("max_seq_len: 4096\n")
    proc = procs(
        "refserver-bad-config",
        "-m",
        "compat_probe.refserver",
        "--port",
        str(free_port()),
        "--version",
        "v2-compatible",
        "--config",
        str(config),
    )
    assert proc.popen.wait(timeout=DEADLINE) == 2
    err = proc.stderr.read_text()
    assert "'max_seq_len' was renamed to 'max_length'" in err, proc.logs()
