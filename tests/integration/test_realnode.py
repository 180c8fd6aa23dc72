"""A real node (containerd + runc + bridge CNI + kubelet + kube-proxy) beside a control plane of its own.

Real pods answer real requests from the host, on their pod IPs and through a ClusterIP Service (kube-proxy);
no packet leaves the machine (the node's nftables drop counters stay 0); after ``down()`` nothing is left and
every host setting it touched has its old value. Needs root and the packages hack/bootstrap.sh installs.

The tests run in file order and share one node: the last one takes it down.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from devenv.localenv import node as realnode
from devenv.localenv.controlplane import ControlPlane, ControlPlaneError, ensure_binaries, start_control_plane
from devenv.localenv.procs import WaitTimeout, free_port, wait_until

pytestmark = pytest.mark.integration

NAMESPACE = "realnode"
REPLICAS = 2


@dataclass
class Env:
    cp: ControlPlane
    node: realnode.Node
    before: dict[str, object]  # the host as this test module saw it before the node came up


def host_snapshot(workdir: Path) -> dict[str, object]:
    """What the node may change, read independently of the node module's own record."""
    sysctls = {}
    for name in realnode.SYSCTLS:
        path = Path("/proc/sys") / name.replace(".", "/")
        if path.exists():
            sysctls[name] = path.read_text().strip()
    return {
        "sysctls": sysctls,
        "hashsize": realnode.CONNTRACK_HASHSIZE.read_text().strip() if realnode.CONNTRACK_HASHSIZE.exists() else None,
        "nft_tables": sorted(realnode.nft_tables()),
        "netns": realnode.netns_entries(),
        "bridge": realnode.link_exists(realnode.BRIDGE),
        "paths": {p: os.path.lexists(p) for p in realnode.HOST_PATHS},
        "cgroups": [str(d) for d in realnode.cgroup_dirs() if d.exists()],
        "mounts": realnode.mounts_under(workdir),
    }


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    problems = realnode.preflight()
    try:
        ensure_binaries()
        realnode.ensure_node_binaries()
    except (ControlPlaneError, realnode.NodeError) as e:
        problems.append(str(e))
    if problems:
        reason = "real node unavailable: " + "; ".join(problems)
        if os.environ.get("MODELROLLOUT_REQUIRE_CLUSTER") == "1":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    cp = start_control_plane(tmp_path_factory.mktemp("realnode-cp"), nodes=0, kubelet_access=True)
    workdir = tmp_path_factory.mktemp("realnode")
    before = host_snapshot(workdir)
    try:
        node = realnode.up(cp, workdir)
        print(f"\nnode up in {node.started_seconds:.1f}s; RSS KiB {node.rss_kib()}")
        try:
            yield Env(cp=cp, node=node, before=before)
        finally:
            node.down()
    finally:
        cp.stop()


SERVER = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: %(replicas)d
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      enableServiceLinks: false
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: %(image)s
        imagePullPolicy: Never
        command: ["/bin/sh", "-c", "echo $POD_NAME > /www/index.html && exec httpd -f -v -p 8080 -h /www"]
        env:
        - name: POD_NAME
          valueFrom: {fieldRef: {fieldPath: metadata.name}}
        ports: [{containerPort: 8080}]
        readinessProbe:
          httpGet: {path: /index.html, port: 8080}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
