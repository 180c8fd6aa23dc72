"""A real node beside the local control plane: containerd + runc + bridge CNI + kubelet + kube-proxy.

Up by one call, down by one, leaving nothing behind::

    node = up(control_plane, workdir)      # returns once the Node is Ready and kube-proxy has synced
    ...
    node.down()                            # or down(workdir) from another process

CLI (the control plane must run with ``kubelet_access=True``; see ``controlplane up --kubelet-access``)::

    python -m devenv.localenv.node up --workdir DIR --controlplane-dir CPDIR [--apiserver-for-pods] [--product-images]
    python -m devenv.localenv.node down --workdir DIR

What it changes on the host, all recorded in ``DIR/node-state.json`` before it is changed and restored by
``down``: sysctls the kubelet and the CNI set (``SYSCTLS``), a bridge on a private /24 (``NODE_SUBNET``; the
node IP is the bridge address), an nftables table of its own (``NFT_TABLE``) whose counted rules drop anything
from the pod range leaving by another interface and anything still addressed to the Service range, the tables
kube-proxy and the kubelet add, pod network namespaces under /run/netns, cgroups under ``/<cgroupRoot>``, and
the few host paths containerd, the kubelet and the CNI create outside their configured dirs (``HOST_PATHS``).
Everything else (containerd root/state/socket, kubelet root, pod logs, CNI config and IPAM state, certificates)
lives under DIR. Needs root and the Debian packages hack/bootstrap.sh installs.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import hashlib
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devenv.localenv.controlplane import (
    K8S_VERSION,
    SERVICE_CIDR,
    ControlPlane,
    ControlPlaneError,
    _make_cert,
    bin_dir,
    build_script,
    write_kubeconfig,
)
from devenv.localenv.procs import (
    LOCALHOST,
    CommandFailed,
    ManagedProcess,
    WaitTimeout,
    free_port,
    run,
    terminate_pid,
    wait_until,
)

NODE_NAME = "modelrollout-node"
NODE_SUBNET = os.environ.get("MODELROLLOUT_NODE_SUBNET", "172.30.254.0/24")
BRIDGE = "mrnode0"
NFT_TABLE = "modelrollout_node"  # family inet
CNI_NETWORK = "modelrollout-node"
CGROUP_ROOT = "modelrollout-node"
CNI_BIN_DIR = Path("/usr/lib/cni")
NODE_BINARIES = ("kubelet", "kube-proxy")
TOOLS = ("containerd", "runc", "ctr", "nft", "ip", "umoci", "skopeo", "busybox", "gcc", "mount", "umount")
STATE_FILE = "node-state.json"
DONE_FILE = "node-state.down.json"
READY_TIMEOUT = float(os.environ.get("MODELROLLOUT_NODE_TIMEOUT", "120"))
STOP_TIMEOUT = 15.0
DRAIN_TIMEOUT = 20.0

SYSCTLS = (
    "net.ipv4.ip_forward",  # the bridge CNI (isGateway)
    "net.ipv4.conf.all.forwarding",
    "net.ipv6.conf.all.forwarding",
    "vm.overcommit_memory",  # the kubelet's kernel tunables (setupKernelTunables)
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
    "net.ipv4.conf.all.route_localnet",  # kube-proxy, iptables mode only
    "net.bridge.bridge-nf-call-iptables",
    "net.bridge.bridge-nf-call-ip6tables",
    "net.netfilter.nf_conntrack_max",  # kube-proxy's conntrack settings (zeroed in its config: left alone)
    "net.netfilter.nf_conntrack_tcp_timeout_established",
    "net.netfilter.nf_conntrack_tcp_timeout_close_wait",
    "net.netfilter.nf_conntrack_tcp_be_liberal",
)
CONNTRACK_HASHSIZE = Path("/sys/module/nf_conntrack/parameters/hashsize")

# Paths the components create outside the dirs they are given: removed by down() if they were absent before.
HOST_PATHS = (
    "/var/log/containers",  # the kubelet (hard-coded ContainerLogsDir)
    "/var/log/pods",
    "/var/lib/cni",  # libcni's result cache
    "/run/netns",  # containerd's pod network namespaces
    "/run/containerd",  # containerd shims' sockets (/run/containerd/s)
    "/var/lib/kubelet",  # the device-plugin manager's kubelet.sock, whatever --root-dir says
    "/var/lib/containerd",
    "/opt/containerd",
    "/etc/cni",
    "/usr/libexec/kubernetes",
)
KUBE_PROXY_TABLES = ("ip kube-proxy", "ip6 kube-proxy")
IPTABLES_TABLES = tuple(f"{fam} {t}" for fam in ("ip", "ip6") for t in ("mangle", "nat", "filter"))

PAUSE_IMAGE = "localhost/modelrollout-pause"
TEST_IMAGE = "localhost/modelrollout-busybox"
IMAGE_RECIPE = "1"  # bump when the way images are built changes


class NodeError(RuntimeError):
    pass


# --------------------------------------------------------------------------------------------- helpers


def _cache_dir() -> Path:
    return Path(os.environ.get("MODELROLLOUT_CACHE") or Path.home() / ".cache" / "modelrollout")


def _sh(*argv: str, check: bool = True, timeout: float = 60, input: str | None = None) -> str:
    return run(argv, check=check, timeout=timeout, input=input).stdout


def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


def read_sysctl(name: str) -> str | None:
    try:
        return _sysctl_path(name).read_text().strip()
    except OSError:
        return None


def _write_sysctl(name: str, value: str) -> None:
    _sysctl_path(name).write_text(value + "\n")


def _read_hashsize() -> str | None:
    try:
        return CONNTRACK_HASHSIZE.read_text().strip()
    except OSError:
        return None


def gateway(subnet: str = NODE_SUBNET) -> str:
    """The bridge address: the node's IP and the pods' default gateway."""
    return str(next(ipaddress.ip_network(subnet).hosts()))


def nft_tables() -> list[str]:
    """``family name`` of every nftables table on the host."""
    out = _sh("nft", "list", "tables", check=False)
    return [line.removeprefix("table ").strip() for line in out.splitlines() if line.startswith("table ")]


def netns_entries() -> list[str]:
    with contextlib.suppress(FileNotFoundError):
        return sorted(os.listdir("/run/netns"))
    return []


def mounts_under(*roots: Path | str, mountinfo: str | None = None) -> list[str]:
    """Mount points at or under any of ``roots`` (from /proc/self/mountinfo), deepest first."""
    prefixes = [str(Path(r)) for r in roots]
    found: list[str] = []
    if mountinfo is None:
        mountinfo = Path("/proc/self/mountinfo").read_text()
    for line in mountinfo.splitlines():
        point = line.split()[4].replace("\\040", " ")
        if any(point == p or point.startswith(p.rstrip("/") + "/") for p in prefixes):
            found.append(point)
    return sorted(set(found), key=lambda p: (-p.count("/"), p))


def link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def bridge_ports(name: str = BRIDGE) -> list[str]:
    with contextlib.suppress(FileNotFoundError):
        return sorted(os.listdir(f"/sys/class/net/{name}/brif"))
    return []


def _ancestors() -> set[int]:
    """This process and its ancestors (a `timeout ... node down --workdir DIR` wrapper names DIR too)."""
    pids, pid = set(), os.getpid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


def processes_mentioning(text: str) -> list[tuple[int, str]]:
    """(pid, cmdline) of every process whose command line contains ``text``, this one and its ancestors
    excluded."""
    found: list[tuple[int, str]] = []
    mine = _ancestors()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in mine:
            continue
        try:
            cmd = Path("/proc", entry, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd:
            found.append((int(entry), cmd.strip()))
    return found


def cgroup_dirs(root: str = CGROUP_ROOT) -> list[Path]:
    """The node's cgroupRoot in every mounted cgroup hierarchy (v1 controllers and the v2 'unified')."""
    base = Path("/sys/fs/cgroup")
    dirs: list[Path] = []
    with contextlib.suppress(FileNotFoundError):
        for sub in sorted(base.iterdir()):
            if sub.is_dir() and not sub.is_symlink() and os.path.ismount(sub):
                dirs.append(sub / root)
    return dirs


