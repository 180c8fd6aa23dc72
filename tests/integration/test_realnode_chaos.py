"""A fault drill on a real node: Chaos Mesh (hack/chaosmesh/build.sh) kills a real canary pod while requests flow,
and the rollout's status says what the analysis saw meanwhile.

A control plane of its own with a real node (devenv.localenv.node: containerd, runc, bridge CNI, kubelet,
kube-proxy); the ModelRollout's pods are real busybox httpd servers answering with their pod name. The test's
client sends bounded requests to the canary Service's ClusterIP (kube-proxy's DNAT on the host) and exports what
it got as counters on 127.0.0.1 (requests by outcome, answers by pod); the run's Prometheus scrapes them and the
analysis judges the canary's error ratio and how many canary pods answered in the last 3 s at every interval,
during the drill too. The drill waits for approval, so the client is already sending when Chaos Mesh kills a
canary pod. Killing one of two canary pods fails no request; killing the only canary pod of a server that takes
5 s to start fails requests until its replacement is up: the analysis sees it and the rollout rolls back.

Only 127.0.0.1 and the node's bridge are used; the node's nftables drop counters stay 0; nothing is left.
"""

from __future__ import annotations

import json
import socketserver
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from devenv.localenv import chaosmesh
from devenv.localenv import node as realnode
from devenv.localenv.chaosmesh import ChaosMesh
from devenv.localenv.controlplane import ControlPlane
from devenv.localenv.procs import LOCALHOST, wait_until
from devenv.localenv.prometheus import Prometheus

from .conftest import running, running_operator
from .kube import Json, Kubectl, audit_events, track_pods
from .manifests import service
from .realnode import node_env, require_real_node
from .test_chaos_drills import experiments, ts
from .test_chaos_mesh_real import pod_deletes

pytestmark = pytest.mark.integration

NAMESPACE = "chaosnode"
NAME = "web"
REPLICAS = 4  # weight 50: two canary pods, so the canary Service keeps an endpoint through the kill
APPROVE = "modelrollout.io/approve"
ERROR_RATIO = (f'sum(rate(drill_client_requests_total{{rollout="{NAME}",outcome="error"}}[5s])) / '
               f'sum(rate(drill_client_requests_total{{rollout="{NAME}"}}[5s]))')
PODS_ANSWERING = f'count(increase(drill_client_answers_total{{rollout="{NAME}"}}[3s]) > 0)'
MAX_REQUESTS = 20000
"""Bound of the client's loop (about 20 requests a second for the few minutes a run takes)."""


@dataclass
class Env:
    cp: ControlPlane
    node: realnode.Node
    chaos: ChaosMesh


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    bins = require_real_node("real node or Chaos Mesh", builds=["chaosmesh"])
    chaos_dir = tmp_path_factory.mktemp("chaosnode-chaos-mesh")
    with node_env(tmp_path_factory, "chaosnode", crd=True) as ne, \
            running(ChaosMesh(ne.cp, bins["chaosmesh"], chaos_dir)) as cm:
        yield Env(cp=ne.cp, node=ne.node, chaos=cm)
    assert realnode.leftovers(realnode.NodeState.load_done(ne.node.workdir)) == []


def server_rollout(image: str, revision: str, analysis: dict[str, Any] | None, *, replicas: int = REPLICAS,
                   weight: int = 50, load_seconds: int = 0) -> str:
    """ModelRollout ``web``: busybox httpd answering its pod name, after ``load_seconds`` (a model server loading
    its model); the drill at ``weight`` waits for approval."""
    kill = {"kind": "PodChaos", "spec": {"action": "pod-kill", "mode": "one"}, "duration": "8s",
            "approval": {"reason": "kill a canary pod while requests flow"}}
    return json.dumps({"apiVersion": "modelrollout.io/v1alpha1", "kind": "ModelRollout", "metadata": {"name": NAME},
                       "spec": {
        "replicas": replicas, "selector": {"matchLabels": {"app": NAME}},
        "template": {"metadata": {"labels": {"app": NAME}}, "spec": {
            "enableServiceLinks": False, "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "web", "image": image, "imagePullPolicy": "Never",
                "command": ["/bin/sh", "-c", f"sleep {load_seconds} && echo $POD_NAME > /www/index.html && "
                            "exec httpd -f -p 8080 -h /www"],
                "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "REVISION", "value": revision}],
                "ports": [{"containerPort": 8080}],
                "readinessProbe": {"httpGet": {"path": "/index.html", "port": 8080}, "periodSeconds": 1}}]}},
        "traffic": {"service": {"name": NAME}},
        **({"analysis": analysis} if analysis else {}),
        "strategy": {"canary": {"steps": [{"setWeight": weight}, {"chaos": kill}, {"setWeight": 100}]}}}})


