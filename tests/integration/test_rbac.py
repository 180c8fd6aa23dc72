"""The chart's RBAC is exactly what the operator uses: run it under its own ServiceAccount and read the audit log.

The ServiceAccount, the ClusterRole and its binding come from the rendered Helm chart (default values) and are
created in the local control plane; the operator runs with a kubeconfig holding a token of that ServiceAccount
and drives one full NGINX rollout (model config per revision, image pre-pull, a pause approved by token, an abort
and a retry, promotion). The apiserver's audit log then tells which (verb, group, resource, subresource) the
operator's user requested. The test fails when a request was denied (403), when the rollout did not succeed,
and when the role grants a verb the operator never used, apart from the commented allow-list below. The
namespaced mode (a Role per watched namespace, plus kopf's read-only discovery ClusterRole) gets the same
treatment. The operator runs with the chart's ``--leader-elect*`` arguments (on by default), so the leader
election Role (get, create, update on leases in the release namespace) is held to the same rule: acquiring
creates the Lease, renewing reads and updates it, and the graceful stop at the end releases it.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from devenv.localenv.controlplane import ControlPlane
from devenv.localenv.operatorproc import operator_process
from devenv.localenv.procs import ManagedProcess

from ..chart import render_chart
from ..conftest import REQUIRE_CLUSTER
from .kube import Kubectl, audit_log, wait_deleted
from .manifests import ingress, rollout, service

ROOT = Path(__file__).resolve().parents[2]

Grant = tuple[str, str, str]
"""(apiGroup, resource[/subresource], verb)"""

# Grants the test's rollouts do not exercise, each needed on a path named here. Keep it short: anything not on
# this list and not used makes the test fail, so an unused grant is either removed or explained.
ALLOWED_UNUSED: dict[Grant, str] = {
    # Engine.reconcile reads the rollout from the watch cache (kopf's events); it GETs it only while the echo of
    # the operator's own last write to it has not arrived yet (or kopf folded it into a later event): timing.
    ("modelrollout.io", "modelrollouts", "get"): "the rollout read while the watch lags the operator's own write",
    # Services and Ingresses are read from the operator's watches of every Service and Ingress; it GETs one
    # only while the watch has not brought it yet (just created, or the echo of the operator's own write still
    # on its way): timing.
    ("", "services", "get"): "a Service read while the watch lags",
    ("networking.k8s.io", "ingresses", "get"): "an Ingress read while the watch lags",
    # Deployments: the operator's are listed before any reconcile runs (a kopf index), so a new revision's
    # Deployment is known absent without a GET; one is read with a GET only while the echo of the operator's own
    # write to it is on its way and another event came first: timing.
    ("apps", "deployments", "get"): "a Deployment read while the watch lags the operator's own write",
    # The NAME-prewarm DaemonSet is read from the watch of the operator's labelled DaemonSets; a GET only while
    # the watch has not shown it (the first look before it exists, the echo of an apply on its way): timing.
    ("apps", "daemonsets", "get"): "a DaemonSet read while the watch lags",
    # DeletePrewarm: the NAME-prewarm DaemonSet is deleted when rollback.prewarm is turned off.
    ("apps", "daemonsets", "delete"): "rollback.prewarm turned off",
    # The Gateway API and Istio routers (read-modify-write of the user's HTTPRoute / VirtualService); their
    # CRDs are not installed for this test. test_routers_gateway_istio.py drives them.
    ("gateway.networking.k8s.io", "httproutes", "get"): "Gateway API router",
    ("gateway.networking.k8s.io", "httproutes", "update"): "Gateway API router",
    ("networking.istio.io", "virtualservices", "get"): "Istio router",
    ("networking.istio.io", "virtualservices", "update"): "Istio router",
    # chaos steps (fault drills): Chaos Mesh's CRDs are not installed for this test; test_chaos_drills.py drives
    # them (create at the step, list by label at a chaos step, delete when the drill is over or stopped).
    **{("chaos-mesh.org", plural, verb): "chaos steps (Chaos Mesh experiments)"
       for plural in ("podchaos", "networkchaos", "stresschaos", "httpchaos", "iochaos", "timechaos")
       for verb in ("list", "create", "delete")},
}




def helm_template(release: str, namespace: str, *args: str) -> list[dict[str, Any]]:
    try:
        render_chart.helm_path()
    except render_chart.ToolMissing as exc:
        if REQUIRE_CLUSTER:
            pytest.fail(f"helm unavailable: {exc}", pytrace=False)
        pytest.skip(f"helm unavailable: {exc}")
    return list(render_chart.documents(render_chart.helm_template(*args, release=release, namespace=namespace,
                                                                   crds=False)))


# ------------------------------------------------------------------------------------------------ identity


@dataclass
class Identity:
    """The chart's RBAC objects created in the cluster, and a kubeconfig for its ServiceAccount."""

    username: str
    kubeconfig: Path
    rules: list[dict[str, Any]]
    objects: list[dict[str, Any]]