def cgroup_pids(root: str = CGROUP_ROOT) -> list[int]:
    """Every process in the node's cgroups (its pods' containers), in any hierarchy."""
    pids: set[int] = set()
    for top in cgroup_dirs(root):
        if not top.is_dir():
            continue
        for procs in top.rglob("cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                pids.update(int(x) for x in procs.read_text().split())
    return sorted(pids)


def _subnet_in_use(subnet: str) -> list[str]:
    """Addresses or routes on the host that overlap ``subnet`` (the default route aside)."""
    net = ipaddress.ip_network(subnet)
    clashes: list[str] = []
    for a in json.loads(_sh("ip", "-j", "-4", "addr") or "[]"):
        for info in a.get("addr_info", []):
            iface = ipaddress.ip_interface(f"{info['local']}/{info['prefixlen']}")
            if iface.network.overlaps(net):
                clashes.append(f"address {iface} on {a['ifname']}")
    for r in json.loads(_sh("ip", "-j", "-4", "route", "show", "table", "all") or "[]"):
        dst = r.get("dst", "default")
        if dst == "default" or r.get("type") in ("local", "broadcast"):
            continue
        with contextlib.suppress(ValueError):
            if ipaddress.ip_network(dst, strict=False).overlaps(net):
                clashes.append(f"route {dst} dev {r.get('dev')}")
    return clashes


# ---------------------------------------------------------------------------------------------- state


@dataclass
class NodeState:
    """Everything down() needs, written to WORKDIR/node-state.json before each change it records."""

    workdir: str
    node_name: str = NODE_NAME
    subnet: str = NODE_SUBNET
    bridge: str = BRIDGE
    kubeconfig: str = ""
    kubectl: str = ""
    sysctls: dict[str, str] = field(default_factory=dict)
    conntrack_hashsize: str | None = None
    absent_paths: list[str] = field(default_factory=list)
    netns_before: list[str] = field(default_factory=list)
    nft_tables_before: list[str] = field(default_factory=list)
    veths_before: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)  # "bridge", "nft", "cgroups", "endpointslice"
    pids: dict[str, int] = field(default_factory=dict)
    apiserver_relay: str = ""  # "HOST:PORT" pods reach the apiserver at (up(..., apiserver_for_pods=True))

    @property
    def path(self) -> Path:
        return Path(self.workdir) / STATE_FILE

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.__dict__, indent=2) + "\n")
        tmp.replace(self.path)

    @classmethod
    def load(cls, workdir: Path) -> NodeState:
        return cls(**json.loads((workdir / STATE_FILE).read_text()))

    @classmethod
    def load_done(cls, workdir: Path) -> NodeState:
        """The record of a node that ``down`` took down (its state file, renamed)."""
        return cls(**json.loads((workdir / DONE_FILE).read_text()))

    @property
    def sock(self) -> str:
        return str(Path(self.workdir) / "containerd" / "containerd.sock")


def record_host(workdir: Path) -> NodeState:
    """The host settings and paths the node may change, as they are now."""
    state = NodeState(workdir=str(workdir))
    state.sysctls = {name: v for name in SYSCTLS if (v := read_sysctl(name)) is not None}
    state.conntrack_hashsize = _read_hashsize()
    state.absent_paths = [p for p in HOST_PATHS if not os.path.lexists(p)]
    state.netns_before = netns_entries()
    state.nft_tables_before = nft_tables()
    state.veths_before = veths()
    return state


# ------------------------------------------------------------------------------------------------ images


def _go() -> str:
    return shutil.which("go") or "/usr/local/go/bin/go"


def _k8s_module_dir() -> Path:
    """k8s.io/kubernetes@K8S_VERSION in the Go module cache (downloaded by build.sh; again here if missing)."""
    gomodcache = os.environ.get("GOMODCACHE") or str(Path(os.environ.get("GOPATH") or Path.home() / "go") / "pkg/mod")
    mod = Path(gomodcache) / f"k8s.io/kubernetes@{K8S_VERSION}"
    if not (mod / "build/pause/linux/pause.c").is_file():
        here = build_script().parent
        subprocess.run([_go(), "mod", "download", f"k8s.io/kubernetes@{K8S_VERSION}"], cwd=here, check=True,
                       capture_output=True, env={**os.environ, "GOTOOLCHAIN": "local"}, timeout=600)
        mod = Path(_sh(_go(), "env", "GOMODCACHE").strip()) / f"k8s.io/kubernetes@{K8S_VERSION}"
    return mod


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(hashlib.sha256(p).digest())
    return h.hexdigest()[:16]


