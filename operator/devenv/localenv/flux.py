"""Real Flux for the integration tests: source-controller and kustomize-controller (built by hack/flux/build.sh)
against the local control plane, syncing from a git repository served on 127.0.0.1 over smart HTTP.

Everything listens on 127.0.0.1 and contacts nothing else: ``git http-backend`` runs as a CGI behind a small
threaded HTTP server (Flux's git client does not speak git's dumb HTTP), the controllers' metrics, health and
artifact servers bind 127.0.0.1 ports, and no events recorder address is set (``--events-addr`` empty: Events go
to the apiserver only).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from devenv.localenv.controlplane import ControlPlane
from devenv.localenv.procs import LOCALHOST, Controllers, ManagedProcess, free_port

GIT = shutil.which("git") or "/usr/bin/git"
BODY_LIMIT = 64 << 20
"""Largest request body the git server reads (a clone's negotiation is a few KB)."""


def _git(*args: str, cwd: Path) -> str:
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(cwd), "GIT_AUTHOR_NAME": "test",
           "GIT_AUTHOR_EMAIL": "test@127.0.0.1", "GIT_COMMITTER_NAME": "test",
           "GIT_COMMITTER_EMAIL": "test@127.0.0.1"}
    return subprocess.run([GIT, *args], cwd=cwd, env=env, capture_output=True, text=True, check=True,
                          timeout=60).stdout


class _CGIHandler(BaseHTTPRequestHandler):
    """``git http-backend`` per request (GET info/refs, POST git-upload-pack)."""

    root: Path

    def do_GET(self) -> None:
        self._cgi(b"")

    def do_POST(self) -> None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            for _ in range(1 << 16):  # bounded: a chunk per iteration
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                body += self.rfile.read(size)
                self.rfile.readline()
                if len(body) > BODY_LIMIT:
                    break
        else:
            body = self.rfile.read(min(int(self.headers.get("Content-Length") or 0), BODY_LIMIT))
        self._cgi(body)

    def _cgi(self, body: bytes) -> None:
        path, _, query = self.path.partition("?")
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "GIT_PROJECT_ROOT": str(self.root),
               "GIT_HTTP_EXPORT_ALL": "1", "REQUEST_METHOD": self.command, "PATH_INFO": path,
               "QUERY_STRING": query, "CONTENT_TYPE": self.headers.get("Content-Type", ""),
               "CONTENT_LENGTH": str(len(body)), "REMOTE_ADDR": self.client_address[0],
               "GATEWAY_INTERFACE": "CGI/1.1", "SERVER_PROTOCOL": "HTTP/1.1"}
        if self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
        if self.headers.get("Git-Protocol"):
            env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
        res = subprocess.run([GIT, "http-backend"], input=body, env=env, capture_output=True, check=False,
                             timeout=60)
        head, _, payload = res.stdout.partition(b"\r\n\r\n")
        if not _:
            head, _, payload = res.stdout.partition(b"\n\n")
        status, headers = 200, []
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            elif name:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass
class GitServer:
    """A bare repository ``models.git`` served at ``url`` and a working clone the test commits in."""

    directory: Path
    port: int = 0
    work: Path = field(init=False)
    _server: ThreadingHTTPServer | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.work = self.directory / "work"

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}/models.git"

    def start(self) -> GitServer:
        bare = self.directory / "models.git"
        bare.mkdir(parents=True, exist_ok=True)
        _git("init", "--bare", "--initial-branch=main", str(bare), cwd=self.directory)
        _git("config", "http.receivepack", "false", cwd=bare)
        self.work.mkdir(parents=True, exist_ok=True)
        _git("init", "--initial-branch=main", str(self.work), cwd=self.directory)
        _git("remote", "add", "origin", str(bare), cwd=self.work)
        handler = type("Handler", (_CGIHandler,), {"root": self.directory})
        self._server = ThreadingHTTPServer((LOCALHOST, self.port or free_port()), handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, name="git-http", daemon=True).start()
        return self

    def commit(self, files: dict[str, str | None], message: str) -> str:
        """Write (None: delete) ``files`` in the working clone, commit and push; the new commit's SHA."""
        for rel, text in files.items():
            path = self.work / rel
            if text is None:
                path.unlink(missing_ok=True)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
        _git("add", "-A", cwd=self.work)
        _git("commit", "--allow-empty", "-q", "-m", message, cwd=self.work)
        _git("push", "-q", "origin", "HEAD:main", cwd=self.work)
        return _git("rev-parse", "HEAD", cwd=self.work).strip()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@dataclass
class Flux(Controllers):
    """source-controller and kustomize-controller, watching all namespaces, on 127.0.0.1 ports."""

    cp: ControlPlane
    bin_dir: Path
    directory: Path
    feature_gates: str = ""

    def start(self) -> Flux:
        self.cp.apply_crds(self.bin_dir / "crds")
        # streaming lists fail against Debian's etcd 3.4 (docs/testing.md): off, as for the control plane's parts
        env = {**os.environ, "KUBECONFIG": str(self.cp.kubeconfig), "RUNTIME_NAMESPACE": "flux-system",
               "HOME": str(self.directory), "KUBE_FEATURE_WatchListClient": "false"}
        storage = free_port()
        (self.directory / "artifacts").mkdir(parents=True, exist_ok=True)

        def common() -> list[str]:
            return ["--enable-leader-election=false", "--events-addr=", "--log-level=info",
                    f"--metrics-addr={LOCALHOST}:{free_port()}", f"--health-addr={LOCALHOST}:{free_port()}"]

        source = ManagedProcess("source-controller", [
            str(self.bin_dir / "source-controller"), *common(),
            f"--storage-path={self.directory / 'artifacts'}", f"--storage-addr={LOCALHOST}:{storage}",
            f"--storage-adv-addr={LOCALHOST}:{storage}"], self.directory / "source-controller.log", env=env)
        kustomize = ManagedProcess("kustomize-controller", [
            str(self.bin_dir / "kustomize-controller"), *common(), "--no-remote-bases=true",
            *([f"--feature-gates={self.feature_gates}"] if self.feature_gates else [])],
            self.directory / "kustomize-controller.log", env=env)
        self.procs = [source.start(), kustomize.start()]
        return self

    def wait_ready(self, timeout: float = 60) -> None:
        """Both controllers have started their workers (their logs say so)."""
        self.wait_workers("Flux controllers started", timeout=timeout)
