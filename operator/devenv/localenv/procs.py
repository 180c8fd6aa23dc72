"""Process helpers for the local environment: free ports, bounded polling, managed child processes."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TypeVar

T = TypeVar("T")

LOCALHOST = "127.0.0.1"


class WaitTimeout(TimeoutError):
    """wait_until() gave up; the message says what it was waiting for and the last error seen."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOCALHOST, 0))
        port: int = s.getsockname()[1]
        return port


def wait_until(
    predicate: Callable[[], T | None],
    timeout: float,
    interval: float = 0.1,
    *,
    what: str = "condition",
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Poll ``predicate`` until it returns a truthy value (returned) or ``timeout`` seconds pass.

    Exceptions listed in ``ignore`` count as "not yet" (the last one is reported on timeout). The interval
    grows gently up to 1 s so a long wait does not hammer the thing it polls.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    delay = interval
    while True:
        try:
            result = predicate()
        except ignore as e:
            last_error = e
        else:
            if result:
                return result
        now = time.monotonic()
        if now >= deadline:
            detail = f" (last error: {last_error!r})" if last_error is not None else ""
            raise WaitTimeout(f"timed out after {timeout:.1f}s waiting for {what}{detail}")
        time.sleep(min(delay, deadline - now))
        delay = min(delay * 1.5, 1.0)


def port_open(port: int, host: str = LOCALHOST) -> bool:
    """True if something accepts TCP connections on host:port."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def terminate_pid(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM ``pid``, then SIGKILL if it is still alive after ``timeout`` seconds. Missing PIDs are fine.

    Only for processes that are not our children (a pids file from ``down``); children use ManagedProcess.
    """
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return _is_zombie(pid)

    try:
        wait_until(gone, timeout, 0.05, what=f"pid {pid} to exit")
    except WaitTimeout:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


@dataclass
class ManagedProcess:
    """A child process whose stdout+stderr go to ``log``; stop() is SIGTERM then SIGKILL, bounded."""

    name: str
    argv: list[str]
    log: Path
    env: Mapping[str, str] | None = None
    cwd: Path | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _logfile: IO[bytes] | None = field(default=None, init=False, repr=False)

    def start(self) -> ManagedProcess:
        if self.running:
            return self
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._logfile = self.log.open("ab")
        self._logfile.write(f"\n=== start {self.name}: {' '.join(self.argv)}\n".encode())
        self._logfile.flush()
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._logfile,
            stderr=subprocess.STDOUT,
            env=dict(self.env) if self.env is not None else None,
            cwd=self.cwd,
            start_new_session=True,  # Ctrl-C in the terminal goes to us only; we stop children in order
        )
        return self

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError(f"{self.name} was never started")
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        """Raise with the log tail if the process has exited (used inside wait_until predicates)."""
        if self.proc is not None and self.proc.poll() is not None:
            raise ProcessDied(self)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(timeout)
        if self._logfile is not None:
            self._logfile.close()
            self._logfile = None


class ProcessDied(RuntimeError):
    def __init__(self, p: ManagedProcess) -> None:
        code = p.proc.returncode if p.proc is not None else None
        super().__init__(f"{p.name} exited with code {code}; last lines of {p.log}:\n{p.log_tail()}")
        self.process = p


def run(
    argv: Sequence[str],
    *,
    input: str | None = None,
    check: bool = True,
    timeout: float = 60,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """subprocess.run with text I/O captured; on failure the error carries stdout/stderr."""
    res = subprocess.run(
        list(argv),
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(env) if env is not None else None,
        check=False,
    )
    if check and res.returncode != 0:
        raise CommandFailed(res)
    return res


class CommandFailed(subprocess.CalledProcessError):
    def __init__(self, res: subprocess.CompletedProcess[str]) -> None:
        super().__init__(res.returncode, res.args, res.stdout, res.stderr)

    def __str__(self) -> str:
        args = self.cmd if isinstance(self.cmd, str) else " ".join(map(str, self.cmd))
        return f"{args!r} exited {self.returncode}\nstdout: {self.stdout}\nstderr: {self.stderr}"


@dataclass
class Controllers:
    """Kubernetes controllers run out of cluster as child processes (``procs``, in start order): liveness,
    their logs, stop (last started first), and readiness as controller-runtime logs it."""

    procs: list[ManagedProcess] = field(default_factory=list, init=False)

    @property
    def proc(self) -> ManagedProcess | None:
        """The first process (the only one of a single-binary controller), once started."""
        return self.procs[0] if self.procs else None

    def check_alive(self) -> None:
        for p in self.procs:
            p.check_alive()

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()

    def logs(self, lines: int = 60) -> str:
        return "\n".join(f"--- {p.name} ({p.log})\n{p.log_tail(lines)}" for p in self.procs)

    def wait_workers(self, what: str, controller: str = "", timeout: float = 60) -> None:
        """Until every process has logged controller-runtime's "Starting workers" (with ``controller``: the line
        naming that controller, lower case), raising at once if one exits."""
        def started(p: ManagedProcess) -> bool:
            return any("Starting workers" in line and controller in line.lower()
                       for line in p.log_tail(2000).splitlines())

        def all_started() -> bool:
            self.check_alive()
            return bool(self.procs) and all(started(p) for p in self.procs)

        wait_until(all_started, timeout, 0.2, what=what)
