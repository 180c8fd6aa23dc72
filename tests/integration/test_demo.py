"""`make demo` as a test: ``python -m devenv.demo`` end to end, and Ctrl-C in the middle of it.

The demo starts its own control plane, Prometheus, operator and model-server processes. Every process it
starts inherits ``MODELROLLOUT_DEMO_RUN=<marker>``, so the test can tell its processes from any other
(another test run's control plane, say) and assert that none is left.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from devenv.demo import MARKER_ENV, marked_processes
from devenv.localenv.controlplane import ControlPlaneError, missing_binaries, select_etcd
from devenv.localenv.procs import terminate_pid, wait_until
from devenv.localenv.prometheus import PROMETHEUS

pytestmark = [pytest.mark.integration, pytest.mark.prometheus]

DEMO_TIMEOUT = 600
ROW = re.compile(r"^\s*\+\d+(?:\.\d+)?s\s+[A-Za-z]+\s+(?P<step>\d+/\d+(?: done)?|-)\s+\d+%(?P<message>.*)$")
"""A row of the demo's table: elapsed, phase, step, weight, ... message."""
OPERATOR_SRC = Path(__file__).resolve().parents[2] / "operator"


@pytest.fixture(autouse=True)
def _needs_local_environment() -> None:
    reasons = []
    if missing_binaries() and shutil.which("go") is None:
        reasons.append(f"control-plane binaries {missing_binaries()} missing and no Go to build them")
    try:
        select_etcd()
    except ControlPlaneError as e:
        reasons.append(str(e))
    if not os.access(PROMETHEUS, os.X_OK):
        reasons.append(f"prometheus not found at {PROMETHEUS}")
    if reasons:
        message = "; ".join(reasons)
        if os.environ.get("MODELROLLOUT_REQUIRE_CLUSTER") == "1":
            pytest.fail(f"{message} (MODELROLLOUT_REQUIRE_CLUSTER=1)", pytrace=False)
        pytest.skip(message)


@dataclass
class DemoRun:
    """``python -m devenv.demo`` as a child process whose output is collected line by line."""

    workdir: Path
    args: tuple[str, ...] = ()
    marker: str = field(default_factory=lambda: uuid.uuid4().hex)
    lines: list[str] = field(default_factory=list)
    proc: subprocess.Popen[str] | None = None

    def start(self) -> DemoRun:
        path = os.pathsep.join(p for p in (str(OPERATOR_SRC), os.environ.get("PYTHONPATH", "")) if p)
        env = {**os.environ, "PYTHONPATH": path, MARKER_ENV: self.marker}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "devenv.demo", "--workdir", str(self.workdir), *self.args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, env=env,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGINT)  # let it clean up, as a person pressing Ctrl-C would
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self._reader.join(10)
            pytest.fail(f"the demo did not finish within {timeout}s; output:\n{self.output[-6000:]}")
        self._reader.join(10)
        return code

    def leftovers(self) -> list[tuple[int, str]]:
        return marked_processes(self.marker)

    def kill_leftovers(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for pid, _ in self.leftovers():
            terminate_pid(pid, timeout=5)


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[DemoRun]:
    run = DemoRun(tmp_path / "demo")
    try:
        yield run
    finally:
        run.kill_leftovers()  # whatever the test saw, never leave a process behind for the next one


def test_demo_runs_all_three_acts_and_leaves_nothing_running(demo: DemoRun) -> None:
    code = demo.start().wait(DEMO_TIMEOUT)
    out = demo.output
    left = demo.leftovers()
    assert code == 0, f"demo exited {code}:\n{out[-6000:]}"
    # act 2: the compatible revision is promoted after the approvals the operator asked for
    assert re.search(r"act 2: revision [0-9a-f]+ promoted", out), out
    assert re.search(r"kubectl annotate mro chat -n demo modelrollout\.io/approve=[0-9a-f]+-\d+ --overwrite", out), out
    assert "AwaitingApproval" in out
    # act 3: the operator rolls back on its own and says why: metric, value, threshold and query
    assert re.search(r"act 3: revision [0-9a-f]+ rolled back", out), out
    reason = re.search(r"rollback reason: (.*)", out)
    assert reason is not None, out
    assert re.search(r"api-compatibility = [0-9.]+ is below min 0\.99 \(query: min\(model_api_compatibility_score",
                     reason.group(1)), reason.group(1)
    assert re.search(r"Warning event RollingBack: .*api-compatibility", out), out
    # the STEP column and the message of every row name the same step (both 1-based N/M)
    rows = [m for m in map(ROW.match, out.splitlines()) if m and m.group("step") != "-"]
    assert rows, out
    named = [(m.group("step"), n) for m in rows for n in re.findall(r"\bsteps? (\d+/\d+)", m.group("message"))]
    assert named, out
    assert all(step.split()[0] == n for step, n in named), named
    assert "nothing left running" in out
    assert not left, f"processes left running: {left}"


def test_ctrl_c_mid_demo_stops_everything(demo: DemoRun) -> None:
    proc = demo.start().proc
    assert proc is not None
    wait_until(lambda: any(line.startswith("Act 2") for line in demo.lines) or proc.poll() is not None,
               DEMO_TIMEOUT, 0.2, what="the demo reaching act 2")
    assert proc.poll() is None, f"the demo ended before act 2:\n{demo.output[-4000:]}"
    assert demo.leftovers(), "the demo should have processes running in act 2"
    proc.send_signal(signal.SIGINT)
    code = demo.wait(120)
    out = demo.output
    assert code == 130, f"exit {code}:\n{out[-4000:]}"
    assert "interrupted" in out
    assert "nothing left running" in out, out[-4000:]
    assert not demo.leftovers(), demo.leftovers()