def _oci_to_archive(rootfs: Path, name: str, tag: str, out: Path, entrypoint: Sequence[str]) -> None:
    """rootfs -> OCI layout (umoci) -> docker-archive (skopeo) at ``out``."""
    layout = out.parent / f"{out.name}.oci"
    shutil.rmtree(layout, ignore_errors=True)
    _sh("umoci", "init", "--layout", str(layout))
    _sh("umoci", "new", "--image", f"{layout}:{tag}")
    _sh("umoci", "insert", "--rootless", "--image", f"{layout}:{tag}", str(rootfs), "/")
    cfg = ["umoci", "config", "--image", f"{layout}:{tag}", "--config.workingdir=/", "--os=linux",
           "--architecture=amd64"]
    cfg += [f"--config.entrypoint={arg}" for arg in entrypoint]
    _sh(*cfg)
    tmp = out.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    _sh("skopeo", "copy", "--quiet", f"oci:{layout}:{tag}", f"docker-archive:{tmp}:{name}:{tag}", timeout=120)
    tmp.replace(out)
    shutil.rmtree(layout, ignore_errors=True)


def build_images() -> dict[str, Path]:
    """The pause image and the busybox test image as docker-archives in the cache, {ref: archive}.

    Each is rebuilt only when its inputs change (pause.c, the busybox binary, IMAGE_RECIPE): the tag is a hash
    of them.
    """
    cache = _cache_dir() / "node-images"
    cache.mkdir(parents=True, exist_ok=True)
    pause_c = _k8s_module_dir() / "build/pause/linux/pause.c"
    busybox = Path(shutil.which("busybox") or "/bin/busybox").resolve()
    out: dict[str, Path] = {}

    tag = _digest(pause_c.read_bytes(), IMAGE_RECIPE.encode())
    archive = cache / f"pause-{tag}.tar"
    if not archive.is_file():
        work = cache / f"pause-{tag}.build"
        shutil.rmtree(work, ignore_errors=True)
        (work / "rootfs").mkdir(parents=True)
        _sh("gcc", "-Os", "-static", "-Wall", "-Werror", f"-DVERSION={K8S_VERSION}", "-o",
            str(work / "rootfs" / "pause"), str(pause_c))
        _oci_to_archive(work / "rootfs", PAUSE_IMAGE, tag, archive, ["/pause"])
        shutil.rmtree(work, ignore_errors=True)
    out[f"{PAUSE_IMAGE}:{tag}"] = archive

    tag = _digest(busybox.read_bytes(), IMAGE_RECIPE.encode())
    archive = cache / f"busybox-{tag}.tar"
    if not archive.is_file():
        work = cache / f"busybox-{tag}.build"
        shutil.rmtree(work, ignore_errors=True)
        root = work / "rootfs"
        for d in ("bin", "tmp", "www", "etc"):
            (root / d).mkdir(parents=True)
        shutil.copy2(busybox, root / "bin" / "busybox")
        for applet in ("sh", "httpd", "nc", "echo", "cat", "hostname", "sleep", "wget"):
            (root / "bin" / applet).symlink_to("busybox")
        (root / "tmp").chmod(0o1777)
        (root / "etc" / "passwd").write_text("root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n")
        (root / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
        _oci_to_archive(root, TEST_IMAGE, tag, archive, ["/bin/sh"])
        shutil.rmtree(work, ignore_errors=True)
    out[f"{TEST_IMAGE}:{tag}"] = archive
    return out


# ---------------------------------------------------------------------------------------------- configs


def _containerd_config(w: Path, sandbox_image: str) -> str:
    c = w / "containerd"
    return f"""version = 2
root = "{c / 'root'}"
state = "{c / 'state'}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{c / 'containerd.sock'}"
[ttrpc]
  address = "{c / 'containerd.sock.ttrpc'}"
[debug]
  address = ""
[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{c / 'opt'}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  stream_server_address = "{LOCALHOST}"
  stream_server_port = "0"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "{shutil.which('runc') or 'runc'}"
        Root = "{c / 'runc'}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{w / 'cni' / 'net.d'}"
    max_conf_num = 1
"""


def _cni_config(w: Path, subnet: str) -> dict[str, Any]:
    net = ipaddress.ip_network(subnet)
    hosts = list(net.hosts())
    return {
        "cniVersion": "0.4.0",
        "name": CNI_NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": False,  # nothing leaves the machine: no masquerade rules to add
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(w / "cni" / "ipam"),
                    "ranges": [[{"subnet": subnet, "rangeStart": str(hosts[9]), "rangeEnd": str(hosts[-1]),
                                 "gateway": gateway(subnet)}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            }
        ],
    }


def _kubelet_config(w: Path, state: NodeState, port: int, healthz: int) -> dict[str, Any]:
    pki = w / "pki"
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": gateway(state.subnet),
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": LOCALHOST,
        "healthzPort": healthz,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(pki / "ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "tlsCertFile": str(pki / "kubelet-serving.crt"),
        "tlsPrivateKeyFile": str(pki / "kubelet-serving.key"),
        "containerRuntimeEndpoint": f"unix://{state.sock}",
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/{CGROUP_ROOT}",
        "failCgroupV1": False,
        "failSwapOn": False,
        "resolvConf": str(w / "resolv.conf"),
        "clusterDomain": "cluster.local",
        "clusterDNS": [],
        "podLogsDir": str(w / "kubelet" / "pod-logs"),
        "volumePluginDir": str(w / "kubelet" / "volume-plugins"),
        "staticPodPath": "",
        "maxPods": 30,
        "serializeImagePulls": False,
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                         "nodefs.inodesFree": "1%"},
        "nodeStatusUpdateFrequency": "5s",
        "syncFrequency": "10s",
        "fileCheckFrequency": "60s",
        "kernelMemcgNotification": False,
        "registerNode": True,
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        "logging": {"format": "text"},
    }


