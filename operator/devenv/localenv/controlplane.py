"""A real local Kubernetes control plane, no Docker: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and kwok (fake nodes whose Pods become Running/Ready), every one on 127.0.0.1.

Binaries: etcd 3.6 (hack/etcd/build.sh) or Debian's etcd 3.4 (``/usr/bin/etcd``), chosen by ``select_etcd``,
and the ones hack/controlplane/build.sh builds into a cache outside the clone. The apiserver's watch cache is on
when etcd can serve it (3.6: as production clusters run), off on Debian's 3.4. Certificates are made with the
``openssl`` CLI.

MODELROLLOUT_ETCD chooses etcd: ``auto`` (default: the built 3.6 when present, else Debian's), ``built``,
``debian``, or the path of an etcd binary.

CLI (backs ``make cluster-up`` / ``make cluster-down``)::

    python -m devenv.localenv.controlplane up --dir .localenv [--nodes 2] [--detach]
    python -m devenv.localenv.controlplane down --dir .localenv
    python -m devenv.localenv.controlplane etcd     # which etcd `up` runs, and the watch cache
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from devenv.localenv.procs import (
    LOCALHOST,
    CommandFailed,
    ManagedProcess,
    free_port,
    run,
    terminate_pid,
    wait_until,
)

K8S_VERSION = "v1.36.3"
KWOK_VERSION = "v0.8.0"
K8S_BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kwok")
DEBIAN_ETCD = "/usr/bin/etcd"
ETCD_CHOICE_ENV = "MODELROLLOUT_ETCD"
ETCD_PROGRESS_NOTIFY_INTERVAL = "5s"
"""etcd's periodic watch progress notifications (kubeadm's value): the watch cache's resourceVersion advances
while its resource does not change."""
OPENSSL = "openssl"

SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"
POD_CIDR = "10.0.0.0/16"  # kwok hands out Pod IPs from here: room for thousands of Pods
KWOK_ANNOTATION = "kwok.x-k8s.io/node"
STAGES_FILE = Path(__file__).with_name("kwok-stages.yaml")

# Controllers that can do nothing without kubelets, a cloud or a CSR flow; everything else stays on.
DISABLED_CONTROLLERS = (
    "cloud-node-lifecycle-controller",
    "node-route-controller",
    "service-lb-controller",
    "node-ipam-controller",
    "persistentvolume-attach-detach-controller",
    "persistentvolume-expander-controller",
    "certificatesigningrequest-approving-controller",
    "certificatesigningrequest-signing-controller",
    "certificatesigningrequest-cleaner-controller",
    "kube-apiserver-serving-clustertrustbundle-publisher-controller",
    "storage-version-migrator-controller",
)

FRONT_PROXY_CLIENT = "front-proxy-client"
HPA_SYNC_PERIOD = "1s"
"""kube-controller-manager's --horizontal-pod-autoscaler-sync-period (default 15s): HPAs act within seconds."""

AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
# RequestReceived duplicates ResponseComplete for every request; drop it to halve the log.
omitStages: ["RequestReceived"]
rules:
- level: Metadata
"""

START_TIMEOUT = float(os.environ.get("MODELROLLOUT_START_TIMEOUT", "180"))


class ControlPlaneError(RuntimeError):
    pass


# ---------------------------------------------------------------------------------------------- binaries


def repo_root() -> Path:
    """The clone this package lives in (…/operator/devenv/localenv/controlplane.py → …)."""
    return Path(__file__).resolve().parents[3]


def build_script() -> Path:
    return repo_root() / "hack" / "controlplane" / "build.sh"


def built(name: str) -> Path:
    """The bin dir of hack/NAME/build.sh (its binaries and ``crds/``), built on first use: the script builds once into
    the cache outside the clone (hack/lib/cached-build.sh) and prints the dir as its last stdout line. A build that
    fails or prints no existing dir raises ControlPlaneError naming the script, with the end of its stderr."""
    script = repo_root() / "hack" / name / "build.sh"
    if not script.is_file():
        raise ControlPlaneError(f"no build script hack/{name}/build.sh")
    try:
        done = run(["bash", str(script)], timeout=3600)
    except CommandFailed as e:
        raise ControlPlaneError(f"hack/{name}/build.sh exited {e.returncode}: {e.stderr[-3000:]}") from None
    lines = done.stdout.strip().splitlines()
    if not lines or not Path(lines[-1]).is_dir():
        raise ControlPlaneError(f"hack/{name}/build.sh printed no bin dir (its stdout ends {done.stdout[-300:]!r})")
    return Path(lines[-1])


def bin_dir() -> Path:
    """Where build.sh puts (or has put) the binaries; MODELROLLOUT_BIN_DIR overrides it."""
    override = os.environ.get("MODELROLLOUT_BIN_DIR")
    if override:
        return Path(override)
    cache = Path(os.environ.get("MODELROLLOUT_CACHE") or Path.home() / ".cache" / "modelrollout")
    return cache / "bin" / f"k8s-{K8S_VERSION}-kwok-{KWOK_VERSION}"


def missing_binaries(directory: Path | None = None) -> list[str]:
    d = directory or bin_dir()
    return [b for b in K8S_BINARIES if not os.access(d / b, os.X_OK)]


def ensure_binaries() -> Path:
    """Return the bin dir, running hack/controlplane/build.sh first if a binary is missing."""
    d = bin_dir()
    if not missing_binaries(d):
        return d
    if os.environ.get("MODELROLLOUT_BIN_DIR"):
        raise ControlPlaneError(f"missing {missing_binaries(d)} in MODELROLLOUT_BIN_DIR={d}")
    script = build_script()
    if not script.is_file():
        raise ControlPlaneError(f"missing {missing_binaries(d)} in {d} and no build script at {script}")
    if shutil.which("go") is None:
        raise ControlPlaneError(f"missing {missing_binaries(d)} in {d}; building them needs Go (not on PATH)")
    res = subprocess.run(["bash", str(script)], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        tail = "\n".join((res.stderr or res.stdout).splitlines()[-40:])
        raise ControlPlaneError(f"{script} failed with exit code {res.returncode}:\n{tail}")
    built = Path(res.stdout.strip().splitlines()[-1]) if res.stdout.strip() else d
    still = missing_binaries(built)
    if still:
        raise ControlPlaneError(f"{script} succeeded but {still} are missing from {built}")
    return built


# ------------------------------------------------------------------------------------------------- etcd


@dataclass(frozen=True)
class Etcd:
    """The etcd a control plane runs: its binary, version and where it came from (``built``, ``debian``, ``path``)."""

    binary: str
    version: str
    source: str

    @property
    def release(self) -> tuple[int, int, int]:
        major, minor, patch = (int(x) for x in self.version.split("."))
        return major, minor, patch

    @property
    def watch_cache(self) -> bool:
        """Whether the apiserver's watch cache works on this etcd: the apiserver's own rule for etcd's
        RequestWatchProgress (k8s.io/apiserver storage/feature: 3.4.31+, 3.5.13+, 3.6+). Without it cached
        watches stall after their first list."""
        major, minor, patch = self.release
        if (major, minor) == (3, 4):
            return patch >= 31
        if (major, minor) == (3, 5):
            return patch >= 13
        return (major, minor) >= (3, 6)

    def flags(self) -> list[str]:
        """Flags for the watch cache: periodic progress notifications (renamed without `experimental-` in 3.6)."""
        if not self.watch_cache:
            return []
        new_name = self.release >= (3, 6, 0)
        name = "watch-progress-notify-interval" if new_name else "experimental-watch-progress-notify-interval"
        return [f"--{name}={ETCD_PROGRESS_NOTIFY_INTERVAL}"]

    def describe(self) -> str:
        cache = "on" if self.watch_cache else "off"
        return f"etcd {self.version} ({self.source}: {self.binary}); apiserver watch cache {cache}"


def etcd_build_dir() -> Path:
    """hack/etcd/build.sh's bin dir: ``$cache/bin/etcd-VERSION-HASH``, HASH of its go.mod, go.sum and main.go
    (hack/lib/cached-build.sh's cache_bindir)."""
    src = repo_root() / "hack" / "etcd"
    files = [src / "go.mod", src / "go.sum", src / "main.go"]
    digest = hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()[:12]
    found = re.search(r"^require go\.etcd\.io/etcd/server/v3 (v\S+)$", files[0].read_text(), re.MULTILINE)
    if found is None:
        raise ControlPlaneError(f"no go.etcd.io/etcd/server/v3 require in {files[0]}")
    cache = Path(os.environ.get("MODELROLLOUT_CACHE") or Path.home() / ".cache" / "modelrollout")
    return cache / "bin" / f"etcd-{found.group(1)}-{digest}"


def _etcd_version(binary: str) -> str:
    res = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False, timeout=30)
    found = re.search(r"^etcd Version: (\d+\.\d+\.\d+)", res.stdout, re.MULTILINE)
    if res.returncode != 0 or found is None:
        raise ControlPlaneError(f"{binary} --version gave no version (exit {res.returncode}): {res.stdout}{res.stderr}")
    return found.group(1)


