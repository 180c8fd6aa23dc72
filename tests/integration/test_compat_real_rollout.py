"""A rollout decided by the compat-probe's metrics from a real model server (MLServer, Open Inference
Protocol): the breaking revision is rolled back naming the failing check, the drifting one is promoted.

As in test_compat_rollout.py the kwok pods run nothing, so the model servers and the canary's sidecar run
here as real processes standing in for the pods' containers: MLServer serving iris v1 as the stable track,
MLServer serving the canary's revision, and ``compat-probe`` (the real CLI) in tee mode in front of the
canary with the v2 preset contract, copying live traffic to stable; Prometheus scrapes the probe and the
operator's analysis reads it.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devenv.localenv.procs import ManagedProcess, free_port, port_open, wait_until
from devenv.localenv.prometheus import Prometheus

from .kube import Kubectl
from .manifests import ingress, rollout, service
from .modelservers import Served, await_ready, start_mlserver, train

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = ROOT / "examples" / "compat-contract-iris-v2.yaml"
SELECTOR = 'rollout="{{rollout}}",revision="{{revision}}",track="canary"'
IRIS = [[5.1, 3.5, 1.4, 0.2], [7.0, 3.2, 4.7, 1.4], [6.3, 3.3, 6.0, 2.5], [4.9, 3.0, 1.4, 0.2],
        [6.4, 3.2, 4.5, 1.5], [5.8, 2.7, 5.1, 1.9]]
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Served]]:
    base = tmp_path_factory.mktemp("real-rollout")
    models = base / "models"
    train(models)
    started = {rev: start_mlserver(models, rev, base) for rev in ("v1", "v2", "v3-labels")}
    try:
        await_ready(*started.values())
        yield started
    finally:
        for server in started.values():
            server.process.stop()


def spec(prometheus: Prometheus, name: str) -> dict[str, Any]:
    return {
        "traffic": {"service": {"name": name}, "ingress": {"name": name}},
        "compatProbe": {"contract": {"name": "contract"}, "interval": "1s",
                        "metrics": {"maxShadowMismatchRate": 0.05}},      # the seed's top-1 tolerance
        "analysis": {
            "interval": "1s", "prometheus": {"address": prometheus.url},
            "inconclusive": {"limit": 60, "action": "pause"},
            "metrics": [
                # One metric per golden check the team cares about, so a rollback names the check.
                {"name": "check-infer-two-flowers", "onFailure": "rollback", "min": 1,
                 "query": f'min(model_compat_check_passed{{{SELECTOR},check="infer-two-flowers"}})'},
                # The seed's probability tolerance, on live traffic compared with stable.
                {"name": "shadow-prediction-diff", "onFailure": "rollback", "max": 0.01,
                 "query": f"max(model_shadow_prediction_diff{{{SELECTOR}}})"},
            ],
        },
    }


class Traffic:
    """Live requests through the canary's tee proxy, until stopped (at most ``limit``)."""

    def __init__(self, port: int, limit: int = 3000) -> None:
        self.url = f"http://127.0.0.1:{port}/v2/models/iris/infer"
        self.limit = limit
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)

    def _run(self) -> None:
        while not self._stop.is_set() and self.sent < self.limit:
            rows = [IRIS[self.sent % len(IRIS)], IRIS[(self.sent + 1) % len(IRIS)]]
            body = {"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [2, 4],
                                "data": [v for row in rows for v in row]}],
                    "outputs": [{"name": "predict"}, {"name": "predict_proba"}]}
            request = urllib.request.Request(self.url, data=json.dumps(body).encode(), method="POST",
                                             headers={"Content-Type": "application/json"})
            try:
                with _OPENER.open(request, timeout=10) as answer:
                    answer.read()
            except (urllib.error.URLError, OSError):
                pass
            self.sent += 1
            self._stop.wait(0.05)  # pacing: about 20 requests per second


def start_probe(tmp: Path, name: str, revision: str, canary: Served, stable: Served) -> tuple[ManagedProcess, int]:
    port = free_port()
    argv = [sys.executable, "-m", "compat_probe", "--target", canary.url, "--contract", str(CONTRACT),
            "--interval", "1", "--listen", f"127.0.0.1:{port}", "--rollout", name, "--track", "canary",
            "--revision", revision, "--shadow-target", stable.url]
    proc = ManagedProcess(name="compat-probe-canary", argv=argv, log=tmp / "compat-probe.log",
                          env={**os.environ, "PYTHONPATH": str(ROOT / "operator")}).start()
    wait_until(lambda: port_open(port), 20, 0.05, what="compat-probe listening")
    return proc, port


def run_canary(k: Kubectl, prometheus: Prometheus, tmp: Path, name: str, canary: Served, stable: Served,
               done: set[str]) -> dict[str, Any]:
    k.run("create", "configmap", "contract", f"--from-file=contract.yaml={CONTRACT}")
    steps = [{"setWeight": 20}, {"analysis": {"passes": 3}}, {"setWeight": 100}]
    k.apply(service(name) + "\n---\n" + ingress(name, f"{name}-stable"))
    k.apply(rollout(name, steps=steps, **spec(prometheus, name)))
    k.wait_phase(name, "Succeeded", 90)
    k.apply(rollout(name, image="model:2", steps=steps, **spec(prometheus, name)))
    revision = k.wait(name=name, predicate=lambda s: s.get("canaryRevision") is not None, timeout=60)["canaryRevision"]
    probe, port = start_probe(tmp, name, revision, canary, stable)
    try:
        prometheus.set_targets([(f"127.0.0.1:{port}", {})])
        prometheus.wait_target_up(f"127.0.0.1:{port}", 30)
        with Traffic(port):
            status = k.wait(name=name, predicate=lambda s: s.get("phase") in done, timeout=150)
    finally:
        probe.stop()
    status["revision"] = revision
    return status


def test_breaking_revision_is_rolled_back_naming_the_failing_check(
        k: Kubectl, operator: ManagedProcess, prometheus: Prometheus, servers: dict[str, Served],
        tmp_path: Path) -> None:
    status = run_canary(k, prometheus, tmp_path, "iris-break", servers["v3-labels"], servers["v1"],
                        {"RolledBack", "Succeeded"})
    assert status["phase"] == "RolledBack", status
    assert "check-infer-two-flowers" in status["message"], status["message"]
    assert status.get("stableRevision") != status["revision"]
    verdicts = {m["name"]: m["verdict"] for m in status["analysis"]}
    assert verdicts["check-infer-two-flowers"] == "Fail"


def test_drifting_revision_within_tolerance_is_promoted(
        k: Kubectl, operator: ManagedProcess, prometheus: Prometheus, servers: dict[str, Served],
        tmp_path: Path) -> None:
    status = run_canary(k, prometheus, tmp_path, "iris-drift", servers["v2"], servers["v1"],
                        {"RolledBack", "Succeeded"})
    assert status["phase"] == "Succeeded", status
    assert status["stableRevision"] == status["revision"]
    values = {m["name"]: m.get("value") for m in status.get("analysis") or []}
    if values.get("shadow-prediction-diff") is not None:  # the last evaluation before promotion, if kept
        assert 0 < float(values["shadow-prediction-diff"]) < 0.01