def _kube_proxy_config(w: Path, state: NodeState, healthz: int, metrics: int) -> dict[str, Any]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(w / "kube-proxy.kubeconfig")},
        "mode": "nftables",
        "hostnameOverride": state.node_name,
        "clusterCIDR": state.subnet,
        "detectLocalMode": "ClusterCIDR",
        "healthzBindAddress": f"{LOCALHOST}:{healthz}",
        "metricsBindAddress": f"{LOCALHOST}:{metrics}",
        "nodePortAddresses": [f"{gateway(state.subnet)}/32"],
        # zeros: leave the host's conntrack sysctls and hash size alone
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s",
                      "tcpBeLiberal": False, "udpTimeout": "0s", "udpStreamTimeout": "0s"},
        "syncPeriod": "30s",
        "minSyncPeriod": "0s",
    }


def _nft_ruleset(state: NodeState, service_cidr: str) -> str:
    # Inside: the bridge, its ports (veth*: bridged frames reach these hooks through br_netfilter with the port
    # as their interface) and loopback. Postrouting at priority 300 sees packets after every NAT.
    inside = f'oifname != {{ "{state.bridge}", "lo" }} oifname != "veth*"'
    outside = f'iifname != {{ "{state.bridge}", "lo" }} iifname != "veth*"'
    # The node's address (kubelet, apiserver relay) answers only the host, the bridge and the pods, whatever
    # interface a packet addressed to it comes in by.
    return f"""table inet {NFT_TABLE} {{
  chain guard {{
    type filter hook input priority 0; policy accept;
    ip daddr {gateway(state.subnet)} {outside} counter drop comment "node-address-from-outside"
  }}
  chain leak {{
    type filter hook postrouting priority 300; policy accept;
    ip saddr {state.subnet} {inside} counter drop comment "pod-range-leaving"
    ip daddr {service_cidr} counter drop comment "service-range-untranslated"
    meta nfproto ipv6 iifname "{state.bridge}" {inside} counter drop comment "pod-ip6-leaving"
    meta nfproto ipv6 iifname "veth*" {inside} counter drop comment "pod-ip6-leaving-bridged"
  }}
}}
"""


def drop_counters() -> dict[str, int]:
    """{comment: packets} of the node's nftables drop rules."""
    return parse_counters(json.loads(_sh("nft", "-j", "list", "table", "inet", NFT_TABLE)))


def parse_counters(out: dict[str, Any]) -> dict[str, int]:
    """{comment: packets} of every rule with a counter in ``nft -j list table`` output."""
    counters: dict[str, int] = {}
    for item in out.get("nftables", []):
        rule = item.get("rule")
        if not rule:
            continue
        packets = next((e["counter"]["packets"] for e in rule.get("expr", []) if "counter" in e), None)
        if packets is None:
            continue
        counters[str(rule.get("comment", rule.get("handle")))] = int(packets)
    return counters


# --------------------------------------------------------------------------------------------------- node


@dataclass
class Node:
    state: NodeState
    control_plane: ControlPlane
    images: dict[str, str]  # {"pause": ref, "test": ref}
    processes: list[ManagedProcess] = field(default_factory=list, repr=False)
    started_seconds: float = 0.0
    _down: bool = field(default=False, repr=False)

    @property
    def name(self) -> str:
        return self.state.node_name

    @property
    def ip(self) -> str:
        return gateway(self.state.subnet)

    @property
    def workdir(self) -> Path:
        return Path(self.state.workdir)

    def check_alive(self) -> None:
        for p in self.processes:
            p.check_alive()

    def rss_kib(self) -> dict[str, int]:
        """VmRSS of each component and of containerd's shims."""
        out: dict[str, int] = {}
        for p in self.processes:
            out[p.name] = _rss(p.pid)
        for pid, _ in processes_mentioning(f"-address {self.state.sock}"):
            out[f"shim-{pid}"] = _rss(pid)
        return out

    def import_images(self, archive: Path, *, timeout: float = 300) -> None:
        """Load a docker-archive (one or more images) into the node's containerd, for the kubelet to run."""
        _ctr(self.state, "-n", "k8s.io", "images", "import", "--no-unpack", str(archive), timeout=timeout)

    def down(self) -> list[str]:
        if self._down:
            return []
        self._down = True
        with contextlib.suppress(ValueError):
            atexit.unregister(self.down)
        if not self.state.path.exists():  # taken down already, from its state file (``down(workdir)``)
            for p in self.processes:
                p.stop(STOP_TIMEOUT)
            return []
        return teardown(self.state, self.processes)


