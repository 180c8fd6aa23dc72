"""The operator as a child process (``modelrollout run``), for the tests, the demo and the benchmarks."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from devenv.localenv.procs import ManagedProcess


def operator_process(kubeconfig: Path, log: Path, *, namespaces: Sequence[str] = (), metrics_port: int = 0,
                     extra: Sequence[str] = ()) -> ManagedProcess:
    """A ManagedProcess running the operator against ``kubeconfig`` (not started yet)."""
    argv = [sys.executable, "-m", "modelrollout", "run"]
    for ns in namespaces:
        argv += ["--namespace", ns]
    if metrics_port:
        argv += ["--metrics-port", str(metrics_port), "--metrics-address", "127.0.0.1"]
    argv += list(extra)
    src = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "KUBECONFIG": str(kubeconfig),
           "PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH", "")) if p)}
    return ManagedProcess(name="modelrollout-operator", argv=argv, log=log, env=env)


def kill_hard(process: ManagedProcess) -> None:
    """SIGKILL: no cleanup, no status write, as when a node dies."""
    if process.proc is not None and process.proc.poll() is None:
        os.kill(process.proc.pid, signal.SIGKILL)
        process.proc.wait(10)
    process.stop()
