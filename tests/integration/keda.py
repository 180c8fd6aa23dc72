"""Real KEDA for the integration tests: KEDA's operator (``cmd/operator``, built by hack/keda/build.sh) as a child
process against the local control plane, watching one namespace.

Everything listens on 127.0.0.1 and contacts nothing else: the metrics and health-probe endpoints and the
operator's gRPC metrics service (for KEDA's metrics server, which is not run) bind 127.0.0.1 ports; no leader
election; no certificate rotation, so no webhook or APIService is patched (the gRPC service reads a self-signed
pair made here); the scalers' extra CA directory is an empty one. KEDA's metrics server (``cmd/adapter``) is not
run: the tests serve the external metric of the HPA KEDA generates themselves (tests/integration/metricsapi.py).
"""

from __future__ import annotations

import contextlib
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from devenv.localenv.controlplane import ControlPlane, self_signed
from devenv.localenv.procs import LOCALHOST, ManagedProcess, free_port, wait_until

KEDA_VERSION = "v2.21.0"


def listening(pid: int) -> list[str]:
    """The TCP addresses process ``pid`` listens on, as ``IP:PORT`` (IPv6 as /proc/net/tcp6 writes it)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:["):-1])
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:
                address, port = fields[1].split(":")
                ip = socket.inet_ntoa(bytes.fromhex(address)[::-1]) if len(address) == 8 else address
                out.append(f"{ip}:{int(port, 16)}")
    return sorted(out)


@dataclass
class Keda:
    """KEDA's operator watching ``namespace`` (its cluster-object namespace too), on 127.0.0.1 ports."""

    cp: ControlPlane
    bin_dir: Path
    directory: Path
    namespace: str
    proc: ManagedProcess | None = field(default=None, init=False)
    ports: dict[str, int] = field(default_factory=dict, init=False)
    """The listeners it is given: metrics, health probes, the gRPC metrics service."""

    def apply_crds(self) -> None:
        crds = self.bin_dir / "crds"
        self.cp.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crds))
        for path in sorted(crds.glob("*.yaml")):
            for doc in yaml.safe_load_all(path.read_text()):
                if doc:
                    self.cp.wait_established(doc["metadata"]["name"])

    def start(self) -> Keda:
        self.apply_crds()
        certs, no_cas = self.directory / "certs", self.directory / "no-ca"
        (certs / "ca.crt").write_bytes(self_signed(certs, "keda-operator"))  # its own CA: nobody dials it
        no_cas.mkdir(parents=True, exist_ok=True)
        # streaming lists fail against Debian's etcd 3.4 (docs/testing.md): off, as for Flux and the control plane
        env = {**os.environ, "KUBECONFIG": str(self.cp.kubeconfig), "HOME": str(self.directory),
               "WATCH_NAMESPACE": self.namespace, "KEDA_CLUSTER_OBJECT_NAMESPACE": self.namespace,
               "POD_NAMESPACE": self.namespace, "KUBE_FEATURE_WatchListClient": "false"}
        self.ports = {flag: free_port() for flag in ("metrics", "health-probe", "metrics-service")}
        self.proc = ManagedProcess("keda-operator", [
            str(self.bin_dir / "keda-operator"), "--leader-elect=false", "--enable-cert-rotation=false",
            "--enable-webhook-patching=false", "--enable-apiservice-patching=false",
            *(f"--{flag}-bind-address={LOCALHOST}:{port}" for flag, port in self.ports.items()),
            f"--cert-dir={certs}", f"--ca-dir={no_cas}", "--zap-log-level=info", "--zap-encoder=console"],
            self.directory / "keda-operator.log", env=env).start()
        return self

    def check_alive(self) -> None:
        if self.proc is not None:
            self.proc.check_alive()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()

    def logs(self, lines: int = 60) -> str:
        return f"--- keda-operator ({self.proc.log})\n{self.proc.log_tail(lines)}" if self.proc else ""

    def wait_ready(self, timeout: float = 60) -> None:
        """The ScaledObject controller has started its workers (the operator's log says so)."""
        def started() -> bool:
            self.check_alive()
            tail = self.proc.log_tail(400) if self.proc else ""
            return any("Starting workers" in line and "scaledobject" in line.lower() for line in tail.splitlines())

        wait_until(started, timeout, 0.2, what="KEDA's ScaledObject controller started")