def _rss(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def ensure_node_binaries() -> Path:
    d = bin_dir()
    if all(os.access(d / b, os.X_OK) for b in NODE_BINARIES):
        return d
    res = subprocess.run(["bash", str(build_script())], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise NodeError(f"build.sh failed:\n{res.stderr[-3000:]}")
    return Path(res.stdout.strip().splitlines()[-1])


def preflight(subnet: str = NODE_SUBNET) -> list[str]:
    """Why a node cannot start here (empty: it can)."""
    problems = []
    if os.geteuid() != 0:
        problems.append("needs root")
    problems += [f"{t} not found (hack/bootstrap.sh)" for t in TOOLS if shutil.which(t) is None]
    problems += [f"CNI plugin {p} missing in {CNI_BIN_DIR}" for p in ("bridge", "host-local", "loopback")
                 if not (CNI_BIN_DIR / p).is_file()]
    if not problems:
        if link_exists(BRIDGE):
            problems.append(f"interface {BRIDGE} exists (another node, or one not taken down)")
        if f"inet {NFT_TABLE}" in nft_tables():
            problems.append(f"nftables table inet {NFT_TABLE} exists")
        problems += [f"{subnet} clashes with {c}" for c in _subnet_in_use(subnet)]
    return problems


def up(control_plane: ControlPlane, workdir: Path, *, timeout: float = READY_TIMEOUT,
       log: Callable[[str], None] | None = None, apiserver_for_pods: bool = False) -> Node:
    """Start a real node; returns once it is Ready and kube-proxy is healthy. ``down()`` undoes it all.

    ``apiserver_for_pods``: pods reach the apiserver through the ``kubernetes`` Service (in-cluster clients,
    an operator installed by its chart): a TCP relay (devenv.localenv.tcprelay) on the node's address passes
    connections to the apiserver's 127.0.0.1 port, and an EndpointSlice of the ``kubernetes`` Service names it
    (the control plane runs with ``--endpoint-reconciler-type=none``; Kubernetes refuses loopback endpoints).
    The node's firewall table drops anything addressed to the node's address from outside.
    """
    say: Callable[[str], None] = log or (lambda _msg: None)
    started = time.monotonic()
    problems = preflight()
    if problems:
        raise NodeError("cannot start a real node: " + "; ".join(problems))
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    if (workdir / STATE_FILE).exists():
        raise NodeError(f"{workdir / STATE_FILE} exists: run `down --workdir {workdir}` first")
    bins = ensure_node_binaries()
    images = build_images()
    pause_ref = next(r for r in images if r.startswith(PAUSE_IMAGE))
    test_ref = next(r for r in images if r.startswith(TEST_IMAGE))

    state = record_host(workdir)
    state.kubeconfig = str(control_plane.kubeconfig)
    state.kubectl = str(control_plane.bin_dir / "kubectl")
    state.save()
    say(f"recorded {len(state.sysctls)} sysctls, {len(state.nft_tables_before)} nft tables, "
        f"{len(state.netns_before)} netns in {state.path}")
    node = Node(state=state, control_plane=control_plane,
                images={"pause": pause_ref, "test": test_ref})
    atexit.register(node.down)
    try:
        _boot(node, bins, images, started + timeout, say, apiserver_for_pods=apiserver_for_pods)
    except BaseException as e:
        try:
            node.down()
        except NodeError as down_error:
            e.add_note(f"and taking the node down again failed: {down_error}")
        raise
    node.started_seconds = time.monotonic() - started
    return node


def _boot(node: Node, bins: Path, images: dict[str, Path], deadline: float, say: Callable[[str], None], *,
          apiserver_for_pods: bool = False) -> None:
    state, cp = node.state, node.control_plane
    w = Path(state.workdir)
    for d in ("containerd", "cni", "kubelet", "pki", "logs"):
        shutil.rmtree(w / d, ignore_errors=True)
    for d in ("containerd/root", "containerd/state", "containerd/runc", "cni/net.d", "cni/ipam", "kubelet/root",
              "pki", "logs"):
        (w / d).mkdir(parents=True)

    def remaining() -> float:
        return max(deadline - time.monotonic(), 1.0)

    # network: bridge + nftables table ------------------------------------------------------------------
    gw = gateway(state.subnet)
    prefix = ipaddress.ip_network(state.subnet).prefixlen
    state.created.append("bridge")
    state.save()
    _sh("ip", "link", "add", state.bridge, "type", "bridge")
    _sh("ip", "addr", "add", f"{gw}/{prefix}", "dev", state.bridge)
    _sh("ip", "link", "set", state.bridge, "up")
    say(f"bridge {state.bridge} {gw}/{prefix}")
    state.created.append("nft")
    state.save()
    _sh("nft", "-f", "-", input=_nft_ruleset(state, SERVICE_CIDR))
    say(f"nftables table inet {NFT_TABLE} (drops pod-range packets leaving by another interface, Service-range "
        "packets left untranslated)")
    state.created.append("cgroups")
    state.save()
    for cg in cgroup_dirs():
        cg.mkdir(exist_ok=True)

    # certificates, kubeconfigs, configs ------------------------------------------------------------------
    pki = w / "pki"
    cp_pki = cp.workdir / "pki"
    for f in ("ca.crt", "ca.key", "req.cnf"):
        shutil.copy2(cp_pki / f, pki / f)
    _make_cert(pki, "kubelet", f"/O=system:nodes/CN=system:node:{state.node_name}")
    _make_cert(pki, "kubelet-serving", f"/CN={state.node_name}",
               server_sans=[f"IP:{gw}", f"DNS:{state.node_name}"])
    _make_cert(pki, "kube-proxy", "/CN=system:kube-proxy")
    write_kubeconfig(w / "kubelet.kubeconfig", cp.server, pki, "kubelet")
    write_kubeconfig(w / "kube-proxy.kubeconfig", cp.server, pki, "kube-proxy")
    (w / "resolv.conf").write_text("# nothing off the machine: no cluster DNS yet\nnameserver 127.0.0.1\n")
    (w / "cni" / "net.d" / "10-modelrollout.conflist").write_text(json.dumps(_cni_config(w, state.subnet), indent=2))
    (w / "containerd" / "config.toml").write_text(_containerd_config(w, node.images["pause"]))

    # containerd -----------------------------------------------------------------------------------------
    containerd = _start(node, "containerd", ["containerd", "--config", str(w / "containerd" / "config.toml")])

    def containerd_up() -> bool:
        containerd.check_alive()
        return _ctr(state, "version", check=False).returncode == 0

    wait_until(containerd_up, remaining(), 0.1, what="containerd to answer")
    for ref, archive in images.items():
        _ctr(state, "-n", "k8s.io", "images", "import", "--no-unpack", str(archive), timeout=120)
        say(f"imported {ref}")

    # kubelet ---------------------------------------------------------------------------------------------
    kl_port, kl_healthz = free_port(), free_port()
    (w / "kubelet" / "config.json").write_text(json.dumps(_kubelet_config(w, state, kl_port, kl_healthz), indent=2))
    kubelet = _start(node, "kubelet", [
        str(bins / "kubelet"),
        f"--config={w / 'kubelet' / 'config.json'}",
        f"--kubeconfig={w / 'kubelet.kubeconfig'}",
        f"--root-dir={w / 'kubelet' / 'root'}",
        f"--cert-dir={pki}",
        f"--hostname-override={state.node_name}",
        f"--node-ip={gw}",
        "--v=1",
    ])

    def node_ready() -> bool:
        kubelet.check_alive()
        containerd.check_alive()
        res = cp.kubectl("get", "node", state.node_name, "-o", "json", check=False)
        if res.returncode != 0:
            return False
        conds = json.loads(res.stdout).get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)

    wait_until(node_ready, remaining(), 0.2, what=f"node {state.node_name} Ready", ignore=(CommandFailed,))
    say(f"node {state.node_name} Ready")

    # kube-proxy ------------------------------------------------------------------------------------------
    kp_healthz, kp_metrics = free_port(), free_port()
    (w / "kube-proxy.json").write_text(json.dumps(_kube_proxy_config(w, state, kp_healthz, kp_metrics), indent=2))
    proxy = _start(node, "kube-proxy", [str(bins / "kube-proxy"), f"--config={w / 'kube-proxy.json'}", "--v=1"])

    def proxy_healthy() -> bool:
        proxy.check_alive()
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://{LOCALHOST}:{kp_healthz}/healthz", timeout=2) as resp:
            return bool(resp.status == 200)

    wait_until(proxy_healthy, remaining(), 0.2, what="kube-proxy /healthz", ignore=(OSError,))
    say("kube-proxy (nftables mode) healthy")
    if apiserver_for_pods:
        _apiserver_relay(node, remaining, say)


RELAY_SLICE = "kubernetes-node-relay"


def _apiserver_relay(node: Node, remaining: Callable[[], float], say: Callable[[str], None]) -> None:
    """The apiserver for pods: a relay on the node's address and the ``kubernetes`` Service's EndpointSlice."""
    state, cp = node.state, node.control_plane
    w = Path(state.workdir)
    port = int(cp.server.rsplit(":", 1)[1].rstrip("/"))
    listen = f"{gateway(state.subnet)}:{port}"
    state.apiserver_relay = listen
    operator_dir = Path(__file__).resolve().parents[2]
    relay = _start(node, "apiserver-relay", [
        sys.executable, "-m", "devenv.localenv.tcprelay", "--listen", listen, "--to", f"{LOCALHOST}:{port}",
        "--tag", str(w / "apiserver-relay")], pythonpath=operator_dir)

    def relay_listening() -> bool:
        relay.check_alive()
        host, _, p = listen.rpartition(":")
        with contextlib.suppress(OSError), socket.create_connection((host, int(p)), timeout=1):
            return True
        return False

    wait_until(relay_listening, remaining(), 0.1, what=f"apiserver relay on {listen}")
    state.created.append("endpointslice")
    state.save()
    cp.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": RELAY_SLICE, "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "kubernetes",
                                "endpointslice.kubernetes.io/managed-by": "modelrollout-node"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [gateway(state.subnet)], "conditions": {"ready": True}}],
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
    }))
    say(f"apiserver for pods: kubernetes Service -> {listen} (relay) -> {LOCALHOST}:{port}")