def _pick(docs: Iterable[dict[str, Any]], kinds: set[str]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] in kinds]


def token_kubeconfig(cp: ControlPlane, namespace: str, account: str, path: Path) -> Path:
    """A kubeconfig for ServiceAccount ``namespace/account``: the cluster's server and CA, a fresh token."""
    token = cp.kubectl("create", "token", account, "-n", namespace, "--duration=2h").stdout.strip()
    admin = json.loads(cp.kubeconfig.read_text())
    ca = admin["clusters"][0]["cluster"]["certificate-authority-data"]
    base64.b64decode(ca, validate=True)
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": {"server": cp.server, "certificate-authority-data": ca}}],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": account, "namespace": namespace}}],
        "current-context": "local",
    }
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)
    return path


class OperatorAs:
    """Creates the chart's ServiceAccount + RBAC (rendered with some --set values) and runs the operator with a
    token of that ServiceAccount; removes the cluster-scoped objects and stops the operator afterwards."""

    def __init__(self, cp: ControlPlane, namespace: str, tmp: Path) -> None:
        self.cp, self.namespace, self.tmp = cp, namespace, tmp
        self.cluster_objects: list[tuple[str, str]] = []
        self.process: ManagedProcess | None = None

    def __call__(self, *values: str) -> tuple[Identity, ManagedProcess]:
        values = tuple(v.replace("NAMESPACE", self.namespace) for v in values)
        release = f"mr-rbac-{uuid.uuid4().hex[:6]}"
        docs = helm_template(release, self.namespace, *[f"--set={v}" for v in values])
        objects = _pick(docs, {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"})
        self.cluster_objects += [(d["kind"].lower(), d["metadata"]["name"]) for d in objects
                                 if d["kind"].startswith("Cluster")]
        self.cp.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects))
        account = next(d for d in objects if d["kind"] == "ServiceAccount")["metadata"]["name"]
        identity = Identity(
            username=f"system:serviceaccount:{self.namespace}:{account}",
            kubeconfig=token_kubeconfig(self.cp, self.namespace, account, self.tmp / "operator.kubeconfig"),
            rules=[r for d in objects if d["kind"] in ("ClusterRole", "Role") for r in d["rules"]],
            objects=objects)
        namespaced = any(v.startswith("watchNamespaces") for v in values)
        deployment = next(d for d in docs if d["kind"] == "Deployment")
        self.process = operator_process(identity.kubeconfig, self.tmp / "operator.log",
                                        namespaces=[self.namespace] if namespaced else (),
                                        extra=leader_election_args(deployment))
        self.process.start()
        return identity, self.process

    def close(self) -> None:
        if self.process is not None:
            self.process.stop()
            print(f"--- operator log tail ({self.process.log})\n{self.process.log_tail(60)}")
        for kind, name in self.cluster_objects:
            self.cp.kubectl("delete", kind, name, "--wait=false", check=False)


def leader_election_args(deployment: dict[str, Any]) -> list[str]:
    """The chart's ``--leader-elect*`` arguments with their values, so the operator elects itself as in the pod
    (the Lease in the release namespace, under the chart's leader election Role)."""
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    out: list[str] = []
    for i, arg in enumerate(args):
        if arg.startswith("--leader-elect"):
            out.append(arg)
            if i + 1 < len(args) and not args[i + 1].startswith("--"):
                out.append(args[i + 1])
    return out


@pytest.fixture
def operator_as(crd: ControlPlane, namespace: str, tmp_path: Path) -> Iterator[OperatorAs]:
    starter = OperatorAs(crd, namespace, tmp_path)
    try:
        yield starter
    finally:
        starter.close()


# --------------------------------------------------------------------------------------------- audit log


