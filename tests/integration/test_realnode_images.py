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
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devenv.localenv import images as localimages
from devenv.localenv import node as realnode
from devenv.localenv.controlplane import ControlPlane
from devenv.localenv.procs import wait_until
from devenv.localenv.prometheus import Prometheus, start_prometheus

from .kube import Kubectl, Watch, audit_events, track_pods
from .manifests import ingress, service
from .realnode import down_leaves_nothing, node_env, require_real_node

pytestmark = pytest.mark.integration

NAMESPACE = "images"
REPO = Path(__file__).resolve().parents[2]
CONTRACT = REPO / "examples" / "compat-contract.yaml"


@dataclass
class Env:
    cp: ControlPlane
    node: realnode.Node
    built: localimages.BuiltImages
    before: dict[str, object]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    require_real_node(problems=[f"{t} not found (hack/bootstrap.sh)" for t in localimages.missing_tools()])
    built = localimages.build_images()
    how = f"built in {built.seconds:.0f}s" if built.seconds else "from the cache"
    print(f"\nimages {how}: {built.archive} ({built.archive.stat().st_size / 1e6:.0f} MB)")
    with node_env(tmp_path_factory, "images", apiserver_for_pods=True) as ne:
        cp, node = ne.cp, ne.node
        started = time.monotonic()
        node.import_images(built.archive)
        print(f"images imported in {time.monotonic() - started:.1f}s")
        cp.kubectl("create", "namespace", NAMESPACE)
        wait_until(lambda: cp.kubectl("get", "sa", "default", "-n", NAMESPACE, check=False).returncode == 0,
                   30, what=f"ServiceAccount {NAMESPACE}/default")
        yield Env(cp=cp, node=node, built=built, before=ne.before)
    # containerd's content store and snapshots (the images twice, ~800 MB), once nothing is mounted there
    if not realnode.mounts_under(node.workdir):
        shutil.rmtree(node.workdir / "containerd" / "root", ignore_errors=True)


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


# ------------------------------------------------------------------------------------ the chart, installed

RELEASE = "modelrollout"
SYSTEM_NS = "modelrollout-system"
LEASE = "modelrollout-leader"  # the chart's default: "<release full name>-leader"
OPERATOR_USER = f"system:serviceaccount:{SYSTEM_NS}:{RELEASE}"
ROLLOUT = "summarize"


def _helm() -> str:
    out = subprocess.run([sys.executable, str(REPO / "hack" / "render_chart.py"), "--helm"], capture_output=True,
                         text=True, check=True, timeout=300)
    return out.stdout.strip().splitlines()[-1]


def _operator_pods(cp: ControlPlane) -> list[dict[str, Any]]:
    out = cp.kubectl("get", "pods", "-n", SYSTEM_NS, "-l", f"app.kubernetes.io/instance={RELEASE}", "-o", "json")
    return [p for p in json.loads(out.stdout)["items"] if not p["metadata"].get("deletionTimestamp")]


def _holder(cp: ControlPlane) -> str:
    res = cp.kubectl("get", "lease", LEASE, "-n", SYSTEM_NS, "-o", "json", check=False)
    return str(json.loads(res.stdout)["spec"].get("holderIdentity") or "") if res.returncode == 0 else ""


@pytest.fixture(scope="module")
def chart(env: Env, tmp_path_factory: pytest.TempPathFactory) -> Env:
    """The operator installed by its Helm chart: two replicas electing a leader, from the local image."""
    home = tmp_path_factory.mktemp("helm")
    helm_env = {**os.environ, "HELM_CACHE_HOME": str(home / "cache"), "HELM_CONFIG_HOME": str(home / "config"),
                "HELM_DATA_HOME": str(home / "data"), "KUBECONFIG": str(env.cp.kubeconfig)}
    repo, tag = env.built.refs["operator"].rsplit(":", 1)
    started = time.monotonic()
    res = subprocess.run([_helm(), "install", RELEASE, str(REPO / "charts" / "modelrollout"), "--namespace", SYSTEM_NS,
                          "--create-namespace", "--set", f"image.repository={repo}", "--set", f"image.tag={tag}",
                          "--set", "image.pullPolicy=Never", "--set", "replicas=2", "--wait", "--timeout", "180s"],
                         capture_output=True, text=True, env=helm_env, check=False, timeout=240)
    print(f"helm install: {time.monotonic() - started:.1f}s")
    if res.returncode != 0:
        pods = env.cp.kubectl("get", "pods", "-n", SYSTEM_NS, "-o", "wide", check=False).stdout
        logs = "".join(env.cp.kubectl("logs", "-n", SYSTEM_NS, p["metadata"]["name"], "--previous", "--tail=40",
                                      check=False).stdout for p in _operator_pods(env.cp)[:1])
        pytest.fail(f"helm install failed: {res.stderr}\n{pods}\n{logs}")
    return env