def _start(node: Node, name: str, argv: list[str], *, pythonpath: Path | None = None) -> ManagedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "HTTP_PROXY", "HTTPS_PROXY",
                                                             "http_proxy", "https_proxy")}
    env["KUBE_FEATURE_WatchListClient"] = "false"  # Debian etcd 3.4: see controlplane._component_env
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    p = ManagedProcess(name=name, argv=argv, log=Path(node.state.workdir) / "logs" / f"{name}.log", env=env)
    node.processes.append(p)
    p.start()
    node.state.pids[name] = p.pid
    node.state.save()
    return p


def _ctr(state: NodeState, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return run(["ctr", "--address", state.sock, *args], check=check, timeout=timeout)


# ------------------------------------------------------------------------------------------------- down


def teardown(state: NodeState, processes: Sequence[ManagedProcess] = ()) -> list[str]:
    """Undo everything ``up`` did, in order, each step bounded; returns what it did.

    Raises NodeError at the end if something could not be undone (every step is still attempted).
    """
    done: list[str] = []
    errors: list[str] = []
    w = Path(state.workdir)
    by_name = {p.name: p for p in processes}

    def step(what: str, fn: Callable[..., object], *args: object) -> None:
        try:
            result = fn(*args)
        except Exception as e:
            errors.append(f"{what}: {e}")
        else:
            if result:
                done.append(f"{what}: {result}" if result is not True else what)

    def kubectl(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
        return run([state.kubectl, f"--kubeconfig={state.kubeconfig}", *args], check=False, timeout=timeout)

    def apiserver_up() -> bool:
        return bool(state.kubectl) and kubectl("get", "--raw=/readyz", timeout=5).returncode == 0

    api = False
    with contextlib.suppress(Exception):
        api = apiserver_up()

    def drain() -> str:
        # Pods deleted through the API: the kubelet stops them and tears down their sandboxes (CNI DEL).
        kubectl("cordon", state.node_name)
        kubectl("delete", "pods", "-A", f"--field-selector=spec.nodeName={state.node_name}", "--grace-period=1",
                "--wait=false")
        kubelet = by_name.get("kubelet")

        def drained() -> bool:
            out = kubectl("get", "pods", "-A", f"--field-selector=spec.nodeName={state.node_name}", "-o", "name")
            if out.returncode != 0 or out.stdout.strip():
                return False
            if kubelet is not None and not kubelet.running:
                return True
            res = _ctr(state, "-n", "k8s.io", "tasks", "ls", "-q", check=False)
            return res.returncode != 0 or not res.stdout.strip()

        try:
            wait_until(drained, DRAIN_TIMEOUT, 0.2, what=f"pods on {state.node_name} stopped")
        except WaitTimeout:
            # A pod still in a long grace period: the steps below stop it by force, and clean up after it.
            return f"pods not drained within {DRAIN_TIMEOUT:.0f}s: the rest are stopped by force"
        return "pods drained through the API"

    if api and _alive_as(state.pids.get("kubelet", 0), "kubelet"):  # a dead kubelet stops nothing
        step("drain", drain)

    def stop(name: str) -> str | None:
        pid = state.pids.get(name)
        p = by_name.get(name)
        if p is not None and p.proc is not None:
            if p.running:
                p.stop(STOP_TIMEOUT)
                return f"stopped (pid {p.pid})"
            p.stop(STOP_TIMEOUT)
            return None
        if pid and _alive_as(pid, name):
            terminate_pid(pid, STOP_TIMEOUT)
            return f"stopped (pid {pid})"
        return None

    def relay_slice() -> str | None:
        if "endpointslice" not in state.created:
            return None
        kubectl("delete", "endpointslice", RELAY_SLICE, "-n", "default", "--ignore-not-found", "--wait=false")
        return f"deleted EndpointSlice default/{RELAY_SLICE}"

    if api:
        step("apiserver endpoint", relay_slice)
    step("apiserver-relay", stop, "apiserver-relay")
    step("kube-proxy", stop, "kube-proxy")
    step("kubelet", stop, "kubelet")

    def containers() -> str | None:
        if not _alive_as(state.pids.get("containerd", 0), "containerd"):
            return None
        ids = _ctr(state, "-n", "k8s.io", "tasks", "ls", "-q", check=False).stdout.split()
        for cid in ids:
            _ctr(state, "-n", "k8s.io", "tasks", "kill", "-s", "SIGKILL", cid, check=False)

        def none_running() -> bool:
            return "RUNNING" not in _ctr(state, "-n", "k8s.io", "tasks", "ls", check=False).stdout

        wait_until(none_running, 15, 0.1, what="containerd tasks stopped")
        for cid in ids:
            _ctr(state, "-n", "k8s.io", "tasks", "delete", cid, check=False)
        cs = _ctr(state, "-n", "k8s.io", "containers", "ls", "-q", check=False).stdout.split()
        for cid in cs:
            _ctr(state, "-n", "k8s.io", "containers", "delete", cid, check=False)
        return f"{len(ids)} tasks killed, {len(cs)} containers deleted" if ids or cs else None

    step("containers", containers)
    step("containerd", stop, "containerd")

    def shims() -> str | None:
        # The shims are containerd's children started in sessions of their own: found by the socket they name.
        left = processes_mentioning(state.sock)
        for pid, _ in left:
            terminate_pid(pid, 5)
        return f"stopped {len(left)} leftover processes" if left else None

    step("shims", shims)

    def pods() -> str | None:
        # Container processes outlive a containerd or shim that died: they are found by the cgroups made for
        # the node (cgroupRoot), which hold nothing else.
        found = cgroup_pids()
        for pid in found:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if found:
            wait_until(lambda: not cgroup_pids(), STOP_TIMEOUT, 0.05, what=f"processes in /{CGROUP_ROOT} gone")
        return f"killed {len(found)} container processes" if found else None

    if "cgroups" in state.created:
        step("container processes", pods)

    def unmount() -> str | None:
        points = mounts_under(w)
        for point in points:
            if subprocess.run(["umount", point], capture_output=True, check=False).returncode != 0:
                subprocess.run(["umount", "-l", point], capture_output=True, check=False)
        return f"unmounted {len(points)}" if points else None

    step("mounts", unmount)

    def netns() -> str | None:
        mine = [n for n in netns_entries() if n not in state.netns_before and n.startswith("cni-")]
        for n in mine:
            path = f"/run/netns/{n}"
            if subprocess.run(["umount", path], capture_output=True, check=False).returncode != 0:
                subprocess.run(["umount", "-l", path], capture_output=True, check=False)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        return f"removed {len(mine)} netns" if mine else None

    step("netns", netns)

    def bridge() -> str | None:
        if "bridge" not in state.created or not link_exists(state.bridge):
            return None
        ports = bridge_ports(state.bridge)
        for port in ports:
            subprocess.run(["ip", "link", "del", port], capture_output=True, check=False)
        _sh("ip", "link", "del", state.bridge)
        return f"deleted {state.bridge} ({len(ports)} ports)"

    step("bridge", bridge)

    def tables() -> str | None:
        gone: list[str] = []
        now = nft_tables()
        if "nft" in state.created and f"inet {NFT_TABLE}" in now:
            _sh("nft", "delete", "table", "inet", NFT_TABLE)
            gone.append(f"inet {NFT_TABLE}")
        for t in now:
            if t in state.nft_tables_before:
                continue
            if t in KUBE_PROXY_TABLES or (t in IPTABLES_TABLES and _only_kube_chains(t)):
                _sh("nft", "delete", "table", *t.split())
                gone.append(t)
        return "deleted " + ", ".join(gone) if gone else None

    step("nftables", tables)

    def cgroups() -> str | None:
        if "cgroups" not in state.created:
            return None
        removed = 0
        for top in cgroup_dirs():
            if not top.exists():
                continue
            for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                with contextlib.suppress(FileNotFoundError):
                    d.rmdir()
            top.rmdir()
            removed += 1
        return f"removed /{CGROUP_ROOT} from {removed} hierarchies" if removed else None

    step("cgroups", cgroups)

    def host_paths() -> str | None:
        removed: list[str] = []
        for p in state.absent_paths:
            if os.path.lexists(p):
                if os.path.ismount(p):
                    subprocess.run(["umount", "-l", p], capture_output=True, check=False)
                shutil.rmtree(p) if os.path.isdir(p) and not os.path.islink(p) else os.unlink(p)
                removed.append(p)
        results = Path("/var/lib/cni/results")
        if results.is_dir():
            for f in results.glob(f"{CNI_NETWORK}-*"):
                f.unlink()
                removed.append(str(f))
        return "removed " + ", ".join(removed) if removed else None

    step("host paths", host_paths)

    def sysctls() -> str | None:
        restored = []
        for name, old in state.sysctls.items():
            if read_sysctl(name) != old:
                _write_sysctl(name, old)
                restored.append(f"{name}={old}")
        if state.conntrack_hashsize is not None and _read_hashsize() != state.conntrack_hashsize:
            CONNTRACK_HASHSIZE.write_text(state.conntrack_hashsize + "\n")
            restored.append(f"nf_conntrack hashsize={state.conntrack_hashsize}")
        return "restored " + ", ".join(restored) if restored else None

    step("sysctls", sysctls)

    def node_object() -> str | None:
        if kubectl("delete", "node", state.node_name, "--ignore-not-found", "--wait=false").returncode == 0:
            return f"deleted Node {state.node_name}"
        return None

    if api:
        step("node object", node_object)

    left = leftovers(state)
    if left:
        errors.append("left behind: " + "; ".join(left))
    if errors:
        raise NodeError("down: " + "; ".join(errors) + ("\ndone: " + "; ".join(done) if done else ""))
    state.path.replace(state.path.with_name(DONE_FILE))
    return done


def _alive_as(pid: int, name: str) -> bool:
    """``pid`` is alive and still the process we started (its command line names ``name``)."""
    if not pid:
        return False
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return name.encode() in cmd and stat.rsplit(")", 1)[-1].split()[0] != "Z"


BUILTIN_CHAINS = ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING")


def _only_kube_chains(table: str) -> bool:
    """An iptables-nft table the kubelet/kube-proxy made: KUBE-* chains, and built-in chains whose every rule
    jumps to one of them (the kubelet's KUBE-FIREWALL, KUBE-KUBELET-CANARY, KUBE-IPTABLES-HINT)."""
    out = json.loads(_sh("nft", "-j", "list", "table", *table.split(), check=False) or "{}")
    return kube_only(out.get("nftables", []))


def kube_only(items: Sequence[dict[str, Any]]) -> bool:
    """``nft -j list table`` items: KUBE-* chains only, or built-in chains whose every rule jumps to one."""
    chains = [i["chain"]["name"] for i in items if "chain" in i]
    if not all(c.startswith("KUBE-") or c in BUILTIN_CHAINS for c in chains):
        return False
    for i in items:
        rule = i.get("rule")
        if rule is None or str(rule.get("chain", "")).startswith("KUBE-"):
            continue
        targets = [e[k]["target"] for e in rule.get("expr", []) for k in ("jump", "goto") if k in e]
        if not targets or not all(str(t).startswith("KUBE-") for t in targets):
            return False
    return True


def leftovers(state: NodeState) -> list[str]:
    """Everything of the node still on the host (empty after a clean ``down``)."""
    w = Path(state.workdir)
    left: list[str] = []
    # The node's processes name its configs or containerd's dirs (a `tail -f WORKDIR/logs/...` is not one of them).
    for mark in (w / "containerd", w / "kubelet", w / "kube-proxy.json", w / "apiserver-relay"):
        left += [f"process {pid}: {cmd[:120]}" for pid, cmd in processes_mentioning(str(mark))]
    left += [f"process {name} pid {pid}" for name, pid in state.pids.items() if _alive_as(pid, name)]
    left += [f"process {pid} in /{CGROUP_ROOT}" for pid in cgroup_pids()]
    left += [f"mount {m}" for m in mounts_under(w)]
    left += [f"netns {n}" for n in netns_entries() if n not in state.netns_before]
    if link_exists(state.bridge):
        left.append(f"interface {state.bridge}")
    left += [f"veth {v}" for v in veths() if v not in state.veths_before]
    tables = nft_tables()
    left += [f"nft table {t}" for t in tables if t not in state.nft_tables_before]
    left += [f"cgroup {d}" for d in cgroup_dirs() if d.exists()]
    left += [f"path {p}" for p in state.absent_paths if os.path.lexists(p)]
    results = Path("/var/lib/cni/results")
    if results.is_dir():
        left += [f"CNI cache {f}" for f in results.glob(f"{CNI_NETWORK}-*")]
    for name, old in state.sysctls.items():
        now = read_sysctl(name)
        if now != old:
            left.append(f"sysctl {name}={now} (was {old})")
    if state.conntrack_hashsize is not None and _read_hashsize() != state.conntrack_hashsize:
        left.append("nf_conntrack hashsize changed")
    return left


def veths() -> list[str]:
    return sorted(e["ifname"] for e in json.loads(_sh("ip", "-j", "link", "show", "type", "veth", check=False) or "[]"))


def down(workdir: Path) -> list[str]:
    """Take down the node recorded in ``workdir`` (another process's ``up``)."""
    path = workdir / STATE_FILE
    if not path.exists():
        return []
    return teardown(NodeState.load(workdir.resolve()))


@contextlib.contextmanager
def running(control_plane: ControlPlane, workdir: Path) -> Iterator[Node]:
    node = up(control_plane, workdir)
    try:
        yield node
    finally:
        node.down()


# ------------------------------------------------------------------------------------------------- CLI


def _control_plane_from(directory: Path) -> ControlPlane:
    directory = directory.resolve()
    kubeconfig = directory / "kubeconfig"
    if not kubeconfig.is_file():
        raise ControlPlaneError(f"no {kubeconfig}: start one with `controlplane up --dir {directory} "
                                "--kubelet-access --detach`")
    server = json.loads(kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
    return ControlPlane(workdir=directory, kubeconfig=kubeconfig, server=str(server),
                        audit_log=directory / "audit.log", bin_dir=bin_dir())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devenv.localenv.node", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="start a real node and leave it running")
    p_up.add_argument("--workdir", type=Path, required=True)
    p_up.add_argument("--controlplane-dir", type=Path, required=True)
    p_up.add_argument("--apiserver-for-pods", action="store_true",
                      help="pods reach the apiserver through the kubernetes Service (an in-cluster operator)")
    p_up.add_argument("--product-images", action="store_true",
                      help="build (or take from the cache) the operator, compat-probe and refserver images and import "
                           "them (devenv.localenv.images)")
    p_down = sub.add_parser("down", help="take down the node recorded in WORKDIR")
    p_down.add_argument("--workdir", type=Path, required=True)
    args = parser.parse_args(argv)

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    if args.command == "up":
        node = up(_control_plane_from(args.controlplane_dir), args.workdir, log=say,
                  apiserver_for_pods=args.apiserver_for_pods)
        atexit.unregister(node.down)  # the processes run on in sessions of their own
        if args.product_images:
            from devenv.localenv import images

            built = images.build_images()
            node.import_images(built.archive)
            say("imported " + ", ".join(built.refs.values()))
        say(f"node {node.name} ({node.ip}) Ready in {node.started_seconds:.1f}s; "
            f"take it down with: python -m devenv.localenv.node down --workdir {args.workdir}")
        return 0
    try:
        for line in down(args.workdir):
            say(line)
    except NodeError as e:
        say(str(e))
        return 1
    say("node down: nothing left behind")
    return 0


if __name__ == "__main__":
    sys.exit(main())