class _Quiet(BaseHTTPRequestHandler):
    counts: Counter[str]
    by_pod: Counter[str]
    armed: threading.Event

    def do_GET(self) -> None:
        lines = [f'drill_client_requests_total{{rollout="{NAME}",outcome="{o}"}} {self.counts[o]}\n'
                 for o in ("ok", "error")]
        lines += [f'drill_client_answers_total{{rollout="{NAME}",pod="{pod}"}} {n}\n'
                  for pod, n in sorted(self.by_pod.items())]
        body = "".join(lines) if self.armed.is_set() else ""
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    def server_bind(self) -> None:  # no socket.getfqdn(): that is a reverse-DNS query
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = LOCALHOST, self.server_address[1]


@dataclass
class Client:
    """Requests to ``url`` one after another (1 s timeout each, at most MAX_REQUESTS), which pod answered when,
    and the ok/error counters served for Prometheus on 127.0.0.1. The counters count, and are served, from
    ``arm()`` on (before that: no series, which the analysis takes as no data)."""

    url: str
    counts: Counter[str] = field(default_factory=Counter)
    by_pod: Counter[str] = field(default_factory=Counter)
    answers: list[tuple[float, str]] = field(default_factory=list)  # (time, pod name or the error)
    _stop: threading.Event = field(default_factory=threading.Event)
    _armed: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        handler = type("Handler", (_Quiet,), {"counts": self.counts, "by_pod": self.by_pod, "armed": self._armed})
        self.server = _Server((LOCALHOST, 0), handler)
        self.address = f"{LOCALHOST}:{self.server.server_address[1]}"
        self._threads = [threading.Thread(target=self.server.serve_forever, daemon=True),
                         threading.Thread(target=self._send, daemon=True)]

    def _send(self) -> None:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never an environment proxy
        for _ in range(MAX_REQUESTS):
            if self._stop.wait(0.05):
                return
            try:
                with opener.open(self.url, timeout=1) as resp:
                    name = resp.read().decode().strip()
                outcome = "ok"
            except OSError as e:
                name, outcome = f"error: {e}", "error"
            self.answers.append((time.time(), name))
            if self._armed.is_set():
                self.counts[outcome] += 1
                if outcome == "ok":
                    self.by_pod[name] += 1

    def arm(self) -> None:
        self._armed.set()

    def __enter__(self) -> Client:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()
        for t in self._threads:
            t.join(10)

    def names(self, since: float = 0, until: float = float("inf")) -> set[str]:
        return {n for t, n in list(self.answers) if since <= t <= until and not n.startswith("error")}


def pods(k: Kubectl, track: str) -> dict[str, str]:
    """{name: uid} of ``track``'s pods that run and are Ready."""
    return {p["metadata"]["name"]: p["metadata"]["uid"] for p in track_pods(k, NAME, track)
            if not p["metadata"].get("deletionTimestamp") and p["status"].get("phase") == "Running"
            and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))}