def select_etcd(choice: str | None = None) -> Etcd:
    """The etcd to run: ``choice`` (default: $MODELROLLOUT_ETCD, else ``auto``) is ``auto`` (the built etcd 3.6
    when present, else Debian's), ``built`` (hack/etcd/build.sh's), ``debian`` (/usr/bin/etcd) or a binary's path.
    Raises ControlPlaneError when the chosen one is missing."""
    choice = choice if choice is not None else os.environ.get(ETCD_CHOICE_ENV) or "auto"
    built = etcd_build_dir() / "etcd"
    if choice == "auto":
        choice = "built" if os.access(built, os.X_OK) else "debian"
    if choice == "built":
        binary, source, hint = str(built), "built", "bash hack/etcd/build.sh"
    elif choice == "debian":
        binary, source, hint = DEBIAN_ETCD, "debian", "apt-get install etcd-server"
    elif "/" in choice:
        binary, source, hint = choice, "path", f"{ETCD_CHOICE_ENV} names it"
    else:
        raise ControlPlaneError(f"{ETCD_CHOICE_ENV}={choice}: expected auto, built, debian or a path")
    if not os.access(binary, os.X_OK):
        raise ControlPlaneError(f"etcd not found at {binary} ({hint})")
    return Etcd(binary=binary, version=_etcd_version(binary), source=source)


# ------------------------------------------------------------------------------------------ certificates


_REQ_CNF = """\
[req]
distinguished_name = dn
[dn]
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign,digitalSignature
"""


def _openssl(*args: str, cwd: Path) -> None:
    res = subprocess.run([OPENSSL, *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=60)
    if res.returncode != 0:
        raise ControlPlaneError(f"openssl {' '.join(args)} failed:\n{res.stderr}")


def self_signed(certs: Path, cn: str) -> bytes:
    """A self-signed EC pair for a server on 127.0.0.1 (its own CA: ``CN=cn``, SAN ``IP:127.0.0.1``, valid a day),
    written as ``tls.crt`` and ``tls.key`` in ``certs`` (made if missing); returns the certificate."""
    certs.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-keyout", "tls.key", "-out", "tls.crt", "-days", "1", "-subj", f"/CN={cn}",
             "-addext", f"subjectAltName=IP:{LOCALHOST}", cwd=certs)
    return (certs / "tls.crt").read_bytes()


def _make_ca(pki: Path, name: str = "ca", subject: str = "/CN=modelrollout-local-ca") -> None:
    (pki / "req.cnf").write_text(_REQ_CNF)
    _openssl(
        "req",
        "-x509",
        "-new",
        "-nodes",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.crt",
        "-days",
        "3650",
        "-subj",
        subject,
        "-config",
        "req.cnf",
        "-extensions",
        "ca",
        cwd=pki,
    )