"""


def test_images_are_cached(env: Env) -> None:
    """The pause and test images are built once per input (pause.c, busybox, recipe): a second call reuses them."""
    first = realnode.build_images()
    mtimes = {ref: path.stat().st_mtime_ns for ref, path in first.items()}
    assert set(first) == set(env.node.images.values())
    assert realnode.build_images() == first
    assert {ref: path.stat().st_mtime_ns for ref, path in first.items()} == mtimes


def _get(url: str) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never an environment proxy
    with opener.open(url, timeout=3) as resp:
        return str(resp.read().decode().strip())


def test_real_pods_answer_on_pod_ip_and_cluster_ip(env: Env) -> None:
    cp = env.cp
    cp.kubectl("create", "namespace", NAMESPACE)
    wait_until(lambda: cp.kubectl("get", "sa", "default", "-n", NAMESPACE, check=False).returncode == 0, 30,
               what="ServiceAccount realnode/default")
    started = time.monotonic()
    cp.kubectl("apply", "-n", NAMESPACE, "-f", "-",
               input=SERVER % {"replicas": REPLICAS, "image": env.node.images["test"]})

    def ready_pods() -> list[dict[str, object]] | None:
        env.node.check_alive()
        items = json.loads(cp.kubectl("get", "pods", "-n", NAMESPACE, "-l", "app=web", "-o", "json").stdout)["items"]
        ready = [p for p in items if p["status"].get("phase") == "Running" and any(
            c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))]
        return ready if len(ready) == REPLICAS else None

    pods = wait_until(ready_pods, 90, 0.2, what=f"{REPLICAS} web pods Running and Ready")
    print(f"{REPLICAS} real pods Ready in {time.monotonic() - started:.1f}s")

    names = set()
    for pod in pods:
        meta, status, spec = pod["metadata"], pod["status"], pod["spec"]
        assert isinstance(meta, dict) and isinstance(status, dict) and isinstance(spec, dict)
        assert spec["nodeName"] == env.node.name
        ip = status["podIP"]
        assert ip != env.node.ip and ip.startswith(env.node.ip.rsplit(".", 1)[0] + ".")  # from the bridge's /24
        assert _get(f"http://{ip}:8080/index.html") == meta["name"]  # a real request on the pod IP
        names.add(meta["name"])

    svc = json.loads(cp.kubectl("get", "service", "web", "-n", NAMESPACE, "-o", "json").stdout)
    cluster_ip = svc["spec"]["clusterIP"]
    seen: set[str] = set()

    def both_answered_through_service() -> bool:
        seen.add(_get(f"http://{cluster_ip}/index.html"))  # through kube-proxy's DNAT
        return seen >= names

    wait_until(both_answered_through_service, 30, 0.05, what=f"both pods answering on {cluster_ip}",
               ignore=(OSError,))
    assert seen == names

    # The apiserver reaches the kubelet (InternalIP, its own client certificate): exec and logs work.
    some = sorted(names)[0]
    assert cp.kubectl("exec", "-n", NAMESPACE, some, "--", "cat", "/www/index.html").stdout.strip() == some
    assert "response:200" in cp.kubectl("logs", "-n", NAMESPACE, some).stdout

    # (busybox-static's `wget -T` segfaults: the kubectl timeout bounds it instead.)
    # Pod to pod, on the bridge and through the Service (kube-proxy in the pod's path): bridged traffic stays
    # inside too (the drop counters below).
    other = sorted(names)[1]
    other_ip = next(p["status"]["podIP"] for p in pods if p["metadata"]["name"] == other)  # type: ignore[index]
    for url in (f"http://{other_ip}:8080/index.html", f"http://{cluster_ip}/index.html"):
        out = cp.kubectl("exec", "-n", NAMESPACE, some, "--", "wget", "-q", "-O", "-", url).stdout
        assert out.strip() in names


def test_drop_counters_stayed_zero(env: Env) -> None:
    counters = realnode.drop_counters()
    assert set(counters) == {"pod-range-leaving", "service-range-untranslated", "pod-ip6-leaving",
                             "pod-ip6-leaving-bridged", "node-address-from-outside"}
    assert counters == dict.fromkeys(counters, 0)


def test_down_leaves_nothing_and_restores_the_host(env: Env) -> None:
    workdir = env.node.workdir
    during = host_snapshot(workdir)
    assert during["bridge"]
    assert during["mounts"], "the kubelet and containerd mounted nothing under the workdir?"
    ports = realnode.bridge_ports()  # the pods' veths (host side)
    assert len(ports) >= REPLICAS

    done = env.node.down()
    print("down: " + "; ".join(done))

    state = realnode.NodeState.load_done(workdir)
    assert realnode.leftovers(state) == []
    after = host_snapshot(workdir)
    assert after == env.before
    assert not realnode.processes_mentioning(str(workdir))
    assert not set(ports) & set(realnode.veths())
    assert not Path("/var/lib/cni/results").is_dir() or not list(
        Path("/var/lib/cni/results").glob(f"{realnode.CNI_NETWORK}-*"))
    assert env.cp.kubectl("get", "node", realnode.NODE_NAME, check=False).returncode != 0
    # What the kubelet and the CNI are known to change was really changed, and is back.
    assert state.sysctls == env.before["sysctls"]


def test_an_up_that_fails_leaves_nothing(env: Env, tmp_path: Path) -> None:
    """A kubelet that never registers (its apiserver address leads nowhere): ``up`` gives up within its bound,
    takes down what it had started and says why."""
    nowhere = dataclasses.replace(env.cp, server=f"https://127.0.0.1:{free_port()}")
    before = host_snapshot(tmp_path)
    started = time.monotonic()
    with pytest.raises(WaitTimeout, match="Ready"):
        realnode.up(nowhere, tmp_path, timeout=10)
    assert time.monotonic() - started < 60
    assert realnode.leftovers(realnode.NodeState.load_done(tmp_path)) == []
    assert host_snapshot(tmp_path) == before


def test_down_after_a_crash_leaves_nothing(env: Env, tmp_path: Path) -> None:
    """kubelet, kube-proxy and containerd SIGKILLed with pods running (no drain, no CNI DEL, shims and
    containers orphaned): ``down`` from the state file alone (as another process would) still leaves nothing."""
    before = host_snapshot(tmp_path)
    node = realnode.up(env.cp, tmp_path)  # the Deployment of the first test lands on it again
    try:
        def running() -> bool:
            out = env.cp.kubectl("get", "pods", "-n", NAMESPACE, "-l", "app=web", "-o", "json").stdout
            items = json.loads(out)["items"]
            return bool(sum(p["status"].get("phase") == "Running" for p in items) == REPLICAS)

        wait_until(running, 90, 0.2, what=f"{REPLICAS} web pods Running on the second node")
        assert realnode.cgroup_pids(), "no container processes in the node's cgroups?"
        for name in ("kube-proxy", "kubelet", "containerd"):
            os.kill(node.state.pids[name], 9)
        for p in node.processes:
            p.proc.wait(10)  # type: ignore[union-attr]

        done = realnode.down(tmp_path)
        print("down after a crash: " + "; ".join(done))
        state = realnode.NodeState.load_done(tmp_path)
        assert realnode.leftovers(state) == []
        assert host_snapshot(tmp_path) == before
    finally:
        node.down()
