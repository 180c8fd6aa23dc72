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
from pathlib import Path

import pytest

from devenv.localenv import node as realnode
from devenv.localenv.procs import WaitTimeout, free_port, wait_until

from .realnode import NodeEnv, down_leaves_nothing, host_snapshot, node_env, require_real_node

pytestmark = pytest.mark.integration

NAMESPACE = "realnode"
REPLICAS = 2


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeEnv]:
    require_real_node()
    with node_env(tmp_path_factory, "realnode") as e:
        yield e


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


def test_images_are_cached(env: NodeEnv) -> None:
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


def test_real_pods_answer_on_pod_ip_and_cluster_ip(env: NodeEnv) -> None:
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


def test_drop_counters_stayed_zero(env: NodeEnv) -> None:
    counters = realnode.drop_counters()
    assert set(counters) == {"pod-range-leaving", "service-range-untranslated", "pod-ip6-leaving",
                             "pod-ip6-leaving-bridged", "node-address-from-outside"}
    assert counters == dict.fromkeys(counters, 0)


def test_down_leaves_nothing_and_restores_the_host(env: NodeEnv) -> None:
    workdir = env.node.workdir
    during = host_snapshot(workdir)
    assert during["bridge"]
    assert during["mounts"], "the kubelet and containerd mounted nothing under the workdir?"
    ports = realnode.bridge_ports()  # the pods' veths (host side)
    assert len(ports) >= REPLICAS

    state = down_leaves_nothing(env.node, env.before)
    assert not set(ports) & set(realnode.veths())
    assert not Path("/var/lib/cni/results").is_dir() or not list(
        Path("/var/lib/cni/results").glob(f"{realnode.CNI_NETWORK}-*"))
    assert env.cp.kubectl("get", "node", realnode.NODE_NAME, check=False).returncode != 0
    # What the kubelet and the CNI are known to change was really changed, and is back.
    assert state.sysctls == env.before["sysctls"]


def test_an_up_that_fails_leaves_nothing(env: NodeEnv, tmp_path: Path) -> None:
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


def test_down_after_a_crash_leaves_nothing(env: NodeEnv, tmp_path: Path) -> None:
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