@dataclass(frozen=True)
class Request:
    verb: str
    group: str
    resource: str
    code: int
    namespace: str
    name: str
    denied: bool


def denied(status: dict[str, Any]) -> bool:
    """A 403 from authorization. Not one from admission: a clusterwide operator may still reconcile rollouts in
    namespaces other tests left terminating, where every create is refused with NamespaceTerminating. (A
    server-side apply that would create an object without create permission is refused inside the patch
    handler, after the audit's authorization decision said allow, so the decision annotation alone misses it.)"""
    if status.get("code") != 403:
        return False
    causes = (status.get("details") or {}).get("causes") or []
    return not any(c.get("reason") == "NamespaceTerminating" for c in causes)


def requests_of(cp: ControlPlane, username: str) -> list[Request]:
    """Every resource request ``username`` made, from the audit log (one per request: ResponseComplete, or
    ResponseStarted for watches, which complete only when they end)."""
    out = []
    for ev in audit_log(cp):
        if (ev.get("user") or {}).get("username") != username:
            continue
        ref = ev.get("objectRef")
        if not ref:
            continue  # non-resource URLs (/api, /apis discovery): allowed to every authenticated user
        if ev.get("stage") != ("ResponseStarted" if ev.get("verb") == "watch" else "ResponseComplete"):
            continue
        resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        status = ev.get("responseStatus") or {}
        out.append(Request(ev["verb"], ref.get("apiGroup", ""), resource, int(status.get("code", 0)),
                           ref.get("namespace", ""), ref.get("name", ""), denied(status)))
    return out


def used_grants(requests: Iterable[Request]) -> set[Grant]:
    """The grants the requests needed. A server-side apply (patch) that created its object (201) was also
    authorized as create by the apiserver, so it needs both."""
    out: set[Grant] = set()
    for r in requests:
        if r.denied:
            continue
        out.add((r.group, r.resource, r.verb))
        if r.verb == "patch" and r.code == 201:
            out.add((r.group, r.resource, "create"))
    return out


def granted(rules: Iterable[dict[str, Any]]) -> set[Grant]:
    out: set[Grant] = set()
    for rule in rules:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"], rule
        assert not rule.get("resourceNames") and not rule.get("nonResourceURLs"), rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    out.add((group, resource, verb))
    return out


def fmt(grants: Iterable[Grant]) -> str:
    return "\n".join(f"  {verb:7} {res}{'.' + grp if grp else ''}" for grp, res, verb in sorted(grants)) or "  -"


def check_least_privilege(cp: ControlPlane, identity: Identity, allowed_unused: dict[Grant, str]) -> set[Grant]:
    reqs = requests_of(cp, identity.username)
    assert reqs, f"no request from {identity.username} in the audit log"
    refused = sorted({(r.verb, r.group, r.resource, r.namespace, r.name) for r in reqs if r.denied})
    assert not refused, f"requests of {identity.username} denied: {refused}"
    assert not [r for r in reqs if r.resource.split("/")[0] == "secrets"], "the operator must never touch Secrets"
    used = used_grants(reqs)
    grants = granted(identity.rules)
    print(f"RBAC used by {identity.username}:\n{fmt(used)}")
    assert used <= grants, f"used but not granted (cannot happen without a 403):\n{fmt(used - grants)}"
    unused = grants - used - set(allowed_unused)
    assert not unused, (f"the chart grants what the operator never used; remove it from the chart or add it to "
                        f"the allow-list with the path that needs it:\n{fmt(unused)}")
    return used


# ------------------------------------------------------------------------------------------------- tests


def spec(name: str, version: str) -> dict[str, Any]:
    """NGINX router, a model config per revision (owned ConfigMaps) and image pre-pull (an owned DaemonSet), so
    the operator's optional writes are exercised too."""
    return {"traffic": {"service": {"name": name}, "ingress": {"name": name}},
            "model": {"version": version, "config": {"max_length": int(version) * 1024}},
            "rollback": {"scaleDownDelay": "1s", "prewarm": {"enabled": True, "keepRevisions": 1}}}


