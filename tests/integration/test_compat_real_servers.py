"""The compat-probe against real model servers nobody in this project wrote: MLServer 1.7 (Open Inference
Protocol, scikit-learn runtime) and KServe 0.21's model server (its v1 protocol and the Open Inference
Protocol), each serving three revisions of an iris classifier trained here (hack/modelservers/):

- ``v1``: the compatible baseline;
- ``v2``: retrained with other regularisation: probabilities drift (< 0.01), contract intact;
- ``v3``: a contract break: on MLServer ``v3-labels`` (``predict`` answers class names: BYTES, not
  INT64), on KServe ``v3-binary`` (two classes: ``predict_proba`` is [n, 2], not [n, 3]).

The one-shot probe runs as the real CLI (``compat-probe --once``); tee mode runs in this process in front
of the real servers, fed with iris rows as live traffic. Servers are shared per module (about 5 s each to
start, started in parallel).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from compat_probe.server import ProbeApp, ProbeSettings
from compat_probe.shadow import ShadowSpec

from .modelservers import ROOT, Served, await_ready, start_kserve, start_mlserver, train

V2_CONTRACT = ROOT / "examples" / "compat-contract-iris-v2.yaml"
V1_CONTRACT = ROOT / "examples" / "compat-contract-iris-kserve-v1.yaml"
# KServe answers `predict` as [n] where MLServer answers [n, 1]: the same contract with that one shape.
KSERVE_V2_CONTRACT_TEXT = V2_CONTRACT.read_text().replace(
    "{name: predict, datatype: INT64, shape: [-1, 1]}", "{name: predict, datatype: INT64, shape: [-1]}")
# Live traffic: iris rows of all three species (from the data set's published table).
IRIS = [[5.1, 3.5, 1.4, 0.2], [4.9, 3.0, 1.4, 0.2], [5.4, 3.9, 1.7, 0.4], [7.0, 3.2, 4.7, 1.4],
        [6.4, 3.2, 4.5, 1.5], [5.5, 2.3, 4.0, 1.3], [6.3, 3.3, 6.0, 2.5], [5.8, 2.7, 5.1, 1.9],
        [7.1, 3.0, 5.9, 2.1], [6.0, 2.2, 5.0, 1.5]]
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
DEADLINE = 30.0


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, Any]]:
    base = tmp_path_factory.mktemp("modelservers")
    models = base / "models"
    summary = train(models)
    assert 0 < float(summary["v1_v2_max_proba_diff"]) < 0.01  # type: ignore[arg-type]
    assert summary["v1_v2_label_flips"] == 0
    return base, models, summary


def serving(start: Any, work: tuple[Path, Path, dict[str, Any]], *revisions: str) -> Iterator[dict[str, Served]]:
    """One server per revision, ready, stopped afterwards."""
    base, models, _ = work
    servers = {rev: start(models, rev, base) for rev in revisions}
    try:
        await_ready(*servers.values())
        yield servers
    finally:
        for server in servers.values():
            server.process.stop()


@pytest.fixture(scope="module")
def mlserver(work: tuple[Path, Path, dict[str, Any]]) -> Iterator[dict[str, Served]]:
    yield from serving(start_mlserver, work, "v1", "v2", "v3-labels")


@pytest.fixture(scope="module")
def kserve(work: tuple[Path, Path, dict[str, Any]]) -> Iterator[dict[str, Served]]:
    yield from serving(start_kserve, work, "v1", "v2", "v3-binary")


def probe_once(target: str, contract: Path) -> tuple[int, dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-m", "compat_probe", "--target", target, "--contract", str(contract), "--once",
         "--log-level", "WARNING"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "operator")},
    )
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def failing(report: dict[str, Any]) -> dict[str, list[str]]:
    return {item["name"]: item["reasons"] for item in report["failing"]}


# ---------------------------------------------------------------------------------------------- contracts


def test_mlserver_open_inference_contract(mlserver: dict[str, Served]) -> None:
    for revision in ("v1", "v2"):
        code, report = probe_once(mlserver[revision].url, V2_CONTRACT)
        assert (code, report["score"], failing(report)) == (0, 1.0, {}), revision
        assert report["checks"] == 6
    code, report = probe_once(mlserver["v3-labels"].url, V2_CONTRACT)
    assert code == 1
    assert report["score"] == pytest.approx(4 / 6)
    broken = failing(report)
    assert set(broken) == {"infer-two-flowers", "infer-one-flower"}
    assert "outputs[predict].datatype: changed: expected INT64, got BYTES" in broken["infer-two-flowers"]


def test_kserve_open_inference_and_v1_contracts(kserve: dict[str, Served], tmp_path: Path) -> None:
    v2_contract = tmp_path / "kserve-v2.yaml"
    v2_contract.write_text(KSERVE_V2_CONTRACT_TEXT)
    for revision in ("v1", "v2"):
        for contract in (v2_contract, V1_CONTRACT):
            code, report = probe_once(kserve[revision].url, contract)
            assert (code, report["score"], failing(report)) == (0, 1.0, {}), (revision, contract.name)
    code, report = probe_once(kserve["v3-binary"].url, v2_contract)
    assert code == 1
    assert "outputs[predict_proba].shape: [2, 2] does not match [-1, 3]" in failing(report)["infer-two-flowers"]
    code, report = probe_once(kserve["v3-binary"].url, V1_CONTRACT)
    assert code == 1
    assert set(failing(report)) == {"predict-two-flowers", "predict-one-flower"}
    assert "predictions.0: 2 elements, expected 3" in failing(report)["predict-two-flowers"]


# ------------------------------------------------------------------------------------------------ shadow


def post(url: str, doc: Any) -> int:
    request = urllib.request.Request(url, data=json.dumps(doc).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with _OPENER.open(request, timeout=10) as answer:
            answer.read()
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def tee(canary: str, stable: str, protocol: str, traffic: list[tuple[str, Any]]) -> tuple[Any, dict[str, int]]:
    """Run the probe in tee mode in front of ``canary``, send ``traffic`` through it, return the window."""
    app = ProbeApp(ProbeSettings(target=canary, shadow_target=stable, listen_port=0,
                                 shadow_spec=ShadowSpec(protocol=protocol), proxy_timeout=10.0))
    _, port = app.start()
    try:
        for path, body in traffic:
            post(f"http://127.0.0.1:{port}{path}", body)
        assert app.tee is not None
        deadline = time.monotonic() + DEADLINE
        while app.tee.snapshot()[0].total < len(traffic):
            assert time.monotonic() < deadline, f"shadow comparisons: {app.tee.snapshot()}"
            time.sleep(0.05)
        stats, errors, dropped = app.tee.snapshot()
        return stats, {**errors, "dropped": dropped}
    finally:
        app.stop()


def v2_traffic() -> list[tuple[str, Any]]:
    out = []
    for start in range(0, len(IRIS), 2):
        rows = IRIS[start:start + 2]
        out.append(("/v2/models/iris/infer", {"inputs": [
            {"name": "input-0", "datatype": "FP64", "shape": [len(rows), 4], "data": [v for row in rows for v in row]}],
            "outputs": [{"name": "predict"}, {"name": "predict_proba"}]}))
    return out


def test_mlserver_shadow_drift_within_tolerance_and_break(mlserver: dict[str, Served]) -> None:
    traffic = v2_traffic()
    stats, errors = tee(mlserver["v2"].url, mlserver["v1"].url, "open-inference-v2", traffic)
    assert stats.rows == len(IRIS) and errors == {"stable": 0, "transport": 0, "dropped": 0}
    assert stats.mismatch_rate == 0.0
    assert 0.0 < stats.max_diff < 0.01
    stats, _ = tee(mlserver["v3-labels"].url, mlserver["v1"].url, "open-inference-v2", traffic)
    assert stats.mismatch_rate == 1.0 and math.isnan(stats.max_diff)  # a BYTES `predict`: unusable


def test_kserve_v1_shadow_drift_within_tolerance_and_break(kserve: dict[str, Served]) -> None:
    traffic = [("/v1/models/iris:predict", {"instances": IRIS[i:i + 2]}) for i in range(0, len(IRIS), 2)]
    stats, _ = tee(kserve["v2"].url, kserve["v1"].url, "kserve-v1", traffic)
    assert stats.rows == len(IRIS) and stats.mismatch_rate == 0.0
    assert 0.0 < stats.max_diff < 0.01
    stats, _ = tee(kserve["v3-binary"].url, kserve["v1"].url, "kserve-v1", traffic)
    assert stats.mismatch_rate == 1.0
