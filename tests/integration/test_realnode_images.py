"""The product images, built without Docker (devenv.localenv.images), run on a real node.

A control plane of its own and a real node (devenv.localenv.node) with the apiserver reachable from pods; the
images are built (or taken from the cache) and imported into the node's containerd. Each image runs as the
chart runs the operator (user 65532, read-only root filesystem, an emptyDir on /tmp) and does its job: the
reference model server answers its predict and health endpoints on its pod IP, the compat-probe beside it
replays the contract against it and serves its metrics, the operator image runs the operator's entry point.
Needs root and the packages hack/bootstrap.sh installs (mmdebstrap among them).

The tests run in file order and share one node: the last one takes it down and checks nothing is left.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devenv.localenv import images as localimages
from devenv.localenv import node as realnode
from devenv.localenv.controlplane import ControlPlane, ControlPlaneError, ensure_binaries, start_control_plane
from devenv.localenv.procs import wait_until

from .test_realnode import host_snapshot

pytestmark = pytest.mark.integration

NAMESPACE = "images"
CONTRACT = Path(__file__).resolve().parents[2] / "examples" / "compat-contract.yaml"


@dataclass
class Env:
    cp: ControlPlane
    node: realnode.Node
    built: localimages.BuiltImages
    before: dict[str, object]


def _unavailable() -> list[str]:
    problems = realnode.preflight()
    problems += [f"{t} not found (hack/bootstrap.sh)" for t in localimages.missing_tools()]
    try:
        ensure_binaries()
        realnode.ensure_node_binaries()
    except (ControlPlaneError, realnode.NodeError) as e:
        problems.append(str(e))
    return problems


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    problems = _unavailable()
    if problems:
        reason = "real node unavailable: " + "; ".join(problems)
        if os.environ.get("MODELROLLOUT_REQUIRE_CLUSTER") == "1":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    built = localimages.build_images()
    how = f"built in {built.seconds:.0f}s" if built.seconds else "from the cache"
    print(f"\nimages {how}: {built.archive} ({built.archive.stat().st_size / 1e6:.0f} MB)")
    cp = start_control_plane(tmp_path_factory.mktemp("images-cp"), nodes=0, kubelet_access=True)
    workdir = tmp_path_factory.mktemp("images-node")
    before = host_snapshot(workdir)
    try:
        node = realnode.up(cp, workdir, apiserver_for_pods=True)
        try:
            started = time.monotonic()
            node.import_images(built.archive)
            print(f"node up in {node.started_seconds:.1f}s; images imported in {time.monotonic() - started:.1f}s")
            cp.kubectl("create", "namespace", NAMESPACE)
            wait_until(lambda: cp.kubectl("get", "sa", "default", "-n", NAMESPACE, check=False).returncode == 0,
                       30, what=f"ServiceAccount {NAMESPACE}/default")
            yield Env(cp=cp, node=node, built=built, before=before)
        finally:
            node.down()
    finally:
        cp.stop()


def _get(url: str, body: dict[str, Any] | None = None) -> tuple[int, str]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never an environment proxy
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    with opener.open(req, timeout=5) as resp:
        return int(resp.status), resp.read().decode()


# The chart's pod and container security settings (charts/modelrollout/templates/deployment.yaml).
POD_SECURITY = {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                "seccompProfile": {"type": "RuntimeDefault"}}
CONTAINER_SECURITY = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
                      "capabilities": {"drop": ["ALL"]}}


def _container(name: str, image: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": image, "imagePullPolicy": "Never", "securityContext": CONTAINER_SECURITY,
            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}], **extra}


def _pod(name: str, containers: list[dict[str, Any]], *, restart: str = "Always",
         volumes: list[dict[str, Any]] = ()) -> str:  # type: ignore[assignment]
    return json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"securityContext": POD_SECURITY, "restartPolicy": restart, "terminationGracePeriodSeconds": 2,
                 "enableServiceLinks": False, "containers": containers,
                 "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}, *volumes]},
    })


def _pod_json(cp: ControlPlane, name: str) -> dict[str, Any]:
    return dict(json.loads(cp.kubectl("get", "pod", name, "-n", NAMESPACE, "-o", "json").stdout))


def _ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))


def test_images_are_built_once_per_input(env: Env) -> None:
    """Same inputs, same archive (not rebuilt); the tag is the hash of the inputs and names all three images."""
    again = localimages.build_images()
    assert again.archive == env.built.archive and again.seconds == 0.0
    assert env.built.tag == localimages.app_key()
    assert set(env.built.refs) == {"operator", "compat-probe", "refserver"}
    assert all(ref.endswith(f":{env.built.tag}") for ref in env.built.refs.values())
    listed = realnode._ctr(env.node.state, "-n", "k8s.io", "images", "ls", "-q").stdout.split()
    assert set(env.built.refs.values()) <= set(listed)


def test_refserver_and_compat_probe_answer_on_the_pod_ip(env: Env) -> None:
    cp, refs = env.cp, env.built.refs
    cp.kubectl("create", "configmap", "contract", "-n", NAMESPACE, f"--from-file=contract.yaml={CONTRACT}")
    probe = _container("compat-probe", refs["compat-probe"], args=[
        "--target", "http://127.0.0.1:8080", "--contract", "/contract/contract.yaml", "--interval", "1",
        "--listen", "0.0.0.0:9109", "--rollout", "images", "--track", "stable", "--revision", "v1"],
        volumeMounts=[{"name": "tmp", "mountPath": "/tmp"}, {"name": "contract", "mountPath": "/contract"}],
        ports=[{"containerPort": 9109}])
    model = _container("model", refs["refserver"], ports=[{"containerPort": 8080}],
                       readinessProbe={"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1})
    started = time.monotonic()
    cp.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=_pod(
        "model", [model, probe], volumes=[{"name": "contract", "configMap": {"name": "contract"}}]))

    def ready() -> dict[str, Any] | None:
        env.node.check_alive()
        pod = _pod_json(cp, "model")
        return pod if pod["status"].get("phase") == "Running" and _ready(pod) else None

    pod = wait_until(ready, 120, 0.2, what="the model pod Running and Ready")
    print(f"refserver + compat-probe pod Ready in {time.monotonic() - started:.1f}s")
    assert pod["spec"]["nodeName"] == env.node.name
    ip = pod["status"]["podIP"]

    assert _get(f"http://{ip}:8080/healthz")[0] == 200
    code, body = _get(f"http://{ip}:8080/v1/predict", {"text": "the delivery was quick"})
    answer = json.loads(body)
    assert code == 200 and answer["code"] == 0 and answer["data"]["model_version"] == "v1"
    assert answer["data"]["label"] in ("positive", "negative", "neutral")

    # The sidecar replays the contract against the server (each check passes: v1 is what the contract says) and
    # serves the score on the pod IP.
    def scored() -> float | None:
        _, text = _get(f"http://{ip}:9109/metrics")
        for line in text.splitlines():
            if line.startswith("model_api_compatibility_score{"):
                return float(line.rsplit(" ", 1)[1])
        return None

    score = wait_until(scored, 60, 0.5, what="the compat-probe's score on its pod IP", ignore=(OSError,))
    assert score == 1.0


def test_operator_image_runs_the_operator_entry_point(env: Env) -> None:
    """`modelrollout run` is the entrypoint: with --help it prints the operator's usage and exits 0, as user
    65532 on a read-only root filesystem."""
    cp = env.cp
    cp.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=_pod(
        "operator-help", [_container("operator", env.built.refs["operator"], args=["--help"])], restart="Never"))

    def done() -> dict[str, Any] | None:
        env.node.check_alive()
        pod = _pod_json(cp, "operator-help")
        return pod if pod["status"].get("phase") in ("Succeeded", "Failed") else None

    pod = wait_until(done, 120, 0.2, what="the operator-help pod to finish")
    logs = cp.kubectl("logs", "-n", NAMESPACE, "operator-help").stdout
    assert pod["status"]["phase"] == "Succeeded", logs
    assert "--leader-elect" in logs and "usage:" in logs