def _make_cert(pki: Path, name: str, subject: str, *, server_sans: Sequence[str] = (), ca: str = "ca") -> None:
    """EC key + certificate signed by ``ca``.crt. Client certs: subject /O=group/CN=user."""
    usages = "serverAuth,clientAuth" if server_sans else "clientAuth"
    ext = [
        "[ext]",
        "basicConstraints = critical,CA:FALSE",
        "keyUsage = critical,digitalSignature",
        f"extendedKeyUsage = {usages}",
    ]
    if server_sans:
        ext.append("subjectAltName = " + ",".join(server_sans))
    (pki / f"{name}.ext").write_text("\n".join(ext) + "\n")
    _openssl(
        "req",
        "-new",
        "-nodes",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.csr",
        "-subj",
        subject,
        "-config",
        "req.cnf",
        cwd=pki,
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        f"{ca}.crt",
        "-CAkey",
        f"{ca}.key",
        "-set_serial",
        str(int.from_bytes(os.urandom(8), "big")),
        "-days",
        "365",
        "-out",
        f"{name}.crt",
        "-extfile",
        f"{name}.ext",
        "-extensions",
        "ext",
        cwd=pki,
    )


def _make_pki(pki: Path) -> None:
    pki.mkdir(parents=True, exist_ok=True)
    _make_ca(pki)
    _make_cert(
        pki,
        "apiserver",
        "/CN=kube-apiserver",
        server_sans=[
            f"IP:{LOCALHOST}",
            f"IP:{SERVICE_IP}",
            "DNS:localhost",
            "DNS:kubernetes",
            "DNS:kubernetes.default",
            "DNS:kubernetes.default.svc",
            "DNS:kubernetes.default.svc.cluster.local",
        ],
    )
    _make_cert(pki, "admin", "/O=system:masters/CN=modelrollout-admin")
    _make_cert(pki, "controller-manager", "/CN=system:kube-controller-manager")
    _make_cert(pki, "scheduler", "/CN=system:kube-scheduler")
    _make_cert(pki, "kwok", "/O=system:masters/CN=kwok-controller")
    # The apiserver's client certificate towards real kubelets (logs/exec; start_control_plane(kubelet_access)).
    _make_cert(pki, "apiserver-kubelet-client", "/O=system:masters/CN=kube-apiserver-kubelet-client")
    # The aggregation layer: the apiserver proxies aggregated APIs (APIService objects: an external-metrics
    # server for an HPA, say) with this client certificate, from a CA of its own (the front proxy's).
    _make_ca(pki, "front-proxy-ca", "/CN=modelrollout-front-proxy-ca")
    _make_cert(pki, "front-proxy-client", f"/CN={FRONT_PROXY_CLIENT}", ca="front-proxy-ca")
    # Service-account token signing key (ES256) and its public half for the apiserver.
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "sa.key", cwd=pki)
    _openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write_kubeconfig(path: Path, server: str, pki: Path, user: str) -> Path:
    """A self-contained kubeconfig (certificates embedded) for client cert ``user``.crt/key."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "local",
                "cluster": {"server": server, "certificate-authority-data": _b64(pki / "ca.crt")},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": _b64(pki / f"{user}.crt"),
                    "client-key-data": _b64(pki / f"{user}.key"),
                },
            }
        ],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": user}}],
        "current-context": "local",
    }
    path.write_text(json.dumps(config, indent=2) + "\n")  # JSON is YAML
    path.chmod(0o600)
    return path


def client_kubeconfig(cp: ControlPlane, user: str, path: Path, *, group: str = "system:masters") -> Path:
    """A kubeconfig with a new client certificate ``/O=group/CN=user``: a client the audit log tells apart."""
    pki = cp.workdir / "pki"
    _make_cert(pki, user, f"/O={group}/CN={user}")
    return write_kubeconfig(path, cp.server, pki, user)


# ------------------------------------------------------------------------------------------ control plane


@dataclass
class ControlPlane:
    workdir: Path
    kubeconfig: Path
    server: str
    audit_log: Path
    bin_dir: Path
    etcd: Etcd | None = None  # the etcd it runs (None: attached to a control plane started elsewhere)
    processes: list[ManagedProcess] = field(default_factory=list, repr=False)
    _stopped: bool = field(default=False, repr=False)

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run the built kubectl against this cluster; on failure (check=True) raises with stdout/stderr."""
        argv = [str(self.bin_dir / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args]
        return run(argv, input=input, check=check, timeout=timeout, env=self.env())

    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def wait_established(self, crd: str, timeout: float = 60) -> None:
        """Wait until the CustomResourceDefinition ``crd`` is Established. ``kubectl wait`` fails at once while
        a new CRD has no status.conditions yet, so it is asked again until the condition holds."""
        wait_until(lambda: self.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=10s",
                                        check=False, timeout=30).returncode == 0,
                   timeout, 0.2, what=f"CRD {crd} Established")

    def apply_crds(self, path: Path, timeout: float = 60) -> list[str]:
        """Apply (server-side) the CustomResourceDefinitions in ``path``, a file or a directory of ``*.yaml``, and
        wait until each is Established; returns their names."""
        files = sorted(path.glob("*.yaml")) if path.is_dir() else [path]
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
        names = [doc["metadata"]["name"] for f in files for doc in yaml.safe_load_all(f.read_text())
                 if doc and doc.get("kind") == "CustomResourceDefinition"]
        for name in names:
            self.wait_established(name, timeout)
        return names

    def pids(self) -> list[tuple[str, int]]:
        return [(p.name, p.pid) for p in self.processes if p.proc is not None]

    def write_pids(self, path: Path) -> None:
        """One "name pid" line per process, in the order ``down`` stops them (last started first)."""
        lines = [f"{name} {pid}" for name, pid in reversed(self.pids())]
        tmp = path.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        tmp.replace(path)

    def check_alive(self) -> None:
        for p in self.processes:
            p.check_alive()

    def stop(self) -> None:
        """Stop every process, last started first (SIGTERM, then SIGKILL after a bounded wait)."""
        if self._stopped:
            return
        self._stopped = True
        for p in reversed(self.processes):
            p.stop(timeout=10)

    def detach(self) -> None:
        """Leave the processes running after this Python process exits (``up --detach``)."""
        self._stopped = True
        with contextlib.suppress(ValueError):
            atexit.unregister(self.stop)