def test_chaos_mesh_kills_a_real_canary_pod_while_requests_flow(env: Env, prometheus: Prometheus,
                                                               tmp_path: Path) -> None:
    cp = env.cp
    cp.kubectl("create", "namespace", NAMESPACE)
    wait_until(lambda: cp.kubectl("get", "sa", "default", "-n", NAMESPACE, check=False).returncode == 0, 30,
               what=f"ServiceAccount {NAMESPACE}/default")
    k = Kubectl(cp, NAMESPACE)
    analysis = {"interval": "1s", "prometheus": {"address": prometheus.url, "timeout": "2s"},
                "metrics": [{"name": "canary-error-ratio", "query": ERROR_RATIO, "max": 0.5},
                            {"name": "canary-pods-answering", "query": PODS_ANSWERING, "min": 1}]}
    image = env.node.images["test"]
    with running_operator(cp, NAMESPACE, tmp_path / "operator.log"):
        k.apply(service(NAME))
        k.apply(server_rollout(image, "1", None))
        k.wait_phase(NAME, "Succeeded", 120)
        k.apply(server_rollout(image, "2", analysis))
        # weight 50: two canary pods Ready; the client starts once the canary's Service answers
        canaries = wait_until(lambda: (lambda c: c if len(c) == 2 else None)(pods(k, "canary")), 120, 0.2,
                              what="two canary pods Running and Ready")
        svc = wait_until(lambda: k.get("service", f"{NAME}-canary"), 60, 0.2, what=f"Service {NAME}-canary")
        with Client(f"http://{svc['spec']['clusterIP']}/index.html") as client:
            wait_until(lambda: client.names() >= set(canaries), 30, 0.1, what="both canary pods answering")
            client.arm()
            prometheus.set_targets([(client.address, {})])
            prometheus.wait_target_up(client.address, 30)
            # the analysis passes at weight 50 (no data until now), then the drill waits for its approval
            st = k.wait_phase(NAME, "AwaitingApproval", 120)
            assert pods(k, "canary") == canaries
            stable = pods(k, "stable")
            assert stable, "no stable pod Running"

            k.annotate(NAME, APPROVE, st["approval"]["token"])
            (exp,) = wait_until(lambda: [e for e in experiments(k, NAME) if _injected(e)] or None, 60, 0.1,
                                what="Chaos Mesh recording the pod-kill")
            (record,) = _injected(exp)
            victim = record["id"].split("/", 1)[1]
            assert victim in canaries
            killed_at = time.time()
            deletes = [ev for ev in audit_events(cp, NAMESPACE, "pods", victim) if ev["verb"] == "delete"]
            assert deletes and deletes[0]["user"]["username"] == chaosmesh.USER

            done = k.wait_phase(NAME, "Succeeded", 180)
            wait_until(lambda: experiments(k, NAME) == [], 60, 0.2, what="the PodChaos finalized and gone")
        drill = done["drill"]
        print("status.drill:", json.dumps(drill, indent=1))
        print(f"client, from arm() on: {dict(client.counts)}, answers by pod {dict(client.by_pod)}")

    # the victim answered before the kill, never after it was gone; the other canary pod kept answering
    end = ts(drill["finishedAt"]).timestamp()
    assert victim in client.names(until=killed_at)
    settled = killed_at + 5  # connections already open to it may still be answered for a moment
    assert victim not in client.names(since=settled)
    (survivor,) = set(canaries) - {victim}
    assert survivor in client.names(since=settled, until=end)
    # no stable pod touched: Chaos Mesh's client deleted one pod in the namespace, the victim
    by_chaos_mesh = [ev["objectRef"]["name"] for ev in pod_deletes(cp, NAMESPACE)
                     if ev["user"]["username"] == chaosmesh.USER]
    assert by_chaos_mesh == [victim]
    assert not set(stable) & set(by_chaos_mesh)
    # what the analysis saw during the drill, in status.drill
    assert drill["outcome"] == "Completed" and drill["kind"] == "PodChaos" and drill["weight"] == 50
    metrics = {m["name"]: m for m in drill["metrics"]}
    errors, answering = metrics["canary-error-ratio"], metrics["canary-pods-answering"]
    assert errors["evaluations"] >= 4 and errors["failures"] == 0
    assert 0 <= errors["min"] <= errors["max"] <= 0.5
    if client.counts["error"] == 0:
        assert errors["max"] == 0
    # both canary pods answered in the drill's first seconds; one of them, at least, answered throughout
    assert answering["evaluations"] >= 4 and answering["failures"] == 0
    assert answering["max"] >= 2 and answering["min"] >= 1
    # every packet stayed on the machine
    counters = realnode.drop_counters()
    assert counters == dict.fromkeys(counters, 0), counters