def test_chart_installs_two_replicas_one_leads(chart: Env) -> None:
    cp = chart.cp
    pods = _operator_pods(cp)
    assert len(pods) == 2
    for pod in pods:
        assert pod["status"]["phase"] == "Running" and _ready(pod), pod["status"]
        assert pod["spec"]["nodeName"] == chart.node.name
        assert pod["spec"]["serviceAccountName"] == RELEASE
        (container,) = pod["spec"]["containers"]
        assert container["image"] == chart.built.refs["operator"]
    names = {p["metadata"]["name"] for p in pods}
    holder = wait_until(lambda: _holder(cp) or None, 60, 0.2, what=f"Lease {LEASE} held")
    assert holder in names
    # Its own ServiceAccount and RBAC: what the operator may do, and not more (no Secrets).
    # (promotion by role: NAME-stable's selector patched, the previous stable's Deployment deleted)
    asked = (("patch", "deployments.apps"), ("delete", "deployments.apps"), ("patch", "services"),
             ("patch", "ingresses.networking.k8s.io"), ("get", "secrets"))
    can = [cp.kubectl("auth", "can-i", verb, res, f"--as={OPERATOR_USER}", "-A", check=False).stdout.strip()
           for verb, res in asked]
    assert can == ["yes", "yes", "yes", "yes", "no"]