def _component_env(etcd: Etcd | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("KUBECONFIG", None)
    # Without the watch cache (Debian's etcd 3.4 lacks RequestWatchProgress), client-go's streaming list
    # (WatchListClient, on by default in kwok's client-go) fails every watch and kwok only sees pods on its
    # periodic relist (10 s+ late). Plain list+watch works at once. With the cache, client-go's default stays.
    if etcd is None or not etcd.watch_cache:
        env["KUBE_FEATURE_WatchListClient"] = "false"
    return env


def _start(cp: ControlPlane, name: str, argv: list[str]) -> ManagedProcess:
    p = ManagedProcess(name=name, argv=argv, log=cp.workdir / "logs" / f"{name}.log", env=_component_env(cp.etcd))
    cp.processes.append(p)
    p.start()
    return p


def start_control_plane(workdir: Path, *, nodes: int = 2, timeout: float = START_TIMEOUT,
                        controller_qps: int | None = None, kubelet_access: bool = False,
                        etcd: Etcd | None = None) -> ControlPlane:
    """Start etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok with ``nodes`` fake nodes.

    ``controller_qps`` raises kube-controller-manager's client rate limit (default 20/s, burst 30; the burst is
    twice the rate), for environments with hundreds of Deployments changing at once (the scale benchmark).

    ``kubelet_access`` lets the apiserver reach a real kubelet (devenv.localenv.node) for logs/exec: it
    dials the node's InternalIP (never its hostname, which would ask the machine's DNS resolver) with a client
    certificate of its own. Off by default: the kwok-only environments keep the apiserver's defaults.

    ``etcd`` defaults to ``select_etcd()`` (MODELROLLOUT_ETCD); the apiserver's watch cache is on when it can
    serve it (``Etcd.watch_cache``).

    Returns once /readyz is ok, the ``default`` ServiceAccount exists and every node is Ready. Everything
    (certificates, etcd data, logs, kubeconfig, audit log, ``etcd.json``: the etcd chosen) lives in ``workdir``;
    a previous run's etcd data there is wiped. The processes are stopped by ``stop()`` or at interpreter exit.
    """
    bins = ensure_binaries()
    etcd_choice = etcd or select_etcd()
    if shutil.which(OPENSSL) is None:
        raise ControlPlaneError("openssl not found (apt-get install openssl)")

    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    for stale in ("etcd-data", "pki", "logs"):
        shutil.rmtree(workdir / stale, ignore_errors=True)
    (workdir / "logs").mkdir()
    pki = workdir / "pki"
    _make_pki(pki)

    api_port = free_port()
    server = f"https://{LOCALHOST}:{api_port}"
    cp = ControlPlane(
        workdir=workdir,
        kubeconfig=write_kubeconfig(workdir / "kubeconfig", server, pki, "admin"),
        server=server,
        audit_log=workdir / "audit.log",
        bin_dir=bins,
        etcd=etcd_choice,
    )
    state = {**asdict(etcd_choice), "watch_cache": etcd_choice.watch_cache}
    (workdir / "etcd.json").write_text(json.dumps(state) + "\n")
    atexit.register(cp.stop)
    try:
        _boot(cp, pki, api_port, nodes, time.monotonic() + timeout, controller_qps, kubelet_access)
    except BaseException:
        cp.stop()
        atexit.unregister(cp.stop)
        raise
    return cp


def _remaining(deadline: float) -> float:
    return max(deadline - time.monotonic(), 1.0)


def _boot(cp: ControlPlane, pki: Path, api_port: int, nodes: int, deadline: float,
          controller_qps: int | None = None, kubelet_access: bool = False) -> None:
    w, b = cp.workdir, cp.bin_dir
    etcd_choice = cp.etcd or select_etcd()
    with contextlib.suppress(FileNotFoundError):
        cp.audit_log.unlink()

    # etcd ------------------------------------------------------------------------------------------------
    etcd_client, etcd_peer = free_port(), free_port()
    etcd = _start(
        cp,
        "etcd",
        [
            etcd_choice.binary,
            "--name=local",
            f"--data-dir={w / 'etcd-data'}",
            f"--listen-client-urls=http://{LOCALHOST}:{etcd_client}",
            f"--advertise-client-urls=http://{LOCALHOST}:{etcd_client}",
            f"--listen-peer-urls=http://{LOCALHOST}:{etcd_peer}",
            f"--initial-advertise-peer-urls=http://{LOCALHOST}:{etcd_peer}",
            f"--initial-cluster=local=http://{LOCALHOST}:{etcd_peer}",
            "--initial-cluster-state=new",
            "--logger=zap",
            "--log-outputs=stderr",
            "--log-level=warn",
            *etcd_choice.flags(),
        ],
    )

    def etcd_healthy() -> bool:
        etcd.check_alive()
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://{LOCALHOST}:{etcd_client}/health", timeout=2) as resp:
            return bool(json.loads(resp.read()).get("health") == "true")

    wait_until(etcd_healthy, _remaining(deadline), what="etcd /health", ignore=(OSError, ValueError))

    # kube-apiserver -------------------------------------------------------------------------------------
    (w / "audit-policy.yaml").write_text(AUDIT_POLICY)
    apiserver = _start(
        cp,
        "kube-apiserver",
        [
            str(b / "kube-apiserver"),
            f"--etcd-servers=http://{LOCALHOST}:{etcd_client}",
            f"--bind-address={LOCALHOST}",
            f"--advertise-address={LOCALHOST}",
            f"--secure-port={api_port}",
            "--endpoint-reconciler-type=none",
            f"--watch-cache={str(etcd_choice.watch_cache).lower()}",  # Etcd.watch_cache: where etcd can serve it
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            "--allow-privileged=true",
            f"--audit-policy-file={w / 'audit-policy.yaml'}",
            f"--audit-log-path={cp.audit_log}",
            "--audit-log-format=json",
            "--audit-log-maxsize=0",  # one file, never rotated: tests read it whole
            "--profiling=false",
            # the aggregation layer (APIService objects), as kubeadm configures it
            f"--requestheader-client-ca-file={pki / 'front-proxy-ca.crt'}",
            f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
            f"--proxy-client-key-file={pki / 'front-proxy-client.key'}",
            *(
                [
                    "--kubelet-preferred-address-types=InternalIP",
                    f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
                    f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
                ]
                if kubelet_access
                else []
            ),
        ],
    )

    def apiserver_ready() -> bool:
        apiserver.check_alive()
        etcd.check_alive()
        res = cp.kubectl("get", "--raw=/readyz", check=False, timeout=10)
        return res.returncode == 0 and res.stdout.strip() == "ok"

    wait_until(
        apiserver_ready,
        _remaining(deadline),
        0.2,
        what="kube-apiserver /readyz",
        ignore=(subprocess.TimeoutExpired,),
    )

    # kube-controller-manager, kube-scheduler, kwok ------------------------------------------------------
    kcm_cfg = write_kubeconfig(w / "controller-manager.kubeconfig", cp.server, pki, "controller-manager")
    _start(
        cp,
        "kube-controller-manager",
        [
            str(b / "kube-controller-manager"),
            f"--kubeconfig={kcm_cfg}",
            f"--authentication-kubeconfig={kcm_cfg}",
            f"--authorization-kubeconfig={kcm_cfg}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--requestheader-client-ca-file={pki / 'ca.crt'}",
            f"--bind-address={LOCALHOST}",
            f"--secure-port={free_port()}",
            "--leader-elect=false",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--controllers=*," + ",".join(f"-{c}" for c in DISABLED_CONTROLLERS),
            f"--horizontal-pod-autoscaler-sync-period={HPA_SYNC_PERIOD}",
            "--profiling=false",
            *([f"--kube-api-qps={controller_qps}", f"--kube-api-burst={2 * controller_qps}"] if controller_qps else []),
        ],
    )
    sched_cfg = write_kubeconfig(w / "scheduler.kubeconfig", cp.server, pki, "scheduler")
    _start(
        cp,
        "kube-scheduler",
        [
            str(b / "kube-scheduler"),
            f"--kubeconfig={sched_cfg}",
            f"--authentication-kubeconfig={sched_cfg}",
            f"--authorization-kubeconfig={sched_cfg}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--requestheader-client-ca-file={pki / 'ca.crt'}",
            f"--bind-address={LOCALHOST}",
            f"--secure-port={free_port()}",
            "--leader-elect=false",
            "--profiling=false",
        ],
    )
    kwok_cfg = write_kubeconfig(w / "kwok.kubeconfig", cp.server, pki, "kwok")
    _start(
        cp,
        "kwok",
        [
            str(b / "kwok"),
            f"--kubeconfig={kwok_cfg}",
            f"--config={STAGES_FILE}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={KWOK_ANNOTATION}=fake",
            f"--node-ip={LOCALHOST}",
            f"--cidr={POD_CIDR}",
            "--node-lease-duration-seconds=40",
        ],
    )

    # fake nodes -----------------------------------------------------------------------------------------
    if nodes:
        cp.kubectl("apply", "-f", "-", input=json.dumps(_node_list(nodes)))

    def default_sa() -> bool:
        cp.check_alive()
        return cp.kubectl("get", "serviceaccount", "default", "-n", "default", check=False).returncode == 0

    wait_until(default_sa, _remaining(deadline), 0.2, what="ServiceAccount default/default (controller-manager)")

    def nodes_ready() -> bool:
        cp.check_alive()
        out = cp.kubectl("get", "nodes", "-l", "type=kwok", "-o", "json").stdout
        items = json.loads(out)["items"]
        return len(items) >= nodes and all(_node_schedulable(n) for n in items)

    wait_until(nodes_ready, _remaining(deadline), 0.2, what=f"{nodes} kwok nodes Ready", ignore=(CommandFailed,))


def _node_list(count: int) -> dict[str, object]:
    items = [
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": f"kwok-node-{i}",
                "annotations": {KWOK_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {
                    "type": "kwok",
                    "kubernetes.io/hostname": f"kwok-node-{i}",
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "kubernetes.io/role": "agent",
                    "node-role.kubernetes.io/agent": "",
                },
            },
            # kwok's node-initialize stage fills status (allocatable 1k cpu, 1Ti memory, 1M pods).
        }
        for i in range(count)
    ]
    return {"apiVersion": "v1", "kind": "List", "items": items}