def test_killing_the_only_canary_pod_is_a_breach_the_analysis_sees_and_rolls_back(
        env: Env, prometheus: Prometheus, tmp_path: Path) -> None:
    """Two replicas at weight 25: one canary pod, whose server takes 5 s to start (a model loading). Killed, the
    canary has no server until its replacement has loaded; the client's requests fail meanwhile, the error ratio
    crosses its threshold during the drill, and the rollout rolls back with the drill stopped and the experiment
    deleted (Chaos Mesh finalizing it). (With a server that starts at once the replacement was Ready 0.65 s after
    the kill here and no request failed.)"""
    cp, ns = env.cp, f"{NAMESPACE}-breach"
    cp.kubectl("create", "namespace", ns)
    wait_until(lambda: cp.kubectl("get", "sa", "default", "-n", ns, check=False).returncode == 0, 30,
               what=f"ServiceAccount {ns}/default")
    k = Kubectl(cp, ns)
    analysis = {"interval": "1s", "prometheus": {"address": prometheus.url, "timeout": "2s"},
                "metrics": [{"name": "canary-error-ratio", "query": ERROR_RATIO, "max": 0.05}]}
    image = env.node.images["test"]
    with running_operator(cp, ns, tmp_path / "operator.log"):
        k.apply(service(NAME))
        k.apply(server_rollout(image, "1", None, replicas=2, weight=25, load_seconds=5))
        k.wait_phase(NAME, "Succeeded", 120)
        k.apply(server_rollout(image, "2", analysis, replicas=2, weight=25, load_seconds=5))
        (only,) = wait_until(lambda: pods(k, "canary") or None, 120, 0.2, what="the canary pod Running and Ready")
        svc = wait_until(lambda: k.get("service", f"{NAME}-canary"), 60, 0.2, what=f"Service {NAME}-canary")
        with Client(f"http://{svc['spec']['clusterIP']}/index.html") as client:
            wait_until(lambda: only in client.names(), 30, 0.1, what="the canary pod answering")
            client.arm()
            prometheus.set_targets([(client.address, {})])
            prometheus.wait_target_up(client.address, 30)
            st = k.wait_phase(NAME, "AwaitingApproval", 120)
            k.annotate(NAME, APPROVE, st["approval"]["token"])
            rolled = k.wait(NAME, lambda s: s.get("phase") in ("RollingBack", "RolledBack"), 120,
                            what="the rollback after the breach")
            wait_until(lambda: experiments(k, NAME) == [], 60, 0.2, what="the PodChaos finalized and gone")
        print("status.drill:", json.dumps(rolled["drill"], indent=1))
        print(f"client, from arm() on: {dict(client.counts)}, answers by pod {dict(client.by_pod)}")

    drill = rolled["drill"]
    assert drill["outcome"] == "Stopped" and "canary-error-ratio" in drill["message"], drill
    (metric,) = drill["metrics"]
    assert metric["failures"] >= 1 and metric["max"] > 0.05
    assert client.counts["error"] > 0
    by_chaos_mesh = [ev["objectRef"]["name"] for ev in pod_deletes(cp, ns) if ev["user"]["username"] == chaosmesh.USER]
    assert by_chaos_mesh == [only]
    counters = realnode.drop_counters()
    assert counters == dict.fromkeys(counters, 0), counters


def _injected(exp: Json) -> list[Json]:
    records = ((exp.get("status") or {}).get("experiment") or {}).get("containerRecords") or []
    return [r for r in records if r.get("phase") == "Injected" or r.get("injectedCount", 0) >= 1]