def _rollout(cp: ControlPlane, prom: Prometheus, refs: dict[str, str], version: str) -> str:
    model = {"name": "model", "image": refs["refserver"], "args": ["--host", "0.0.0.0", "--port", "8080",
                                                                    "--version", version],
             "ports": [{"containerPort": 8080}],
             "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1}}
    spec = {
        "replicas": 2,
        "selector": {"matchLabels": {"app": ROLLOUT}},
        "template": {"metadata": {"labels": {"app": ROLLOUT}},
                     "spec": {"terminationGracePeriodSeconds": 2, "containers": [model]}},
        "traffic": {"service": {"name": ROLLOUT}, "ingress": {"name": ROLLOUT}},
        "compatProbe": {"contract": {"name": "contract"}, "image": refs["compat-probe"], "interval": "1s"},
        "analysis": {"interval": "2s", "prometheus": {"address": prom.url},
                     "inconclusive": {"limit": 60, "action": "pause"}},
        "strategy": {"canary": {"steps": [{"setWeight": 50}, {"approval": {"reason": "real node"}},
                                          {"setWeight": 100}]}},
        "progressDeadlineSeconds": 300,
    }
    return json.dumps({"apiVersion": "modelrollout.io/v1alpha1", "kind": "ModelRollout",
                       "metadata": {"name": ROLLOUT}, "spec": spec})


def _sync_targets(k: Kubectl, prom: Prometheus) -> None:
    """Prometheus scrapes the compat-probe sidecar of every running pod of the rollout (on its pod IP)."""
    pods = json.loads(k.run("get", "pods", "-l", f"app={ROLLOUT}", "-o", "json"))["items"]
    prom.set_targets([(f"{p['status']['podIP']}:9109", {}) for p in pods
                      if p["status"].get("phase") == "Running" and p["status"].get("podIP")])


def _audit_pod_names(cp: ControlPlane, namespace: str, resource: str, name: str) -> list[tuple[str, str]]:
    """(verb, operator pod) of each successful write to one object: bound ServiceAccount tokens name their pod."""
    return [(ev["verb"], (ev["user"].get("extra") or {}).get("authentication.kubernetes.io/pod-name", ["?"])[0])
            for ev in audit_events(cp, namespace, resource, name)]


def test_rollout_with_the_compat_probe_sidecar_survives_the_leader_pod_deleted(
        chart: Env, tmp_path_factory: pytest.TempPathFactory) -> None:
    cp, refs = chart.cp, chart.built.refs
    prom = start_prometheus(tmp_path_factory.mktemp("images-prom"), host=chart.node.ip)
    try:
        ns = "chart-rollout"
        cp.kubectl("create", "namespace", ns)
        wait_until(lambda: cp.kubectl("get", "sa", "default", "-n", ns, check=False).returncode == 0, 30,
                   what=f"ServiceAccount {ns}/default")
        k = Kubectl(cp, ns)
        cp.kubectl("create", "configmap", "contract", "-n", ns, f"--from-file=contract.yaml={CONTRACT}")
        k.apply(service(ROLLOUT) + "\n---\n" + ingress(ROLLOUT, f"{ROLLOUT}-stable"))
        started = time.monotonic()
        k.apply(_rollout(cp, prom, refs, "v1"))
        first = k.wait(ROLLOUT, lambda s: s.get("phase") == "Succeeded", 180, "first release Succeeded")
        print(f"first release Succeeded in {time.monotonic() - started:.1f}s")

        with Watch(k, ["ingress", "-l", "modelrollout.io/track=canary"],
                   "{.metadata.annotations.nginx\\.ingress\\.kubernetes\\.io/canary-weight}") as w:
            k.apply(_rollout(cp, prom, refs, "v2-compatible"))

            def at_gate(s: dict[str, Any]) -> bool:
                _sync_targets(k, prom)
                return s.get("phase") == "AwaitingApproval"

            st = k.wait(ROLLOUT, at_gate, 240, "canary at the approval gate")
            print(f"canary at the approval gate in {time.monotonic() - started:.1f}s: {st.get('message')}")
            assert st["currentWeight"] == 50 and st["currentStep"] == 1

            # real canary pods, each with the injected compat-probe container, running and ready
            canary = track_pods(k, ROLLOUT, "canary")
            assert canary
            for pod in canary:
                names = [c["name"] for c in pod["spec"]["containers"]]
                assert names == ["model", "compat-probe"], names
                assert pod["status"]["phase"] == "Running" and _ready(pod)
                assert {c["name"] for c in pod["status"]["containerStatuses"] if c["ready"]} == set(names)
            # the canary's sidecars score it; Prometheus scrapes them on their pod IPs; the leader reads it there
            def probe_passes(s: dict[str, Any]) -> bool:
                _sync_targets(k, prom)
                m = next((m for m in s.get("analysis") or [] if m.get("name") == "api-compatibility"), {})
                return bool(m.get("verdict") == "Pass" and m.get("value") == 1.0)

            k.wait(ROLLOUT, probe_passes, 120, "api-compatibility passing on the canary's real score")

            # the leader pod deleted (graceful: it releases the Lease): the other replica takes over
            leader = _holder(cp)
            pods_before = {p["metadata"]["name"] for p in _operator_pods(cp)}
            assert leader in pods_before
            cp.kubectl("delete", "pod", leader, "-n", SYSTEM_NS, "--wait=false")
            new = wait_until(lambda: (h := _holder(cp)) and h != leader and h, 60, 0.2,
                             what="another replica holding the Lease")
            # the standby, as a rule (it retries every 2 s while the replacement pod is still starting)
            print(f"Lease: {leader} -> {new} ({'the standby' if new in pods_before else 'the replacement pod'})")
            same = k.status(ROLLOUT)
            assert (same["phase"], same["currentStep"], same["currentWeight"]) == ("AwaitingApproval", 1, 50)
            assert same["approval"]["token"] == st["approval"]["token"]

            k.annotate(ROLLOUT, "modelrollout.io/approve", st["approval"]["token"])
            done = k.wait(ROLLOUT, lambda s: s.get("phase") == "Succeeded"
                          and s.get("stableRevision") != first["stableRevision"], 240, "the rollout Succeeded")
        assert w.distinct() == ["50", "100"], "every weight, in order"
        assert any(h["outcome"] == "Approved" for h in done["history"])

        # one write per weight (50 by the first leader, 100 by the second), then the canary Ingress deleted
        def deleted() -> list[tuple[str, str]] | None:
            found = _audit_pod_names(cp, ns, "ingresses", f"{ROLLOUT}-canary")
            return found if found and found[-1][0] == "delete" else None

        writes = wait_until(deleted, 60, 0.2, what="the canary Ingress deleted (audit log)")
        assert [v for v, _ in writes] == ["patch", "patch", "delete"], writes
        assert writes[0][1] == leader and {p for _, p in writes[1:]} == {new}, writes
    finally:
        prom.stop()


def test_drop_counters_stayed_zero(env: Env) -> None:
    counters = realnode.drop_counters()
    assert counters and counters == dict.fromkeys(counters, 0), counters


def test_down_leaves_nothing(env: Env) -> None:
    down_leaves_nothing(env.node, env.before)
