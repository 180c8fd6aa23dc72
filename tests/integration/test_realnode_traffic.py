"""Rollouts that move real requests: the operator (a local process) against the local control plane with a real
node (containerd + runc + bridge CNI + kubelet + kube-proxy) and a real L7 router (Traefik v3, a local process on
127.0.0.1, its Gateway API and NGINX-annotation providers). ModelRollouts are applied with kubectl; their pods are
busybox httpd servers whose answer to ``GET /who`` is ``POD REVISION`` (the revision is an env var that differs
between the two revisions of the template). A bounded load generator on the host sends N requests and counts
the answers.

Tolerance: at canary weight w the canary's share of N requests is within 4 binomial standard deviations of
w/100, i.e. ``|canary - N*p| <= 4*sqrt(N*p*(1-p)) + 1``, whatever the balancer: Traefik's weighted round robin
is deterministic (it should be exact, and the test prints the counts), kube-proxy picks an endpoint at random
per connection (binomial). With N=400 the band is ±8.3 points at weight 20 and ±10.3 at 50: a weight off by more fails.

One control plane, one node and one Traefik are shared by the module (tests run in file order); the last tests
check the node's drop counters stayed 0 and that after teardown nothing is left and the host is as before.
"""

from __future__ import annotations

import json
import math
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from devenv.localenv import node as realnode
from devenv.localenv import traefik as traefikenv
from devenv.localenv.controlplane import ControlPlane
from devenv.localenv.operatorproc import operator_process
from devenv.localenv.procs import ManagedProcess, port_open, wait_until
from devenv.localenv.prometheus import Prometheus

from .kube import Json, Kubectl, track_pods, track_revision
from .realnode import down_leaves_nothing, node_env, require_real_node

pytestmark = pytest.mark.integration

NAMESPACE = "traffic"
N = 400
HEADER = {"name": "X-Canary", "value": "yes"}
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never an environment proxy


@dataclass
class Env:
    cp: ControlPlane
    node: realnode.Node
    router: traefikenv.Traefik
    operator: ManagedProcess
    k: Kubectl
    before: dict[str, object]
    traefik_workdir: Path
    timings: dict[str, float] = field(default_factory=dict)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    started = time.monotonic()
    bins = require_real_node("real node with Traefik", builds=["traefik"])
    router: traefikenv.Traefik | None = None
    operator: ManagedProcess | None = None
    with node_env(tmp_path_factory, "traffic", crd=True) as ne:
        cp = ne.cp
        try:
            traefik_dir = tmp_path_factory.mktemp("traefik")
            router = traefikenv.start_traefik(cp, traefik_dir, bin_dir=bins["traefik"])
            cp.kubectl("create", "namespace", NAMESPACE)
            cp.kubectl("apply", "-f", "-", input=traefikenv.gateway_manifest(NAMESPACE, router.web_port))
            operator = operator_process(cp.kubeconfig, traefik_dir / "operator.log", namespaces=[NAMESPACE]).start()
            e = Env(cp=cp, node=ne.node, router=router, operator=operator, k=Kubectl(cp, NAMESPACE),
                    before=ne.before, traefik_workdir=traefik_dir)
            e.timings["setup"] = time.monotonic() - started
            print(f"\nsetup (control plane, node, Traefik, operator) {e.timings['setup']:.1f}s")
            yield e
        finally:
            if operator is not None:
                operator.stop()
                print(f"--- operator log tail\n{operator.log_tail(40)}")
            if router is not None:
                router.stop()


# --------------------------------------------------------------------------------------------- manifests


def template(name: str, revision: str, *, image: str) -> Json:
    """A model-server pod: busybox httpd answering ``GET /who`` with ``POD REVISION``, and ``GET /metrics`` with
    ``model_ok 1`` (its contract: a test breaks it by writing 0 there)."""
    return {
        "metadata": {"labels": {"app": name}},
        "spec": {
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "model", "image": image, "imagePullPolicy": "Never",
                "command": ["/bin/sh", "-c", 'echo "$POD_NAME $REVISION" > /www/who && echo "model_ok 1" > /www/metrics'
                            " && exec httpd -f -p 8080 -h /www"],
                "env": [{"name": "REVISION", "value": revision},
                        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                "ports": [{"containerPort": 8080}],
                "readinessProbe": {"httpGet": {"path": "/who", "port": 8080}, "periodSeconds": 1},
            }],
        },
    }