def _node_schedulable(node: Mapping[str, object]) -> bool:
    status = node.get("status")
    spec = node.get("spec")
    conditions = status.get("conditions", []) if isinstance(status, dict) else []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    taints = spec.get("taints", []) if isinstance(spec, dict) else []
    return ready and not any(t.get("effect") in ("NoSchedule", "NoExecute") for t in taints)


# ------------------------------------------------------------------------------------------------- CLI


def _read_pids(path: Path) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for line in path.read_text().splitlines():
        if line.strip():
            name, pid = line.split()
            out.append((name, int(pid)))
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cmd_up(directory: Path, nodes: int, detach: bool, kubelet_access: bool = False) -> int:
    pids_file = directory / "pids"
    if pids_file.exists() and any(_alive(pid) for _, pid in _read_pids(pids_file)):
        print(
            f"a control plane from {pids_file} is still running; run `down --dir {directory}` first",
            file=sys.stderr,
        )
        return 1
    started = time.monotonic()
    cp = start_control_plane(directory, nodes=nodes, kubelet_access=kubelet_access)
    cp.write_pids(pids_file)
    print(f"control plane up in {time.monotonic() - started:.1f}s: {cp.server}", file=sys.stderr)
    if cp.etcd is not None:
        print(cp.etcd.describe(), file=sys.stderr)
    print(f"logs: {cp.workdir / 'logs'}  audit log: {cp.audit_log}", file=sys.stderr)
    print(f"export KUBECONFIG={cp.kubeconfig}")
    sys.stdout.flush()
    if detach:
        cp.detach()
        return 0

    stop_requested: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        stop_requested.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    code = 0
    try:
        while not stop_requested:
            try:
                cp.check_alive()
            except RuntimeError as e:
                print(str(e), file=sys.stderr)
                code = 1
                break
            time.sleep(1.0)  # liveness watch only, not synchronisation
    finally:
        cp.stop()
        with contextlib.suppress(FileNotFoundError):
            pids_file.unlink()
    return code


