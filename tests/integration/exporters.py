"""Real model-server exporters (``compat_probe.refserver``) on 127.0.0.1, one per track, for Prometheus."""

from __future__ import annotations

import json
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from devenv.localenv.procs import ManagedProcess, free_port, port_open, wait_until
from devenv.localenv.prometheus import Prometheus

_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Exporter:
    def __init__(self, port: int, process: ManagedProcess) -> None:
        self.port = port
        self.process = process

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def set_score(self, value: float) -> None:
        req = urllib.request.Request(f"http://{self.address}/admin/score", data=json.dumps({"value": value}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        with _opener.open(req, timeout=5) as resp:
            assert resp.status == 200


@contextmanager
def exporters(prometheus: Prometheus, tmp: Path, rollout: str, *, stable: float = 1.0,
              canary: float = 1.0) -> Iterator[dict[str, Exporter]]:
    """Start one refserver per track, labelled rollout/track, scraped by ``prometheus``; wait until up."""
    out: dict[str, Exporter] = {}
    try:
        for track, score in (("stable", stable), ("canary", canary)):
            port = free_port()
            proc = ManagedProcess(
                name=f"refserver-{track}",
                argv=[sys.executable, "-m", "compat_probe.refserver", "--host", "127.0.0.1", "--port", str(port),
                      "--rollout", rollout, "--track", track, "--revision", track, "--score", str(score)],
                log=tmp / f"refserver-{track}.log",
                env={**__import__("os").environ,
                     "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "operator")},
            ).start()
            out[track] = Exporter(port, proc)
            wait_until(lambda p=port: port_open(p), 20, 0.05, what=f"refserver {track}")  # type: ignore[misc]
        prometheus.set_targets([(e.address, {}) for e in out.values()])
        for e in out.values():
            prometheus.wait_target_up(e.address, 30)
        prometheus.wait_for(f'model_api_compatibility_score{{rollout="{rollout}",track="canary"}}', bool, 30)
        yield out
    finally:
        for e in out.values():
            e.process.stop()