def rollout(name: str, revision: str, steps: list[Json], traffic: Json, *, image: str, replicas: int = 2,
            **spec: Any) -> str:
    return json.dumps({
        "apiVersion": "modelrollout.io/v1alpha1", "kind": "ModelRollout", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": template(name, revision, image=image), "traffic": {"service": {"name": name}, **traffic},
                 "strategy": {"canary": {"steps": steps}}, **spec},
    })


def service(name: str) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": {
        "selector": {"app": name}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}})


def httproute(name: str) -> str:
    return json.dumps({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": name},
        "spec": {"parentRefs": [{"name": traefikenv.GATEWAY_NAME}], "hostnames": [f"{name}.example"],
                 "rules": [{"name": "api", "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                            "backendRefs": [{"name": name, "port": 80}]}]},
    })


def nginx_ingress(name: str) -> str:
    return json.dumps({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": name},
        "spec": {"ingressClassName": traefikenv.INGRESS_CLASS, "rules": [{"host": f"{name}.example", "http": {
            "paths": [{"path": "/", "pathType": "Prefix",
                       "backend": {"service": {"name": f"{name}-stable", "port": {"number": 80}}}}]}}]},
    })


# ------------------------------------------------------------------------------------------ load and checks


@dataclass
class Load:
    """What N real requests got back: answers by revision and by pod, and the failures."""

    revisions: Counter[str] = field(default_factory=Counter)
    pods: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.revisions.values()) + len(self.failures)


def load(url: str, n: int, *, host: str | None = None, headers: dict[str, str] | None = None) -> Load:
    """``n`` GETs of ``url`` one after another (each a new connection), bounded by a 3 s timeout each."""
    out = Load()
    hdrs = {**(headers or {}), **({"Host": host} if host else {})}
    for _ in range(n):
        req = urllib.request.Request(url, headers=hdrs)
        try:
            with _opener.open(req, timeout=3) as resp:
                pod, revision = resp.read().decode().split()
        except (OSError, ValueError) as e:
            out.failures.append(repr(e))
            continue
        out.revisions[revision] += 1
        out.pods[pod] += 1
    return out


def within(count: int, n: int, weight: int) -> tuple[bool, float]:
    """The module's tolerance: ``count`` of ``n`` is within 4 binomial standard deviations of weight/100."""
    p = weight / 100
    tol = 4 * math.sqrt(n * p * (1 - p)) + 1
    return abs(count - n * p) <= tol, tol


def assert_share(got: Load, weight: int, what: str) -> None:
    assert not got.failures, f"{what}: {len(got.failures)} requests failed: {got.failures[:3]}"
    ok, tol = within(got.revisions["v2"], got.total, weight)
    print(f"{what}: canary {got.revisions['v2']}/{got.total} at weight {weight} (tolerance ±{tol:.0f}); "
          f"pods {dict(got.pods)}")
    assert ok, f"{what}: canary answered {got.revisions['v2']} of {got.total}, expected {weight}% ± {tol:.0f}"


def gate(k: Kubectl, name: str, step: int, timeout: float = 120) -> Json:
    """Wait for the approval gate at ``step`` (a ``pause: {}``), return the status."""
    def waiting(s: Json) -> bool:
        return s.get("phase") == "AwaitingApproval" and (s.get("approval") or {}).get("step") == step

    return k.wait(name, waiting, timeout, what=f"{name} waiting at step {step}")


def approve(k: Kubectl, name: str, st: Json) -> None:
    k.annotate(name, "modelrollout.io/approve", st["approval"]["token"])


def release(e: Env, name: str, manifest: str) -> str:
    e.k.apply(manifest)
    return str(e.k.wait_phase(name, "Succeeded", 120)["stableRevision"])


def traefik_splits(e: Env, name: str) -> list[list[int]]:
    """The weights of every two-way weighted service Traefik serves now for ``name`` whose children both have a
    server (stable first, canary second, as both providers list them: the HTTPRoute's backendRefs, the NGINX
    primary and its canary)."""
    services = e.router.services()
    servers = {str(svc["name"]).split("@")[0]: len((svc.get("loadBalancer") or {}).get("servers") or [])
               for svc in services}
    out: list[list[int]] = []
    for svc in services:
        children = (svc.get("weighted") or {}).get("services") or []
        if len(children) == 2 and all(f"{NAMESPACE}-{name}-" in c["name"] and servers.get(c["name"], 0) > 0
                                      for c in children):
            out.append([int(c.get("weight", 1)) for c in children])
    return out


def wait_router_weight(e: Env, name: str, weight: int) -> None:
    """Until Traefik serves the weights the operator wrote, with the canary's pods among its servers (Traefik
    applies what its watches bring a little after the operator's write; the operator writes a weight only once
    NAME-canary's EndpointSlices list the ready pods, which the breach scenario's load checks: before that rule
    Traefik answered the canary's share with 503, 48 of 400 requests at weight 20)."""
    want = [100 - weight, weight]
    wait_until(lambda: want in traefik_splits(e, name), 30, 0.05,
               what=f"Traefik serving {name} at canary weight {weight}, its servers known")


def answer_all(e: Env, url: str, host: str, revision: str, track: str = "stable") -> Load:
    """Until the router sends every request to ``revision`` on ``track``'s pods, those of the Deployment of the
    revision the status gives the track, NAME-REVISION (a route change reaches Traefik within about a second of the
    operator's write, which may come just before or after its status write)."""
    name = host.split(".")[0]

    def only() -> Load | None:
        got = load(url, 20, host=host)
        rev = track_revision(e.k, name, track)
        ok = rev is not None and set(got.revisions) == {revision} and all(p.startswith(f"{name}-{rev}-")
                                                                        for p in got.pods)
        return got if ok and not got.failures else None

    return wait_until(only, 30, 0.1, what=f"every answer from {revision} on {track}")


def weighted_canary(e: Env, name: str, route: str, traffic: Json, what: str,
                    at_gate: Callable[[int], None] = lambda weight: None) -> None:
    """The scenario both routers run: ``name`` released at v1 behind ``route``, then v2 with steps 20, approval,
    50, approval, 100. At each gate (after ``at_gate(weight)``) N requests through Traefik split within the
    tolerance and every request with the pin header reaches the canary; once approved to the end, v2 on the
    stable pods answers every request, and among them every pod that answered as the canary (promotion keeps the
    pods that were judged)."""
    image = e.node.images["test"]
    url, host = f"{e.router.url}/who", f"{name}.example"
    steps = [{"setWeight": 20}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}, {"setWeight": 100}]
    traffic = {**traffic, "headerRoute": HEADER}
    e.k.apply(service(name) + "\n---\n" + route)
    first = release(e, name, rollout(name, "v1", steps, traffic, image=image))
    answer_all(e, url, host, "v1")

    e.k.apply(rollout(name, "v2", steps, traffic, image=image))
    for step, weight in ((1, 20), (3, 50)):
        st = gate(e.k, name, step)
        at_gate(weight)
        wait_router_weight(e, name, weight)
        assert_share(load(url, N, host=host), weight, f"{what} step {step}")
        pinned = load(url, N // 4, host=host, headers={HEADER["name"]: HEADER["value"]})
        assert not pinned.failures and pinned.revisions == Counter({"v2": N // 4}), pinned
        judged = set(pinned.pods)
        approve(e.k, name, st)
    e.k.wait(name, lambda s: s.get("phase") == "Succeeded" and s.get("stableRevision") != first, 120)
    after = answer_all(e, url, host, "v2")
    served = set(load(url, N // 4, host=host).pods) | set(after.pods)
    assert judged <= served, f"the pods that answered as the canary {judged} do not serve now: {served}"


# ------------------------------------------------------------------------------------------------- scenarios


def test_gateway_api_canary_weights_and_header_pin(env: Env) -> None:
    """a + c: HTTPRoute weights through Traefik's Gateway API provider; at each weight N requests split within
    the tolerance, and every request with the pin header reaches the canary."""
    started = time.monotonic()
    weighted_canary(env, "gw", httproute("gw"), {"httpRoute": {"name": "gw", "rule": "api"}}, "gateway")
    env.timings["gateway"] = time.monotonic() - started


def test_nginx_canary_ingress_weights_and_header_pin(env: Env) -> None:
    """b + c: the operator's NGINX canary Ingress served by Traefik's Kubernetes Ingress NGINX provider; at each
    gate the canary Ingress carries the step's weight, and it is gone once the rollout is done."""
    started = time.monotonic()

    def canary_weight(weight: int) -> None:
        canary = env.k.get("ingress", "ngx-canary")
        assert canary is not None
        assert canary["metadata"]["annotations"]["nginx.ingress.kubernetes.io/canary-weight"] == str(weight)

    weighted_canary(env, "ngx", nginx_ingress("ngx"), {"ingress": {"name": "ngx"}}, "nginx", canary_weight)
    assert env.k.get("ingress", "ngx-canary") is None
    env.timings["nginx"] = time.monotonic() - started


def _endpoint_pods(e: Env, name: str) -> set[str]:
    out = e.k.run("get", "endpointslices", "-l", f"kubernetes.io/service-name={name}", "-o", "json")
    return {ep["targetRef"]["name"] for s in json.loads(out)["items"] for ep in s.get("endpoints") or []
            if (ep.get("conditions") or {}).get("ready")}


def test_service_replica_ratio_through_kube_proxy(env: Env) -> None:
    """h: the Service router (replica ratio), requests to the ClusterIP from the host through kube-proxy; the
    canary's share is its share of ready pods (kube-proxy picks an endpoint at random per connection)."""
    started = time.monotonic()
    e, name = env, "svc"
    image = e.node.images["test"]
    steps = [{"setWeight": 25}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}, {"setWeight": 100}]
    e.k.apply(service(name))
    first = release(e, name, rollout(name, "v1", steps, {}, image=image, replicas=4))
    cluster_ip = json.loads(e.k.run("get", "service", name, "-o", "json"))["spec"]["clusterIP"]
    url = f"http://{cluster_ip}/who"

    e.k.apply(rollout(name, "v2", steps, {}, image=image, replicas=4))
    for step, weight in ((1, 25), (3, 50)):
        st = gate(e.k, name, step)
        canary_pods = round(4 * weight / 100)
        canary = f"{name}-{st['canaryRevision']}-"  # the canary revision's Deployment names its pods

        def settled(canary_pods: int = canary_pods, canary: str = canary) -> bool:
            ready = _endpoint_pods(e, name)
            if len(ready) != 4 or sum(p.startswith(canary) for p in ready) != canary_pods:
                return False
            probe = load(url, 40)
            return not probe.failures and set(probe.pods) <= ready

        wait_until(settled, 60, 0.2, what=f"{name}: 4 ready endpoints, {canary_pods} canary, kube-proxy synced")
        assert_share(load(url, N), weight, f"service step {step}")
        approve(e.k, name, st)
    e.k.wait(name, lambda s: s.get("phase") == "Succeeded" and s.get("stableRevision") != first, 120)
    wait_until(lambda: set(load(url, 20).revisions) == {"v2"}, 60, 0.2, what=f"{name}: every answer from v2")
    e.timings["service"] = time.monotonic() - started


def test_missing_image_rolls_back_with_the_kubelets_reason(env: Env) -> None:
    """g: a canary whose image is not on the node (pull policy Never: containerd never asks a registry): the
    real kubelet's reason (ErrImageNeverPull) is in the rollback message, and every request still reaches v1."""
    started = time.monotonic()
    e, name = env, "img"
    image = e.node.images["test"]
    url, host = f"{e.router.url}/who", f"{name}.example"
    steps = [{"setWeight": 20}, {"pause": {}}, {"setWeight": 100}]
    traffic = {"httpRoute": {"name": name, "rule": "api"}}
    e.k.apply(service(name) + "\n---\n" + httproute(name))
    fast = {"progressDeadlineSeconds": 10, "rollback": {"automatic": True, "scaleDownDelay": "0s"}}
    release(e, name, rollout(name, "v1", steps, traffic, image=image, **fast))
    answer_all(e, url, host, "v1")

    missing = "localhost/modelrollout-missing:never-built"
    e.k.apply(rollout(name, "v2", steps, traffic, image=missing, **fast))
    during = load(url, N // 4, host=host)
    st = e.k.wait_phase(name, "RolledBack", 90)
    print(f"rollback message: {st.get('message')}")
    assert "ErrImageNeverPull" in st["message"], st["message"]
    assert f"{name}-{st['canaryRevision']}-" in st["message"], st["message"]  # names the canary's pod
    after = load(url, N // 4, host=host)
    for got in (during, after):
        assert not got.failures and set(got.revisions) == {"v1"}, got
    e.timings["missing-image"] = time.monotonic() - started


@dataclass
class Shot:
    start: float
    answer: str  # "POD REVISION", or the error


def canary_weight(e: Env, name: str) -> int | None:
    """The canary's weight in what Traefik serves now for ``name``: None when no weighted service names it."""
    for svc in e.router.services():
        for child in (svc.get("weighted") or {}).get("services") or []:
            if f"{NAMESPACE}-{name}-canary" in child["name"]:
                return int(child.get("weight", 1))
    return None


def test_breach_switches_to_stable_and_no_request_reaches_the_canary_after(env: Env, prometheus: Prometheus) -> None:
    """d: at weight 50 the canary breaks its contract (the metric the real Prometheus scrapes from the canary pod
    drops to 0); the operator rolls back. From the moment Traefik serves 0% canary no request reaches the
    canary, and no client request fails at any time: a load runs from before the new revision is applied, so
    the first weight write (which must wait for the canary Service to list the ready pod) and the switch back
    both happen under it."""
    started = time.monotonic()
    e, name = env, "brk"
    image = e.node.images["test"]
    url, host = f"{e.router.url}/who", f"{name}.example"
    steps = [{"setWeight": 50}, {"pause": {}}, {"setWeight": 100}]
    traffic = {"httpRoute": {"name": name, "rule": "api"}}
    analysis = {"interval": "1s", "prometheus": {"address": prometheus.url},
                "inconclusive": {"limit": 1000, "action": "pause"},
                "metrics": [{"name": "model-ok", "query": 'min(model_ok{rollout="{{rollout}}"})', "min": 0.5,
                             "onFailure": "rollback"}]}
    e.k.apply(service(name) + "\n---\n" + httproute(name))
    release(e, name, rollout(name, "v1", steps, traffic, image=image, analysis=analysis))
    answer_all(e, url, host, "v1")

    shots: list[Shot] = []
    stop = threading.Event()
    switched: list[float] = []

    def shoot() -> None:
        for _ in range(200000):  # bounded; stopped by the test long before
            if stop.is_set():
                return
            t = time.monotonic()
            req = urllib.request.Request(url, headers={"Host": host})
            try:
                with _opener.open(req, timeout=3) as resp:
                    shots.append(Shot(t, resp.read().decode().strip()))
            except OSError as err:
                shots.append(Shot(t, f"error {err!r}"))

    def watch_router() -> None:
        for _ in range(20000):
            if stop.is_set():
                return
            if canary_weight(e, name) in (0, None):
                switched.append(time.monotonic())
                return
            time.sleep(0.01)

    threads = [threading.Thread(target=shoot, daemon=True), threading.Thread(target=watch_router, daemon=True)]
    threads[0].start()
    try:
        e.k.apply(rollout(name, "v2", steps, traffic, image=image, analysis=analysis))
        gate(e.k, name, 1)
        wait_router_weight(e, name, 50)
        threads[1].start()  # from weight 50 on: watches for the switch back to 0
        pods = track_pods(e.k, name, "canary")
        assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
        canary_pod, canary_ip = pods[0]["metadata"]["name"], pods[0]["status"]["podIP"]
        prometheus.set_targets([(f"{canary_ip}:8080", {"rollout": name})])
        prometheus.wait_target_up(f"{canary_ip}:8080")
        wait_until(lambda: sum(s.answer.endswith(" v2") for s in shots) >= 20, 30, 0.05,
                   what="the canary answering under load")
        broke = time.monotonic()
        e.k.run("exec", canary_pod, "--", "sh", "-c", 'echo "model_ok 0" > /www/metrics')
        st = e.k.wait(name, lambda s: s.get("phase") in ("RollingBack", "RolledBack"), 60, what=f"{name} rolls back")
        wait_until(lambda: switched, 30, 0.05, what="Traefik serving 0% canary")
        wait_until(lambda: sum(s.start > switched[0] for s in shots) >= 200, 60, 0.05,
                   what="200 requests after the switch")
    finally:
        stop.set()
        for th in threads:
            if th.is_alive():
                th.join(10)
    t0 = switched[0]
    failed = [s.answer for s in shots if s.answer.startswith("error")]
    after = Counter(s.answer.split()[1] for s in shots if s.start > t0 and not s.answer.startswith("error"))
    before = Counter(s.answer.split()[1] for s in shots if s.start <= t0 and not s.answer.startswith("error"))
    print(f"breach: {len(shots)} requests; before the switch {dict(before)}, after {dict(after)}; "
          f"switch {t0 - broke:.1f}s after the metric broke; message: {st.get('message')}")
    assert "model-ok" in (st.get("message") or ""), st.get("message")
    assert not failed, f"{len(failed)} requests failed: {failed[:3]}"
    assert before["v2"] > 0 and after == Counter({"v1": after["v1"]}) and after["v1"] >= 200, (before, after)
    e.timings["breach"] = time.monotonic() - started


# --------------------------------------------------------------------------------------------- the host


def test_drop_counters_stayed_zero(env: Env) -> None:
    counters = realnode.drop_counters()
    assert counters and counters == dict.fromkeys(counters, 0), counters


def test_teardown_leaves_nothing(env: Env) -> None:
    """Traefik, the operator and the node stopped: no process of theirs, the host as before."""
    print("timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in env.timings.items()))
    pids = [env.operator.pid, env.router.process.pid]
    env.operator.stop()
    env.router.stop()
    assert not [pid for pid in pids if Path(f"/proc/{pid}").exists()]
    assert not port_open(env.router.web_port) and not port_open(env.router.admin_port)
    down_leaves_nothing(env.node, env.before)
