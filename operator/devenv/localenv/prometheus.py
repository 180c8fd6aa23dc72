"""A real Prometheus (Debian's ``/usr/bin/prometheus``) on 127.0.0.1 for tests and the demo.

Targets come from a ``file_sd_configs`` file the :class:`Prometheus` object rewrites atomically
(:meth:`Prometheus.set_targets`). Prometheus 2.42 throttles discovery and scrape-pool reloads to once per
5 s (hard-coded), so a new target's first sample lands 3-6 s after set_targets(); wait with
:meth:`Prometheus.wait_target_up`, never a sleep. Targets whose process is down just scrape as ``up == 0``.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from devenv.localenv.procs import LOCALHOST, ManagedProcess, free_port, wait_until

PROMETHEUS = os.environ.get("MODELROLLOUT_PROMETHEUS", "/usr/bin/prometheus")
JOB = "modelrollout"

Target = tuple[str, Mapping[str, str]]

# Local HTTP only: never route 127.0.0.1 through an HTTP(S)_PROXY from the environment.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class PrometheusError(RuntimeError):
    pass


def _config(scrape_interval: str, targets_file: Path) -> str:
    return json.dumps(
        {
            "global": {
                "scrape_interval": scrape_interval,
                "scrape_timeout": scrape_interval,
                "evaluation_interval": scrape_interval,
            },
            "scrape_configs": [
                {
                    "job_name": JOB,
                    "scrape_interval": scrape_interval,
                    "scrape_timeout": scrape_interval,
                    # inotify sees the atomic rename at once; the refresh is only a safety net.
                    "file_sd_configs": [{"files": [str(targets_file)], "refresh_interval": "1s"}],
                }
            ],
        },
        indent=2,
    )


@dataclass
class Prometheus:
    workdir: Path
    port: int
    scrape_interval: str
    extra_args: Sequence[str] = ()
    host: str = LOCALHOST
    """The address it listens on: 127.0.0.1, or an address on a bridge of our own (a real node's, for pods)."""
    process: ManagedProcess | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def config_file(self) -> Path:
        return self.workdir / "prometheus.yml"

    @property
    def targets_file(self) -> Path:
        return self.workdir / "targets.json"

    @property
    def storage(self) -> Path:
        return self.workdir / "data"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running

    # -- lifecycle -------------------------------------------------------------------------------------

    def start(self, *, timeout: float = 60) -> Prometheus:
        """(Re)start on the same port and storage; returns once /-/ready answers 200."""
        if self.running:
            return self
        argv = [
            PROMETHEUS,
            f"--config.file={self.config_file}",
            f"--storage.tsdb.path={self.storage}",
            f"--web.listen-address={self.host}:{self.port}",
            "--web.enable-lifecycle",
            "--storage.tsdb.retention.time=1d",
            "--log.level=warn",
            *self.extra_args,
        ]
        self.process = ManagedProcess("prometheus", argv, self.workdir / "prometheus.log").start()
        self.wait_ready(timeout)
        return self

    def stop(self, timeout: float = 10) -> None:
        if self.process is not None:
            self.process.stop(timeout)

    def wait_ready(self, timeout: float = 60) -> None:
        def ready() -> bool:
            if self.process is not None:
                self.process.check_alive()
            with _opener.open(f"{self.url}/-/ready", timeout=2) as resp:
                return bool(resp.status == 200)

        wait_until(ready, timeout, what=f"prometheus {self.url}/-/ready", ignore=(OSError,))

    # -- targets ---------------------------------------------------------------------------------------

    def set_targets(self, targets: Iterable[Target]) -> None:
        """Replace the scrape targets: (``host:port``, extra labels). Written atomically (rename)."""
        groups = [{"targets": [addr], "labels": dict(labels)} for addr, labels in targets]
        tmp = self.targets_file.with_name(f".{self.targets_file.name}.tmp")
        tmp.write_text(json.dumps(groups, indent=2) + "\n")
        tmp.replace(self.targets_file)

    def active_targets(self) -> list[dict[str, Any]]:
        data = self._get("/api/v1/targets", {"state": "active"})
        return cast(list[dict[str, Any]], data["activeTargets"])

    def wait_target_up(self, address: str, timeout: float = 30) -> None:
        """Wait until ``address`` (host:port) has been scraped successfully (``up == 1``)."""
        self.wait_for(
            f'up{{job="{JOB}",instance="{address}"}}',
            lambda r: len(r) == 1 and float(r[0]["value"][1]) == 1.0,
            timeout,
        )

    # -- queries ---------------------------------------------------------------------------------------

    def _get(self, path: str, params: Mapping[str, str]) -> dict[str, Any]:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with _opener.open(url, timeout=10) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as e:
            raise PrometheusError(f"GET {url}: HTTP {e.code}: {e.read().decode(errors='replace')}") from e
        if body.get("status") != "success":
            raise PrometheusError(f"GET {url}: {body}")
        return cast(dict[str, Any], body["data"])

    def query(self, expr: str) -> list[Any]:
        """Instant query; returns ``data.result`` (a list of {metric, value} for vectors)."""
        return cast(list[Any], self._get("/api/v1/query", {"query": expr})["result"])

    def query_value(self, expr: str) -> float | None:
        """The single sample value of ``expr``, or None if the result is empty."""
        result = self.query(expr)
        if not result:
            return None
        if len(result) > 1:
            raise PrometheusError(f"{expr!r} returned {len(result)} series, expected one")
        return float(result[0]["value"][1])

    def wait_for(self, expr: str, predicate: Callable[[list[Any]], bool], timeout: float = 30) -> list[Any]:
        """Poll ``query(expr)`` until ``predicate(result)`` holds (bounded); returns that result."""
        last: list[Any] | None = None

        def check() -> tuple[list[Any]] | None:
            nonlocal last
            last = self.query(expr)
            return (last,) if predicate(last) else None

        try:
            return wait_until(check, timeout, what=f"prometheus query {expr!r}", ignore=(OSError, PrometheusError))[0]
        except TimeoutError as e:
            raise TimeoutError(f"{e}; last result: {last}") from None


def start_prometheus(
    workdir: Path, *, scrape_interval: str = "1s", extra_args: Sequence[str] = (), timeout: float = 60,
    host: str = LOCALHOST,
) -> Prometheus:
    """Start Prometheus on a free port of ``host`` (127.0.0.1 unless given an address on a bridge of our own)
    with fresh storage in ``workdir``; stopped at exit."""
    if not os.access(PROMETHEUS, os.X_OK):
        raise PrometheusError(f"prometheus not found at {PROMETHEUS} (apt-get install prometheus)")
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    prom = Prometheus(workdir=workdir, port=free_port(), scrape_interval=scrape_interval, extra_args=extra_args,
                      host=host)
    shutil.rmtree(prom.storage, ignore_errors=True)
    prom.set_targets([])
    prom.config_file.write_text(_config(scrape_interval, prom.targets_file) + "\n")
    atexit.register(prom.stop)
    try:
        prom.start(timeout=timeout)
    except BaseException:
        prom.stop()
        raise
    return prom
