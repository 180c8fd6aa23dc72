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

from devenv.localenv.controlplane import ControlPlane, self_signed
from devenv.localenv.procs import LOCALHOST, Controllers, ManagedProcess, free_port

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
class Keda(Controllers):
    """KEDA's operator watching ``namespace`` (its cluster-object namespace too), on 127.0.0.1 ports."""

    cp: ControlPlane
    bin_dir: Path
    directory: Path
    namespace: str
    ports: dict[str, int] = field(default_factory=dict, init=False)
    """The listeners it is given: metrics, health probes, the gRPC metrics service."""

    def start(self) -> Keda:
        self.cp.apply_crds(self.bin_dir / "crds")
        certs, no_cas = self.directory / "certs", self.directory / "no-ca"
        (certs / "ca.crt").write_bytes(self_signed(certs, "keda-operator"))  # its own CA: nobody dials it
        no_cas.mkdir(parents=True, exist_ok=True)
        # streaming lists fail against Debian's etcd 3.4 (docs/testing.md): off, as for Flux and the control plane
        env = {**os.environ, "KUBECONFIG": str(self.cp.kubeconfig), "HOME": str(self.directory),
               "WATCH_NAMESPACE": self.namespace, "KEDA_CLUSTER_OBJECT_NAMESPACE": self.namespace,
               "POD_NAMESPACE": self.namespace, "KUBE_FEATURE_WatchListClient": "false"}
        self.ports = {flag: free_port() for flag in ("metrics", "health-probe", "metrics-service")}
        self.procs = [ManagedProcess("keda-operator", [
            str(self.bin_dir / "keda-operator"), "--leader-elect=false", "--enable-cert-rotation=false",
            "--enable-webhook-patching=false", "--enable-apiservice-patching=false",
            *(f"--{flag}-bind-address={LOCALHOST}:{port}" for flag, port in self.ports.items()),
            f"--cert-dir={certs}", f"--ca-dir={no_cas}", "--zap-log-level=info", "--zap-encoder=console"],
            self.directory / "keda-operator.log", env=env).start()]
        return self

    def wait_ready(self, timeout: float = 60) -> None:
        """The ScaledObject controller has started its workers (the operator's log says so)."""
        self.wait_workers("KEDA's ScaledObject controller started", "scaledobject", timeout)