def cmd_down(directory: Path) -> int:
    pids_file = directory / "pids"
    if not pids_file.exists():
        print(f"no {pids_file}: nothing to stop", file=sys.stderr)
        return 0
    for name, pid in _read_pids(pids_file):
        if _alive(pid):
            print(f"stopping {name} (pid {pid})", file=sys.stderr)
            terminate_pid(pid, timeout=10)
    pids_file.unlink()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devenv.localenv.controlplane",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start a control plane (foreground unless --detach)")
    up.add_argument("--dir", type=Path, required=True, help="state directory (kubeconfig, pids, logs)")
    up.add_argument("--nodes", type=int, default=2, help="number of kwok fake nodes")
    up.add_argument("--detach", action="store_true", help="return once up, leaving the processes running")
    up.add_argument("--kubelet-access", action="store_true",
                    help="let the apiserver reach a real kubelet (devenv.localenv.node) for logs/exec")
    down = sub.add_parser("down", help="stop the control plane recorded in DIR/pids")
    down.add_argument("--dir", type=Path, required=True)
    sub.add_parser("bin-dir", help="print the bin dir, building the binaries if needed")
    sub.add_parser("etcd", help=f"print the etcd `up` would run (${ETCD_CHOICE_ENV}) and whether the watch cache is on")
    args = parser.parse_args(argv)
    if args.command == "up":
        return cmd_up(args.dir, args.nodes, args.detach, args.kubelet_access)
    if args.command == "down":
        return cmd_down(args.dir)
    if args.command == "etcd":
        print(select_etcd().describe())
        return 0
    print(ensure_binaries())
    return 0


if __name__ == "__main__":
    sys.exit(main())
