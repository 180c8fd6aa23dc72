"""A model server that is still starting is no verdict: the probe's score stays NaN (and /readyz 503)
while every golden request is refused, and becomes a real score once the server answers. A server that
answered once and then refuses is broken: its score falls to 0. (Real servers take seconds to load a model:
MLServer about 5 s here; a score of 0 meanwhile would roll a healthy canary back.)
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

from compat_probe.contract import Contract
from compat_probe.server import ProbeApp, ProbeSettings
from devenv.localenv.procs import ManagedProcess, free_port, port_open, wait_until

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = Contract.from_yaml((ROOT / "examples" / "compat-contract.yaml").read_text())


def score(app: ProbeApp) -> float:
    report, _ = app.latest()
    return math.nan if report is None else report.score


def test_refused_before_the_first_answer_is_no_verdict(tmp_path: Path) -> None:
    port = free_port()
    app = ProbeApp(ProbeSettings(target=f"http://127.0.0.1:{port}", contract=CONTRACT, interval=0.1,
                                 listen_port=0))
    app.start()
    server: ManagedProcess | None = None
    try:
        deadline = time.monotonic() + 1.0  # ten replays against a closed port
        while time.monotonic() < deadline:
            assert math.isnan(score(app)) and not app.ready
            time.sleep(0.05)
        assert app.latest() == (None, 0)
        server = ManagedProcess(
            name="refserver", log=tmp_path / "refserver.log", env={"PYTHONPATH": str(ROOT / "operator")},
            argv=[sys.executable, "-m", "compat_probe.refserver", "--host", "127.0.0.1", "--port", str(port),
                  "--version", "v1"]).start()
        wait_until(lambda: port_open(port), 20, 0.05, what="refserver listening")
        wait_until(lambda: score(app) == 1.0, 20, 0.05, what="score 1 once the server answers")
        assert app.ready
        server.stop()
        wait_until(lambda: score(app) == 0.0, 20, 0.05, what="score 0 once the server that answered is gone")

        def refused() -> bool:  # a replay under way while the server stopped may fail otherwise (a reset)
            report, _ = app.latest()
            return report is not None and report.score == 0.0 and all(
                r.reasons == ["request failed: connection refused"] for r in report.failing())

        wait_until(refused, 20, 0.05, what="a replay of only refused requests, scored 0")
    finally:
        app.stop()
        if server is not None:
            server.stop()


def test_one_shot_still_fails_on_a_closed_port() -> None:
    app = ProbeApp(ProbeSettings(target=f"http://127.0.0.1:{free_port()}", contract=CONTRACT, listen_port=0))
    report = app.run_once()
    assert report is not None and report.score == 0.0  # --once (CI, preflight) asks now, and gets a verdict