def full_rollout(k: Kubectl, name: str) -> None:
    """First release, then v2 with setWeight 50 -> pause {} -> setWeight 100: abort, retry, approve, promote; the
    previous stable's Deployment deleted after scaleDownDelay."""
    steps = [{"setWeight": 50}, {"pause": {}}, {"setWeight": 100}]
    k.apply(service(name) + "\n---\n" + ingress(name, f"{name}-stable"))
    k.apply(rollout(name, steps=steps, scale_down_delay="1s", **spec(name, "1")))
    first = k.wait_phase(name, "Succeeded", 90)["stableRevision"]
    k.apply(rollout(name, image="model:2", steps=steps, scale_down_delay="1s", **spec(name, "2")))
    k.wait(name, lambda s: s.get("phase") == "AwaitingApproval" and s.get("currentWeight") == 50, 90)
    k.annotate(name, "modelrollout.io/abort", "true")
    st = k.wait_phase(name, "RolledBack", 60)
    assert "aborted by user" in st["message"] and st["stableRevision"] == first
    k.annotate(name, "modelrollout.io/retry", "true")
    st = k.wait(name, lambda s: s.get("phase") == "AwaitingApproval" and s.get("currentWeight") == 50, 60)
    k.annotate(name, "modelrollout.io/approve", st["approval"]["token"])
    st = k.wait(name, lambda s: s.get("phase") == "Succeeded" and s.get("stableRevision") != first, 90)
    assert [h["outcome"] for h in st["history"]][-1] == "Succeeded"
    assert k.get("ingress", f"{name}-canary") is None
    wait_deleted(k, "deployment", f"{name}-{first}", 30)


def test_cluster_role_grants_exactly_what_the_operator_uses(k: Kubectl, operator_as: OperatorAs) -> None:
    identity, proc = operator_as()  # default values: ClusterRole + ClusterRoleBinding, cluster-wide operator
    assert "--leader-elect" in proc.argv, "leader election is on by default: its Role is exercised too"
    full_rollout(k, "rbac")
    proc.stop()
    assert proc.proc is not None and proc.proc.returncode == 0
    used = check_least_privilege(k.cp, identity, ALLOWED_UNUSED)
    # The cluster-wide operator never needs to read Namespaces.
    assert not [g for g in used if g[1] == "namespaces"], fmt(used)


def test_namespaced_roles_are_enough_for_a_namespace_watching_operator(k: Kubectl, operator_as: OperatorAs) -> None:
    identity, proc = operator_as("rbac.namespaced=true", "watchNamespaces={NAMESPACE}")
    kinds = sorted(d["kind"] for d in identity.objects)
    # the operator's Role in the watched namespace, the leader election Role in the release namespace (the same
    # namespace here)
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "Role", "Role", "RoleBinding", "RoleBinding",
                     "ServiceAccount"], kinds
    cluster_role = next(d for d in identity.objects if d["kind"] == "ClusterRole")
    assert {r for g, r, _ in granted(cluster_role["rules"])} == {"customresourcedefinitions", "namespaces"}
    assert all(v in ("list", "watch") for _, _, v in granted(cluster_role["rules"]))
    full_rollout(k, "nsrbac")
    proc.stop()
    check_least_privilege(k.cp, identity, ALLOWED_UNUSED)


@pytest.mark.parametrize("values", [(), ("rbac.namespaced=true", "watchNamespaces={NAMESPACE}"),
                                    ("watchNamespaces={NAMESPACE}", "prometheus.address=http://prom:9090")])
def test_every_rendered_object_is_accepted_by_the_apiserver(crd: ControlPlane, namespace: str,
                                                           values: tuple[str, ...]) -> None:
    """A server-side dry run of the whole chart (CRD included) against the real 1.36 apiserver: schemas,
    defaulting and RBAC escalation checks (the ClusterRole must not grant what the creator lacks)."""
    args = [f"--set={v.replace('NAMESPACE', namespace)}" for v in values]
    try:
        render_chart.helm_path()
    except render_chart.ToolMissing as exc:
        if REQUIRE_CLUSTER:
            pytest.fail(f"helm unavailable: {exc}", pytrace=False)
        pytest.skip(f"helm unavailable: {exc}")
    stream = render_chart.helm_template(*args, release=f"dry-{uuid.uuid4().hex[:6]}", namespace=namespace)
    res = crd.kubectl("apply", "--server-side", "--force-conflicts", "--dry-run=server", "-f", "-", input=stream)
    lines = [line for line in res.stdout.splitlines() if line.strip()]
    assert len(lines) == len(render_chart.documents(stream)), res.stdout
