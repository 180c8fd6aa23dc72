"""Packaging: the Helm chart (lint, render, schema, RBAC shape), the kustomize base and install.yaml (drift and
equivalence with the chart), the CRD copies, the Dockerfiles, and what the wheel and the images ship (the product
packages, not the development environment in operator/devenv/).

Helm is the official binary shipped in a PyPI wheel (see hack/render_chart.py); kubectl is the one
hack/controlplane/build.sh builds. Rendered objects are validated against the Kubernetes 1.36 schemas with
kubernetes-validate; tests/integration/test_rbac.py also dry-runs them against a real 1.36 apiserver.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import pytest
import yaml

from ..chart import render_chart as rc
from ..conftest import REQUIRE_CLUSTER

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "modelrollout"
K8S_SCHEMA_VERSION = "1.36.0"
NAMESPACED = ("--set", "rbac.namespaced=true", "--set", "watchNamespaces={team-a,team-b}")
EVERYTHING = ("--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.prometheusRule.enabled=true",
              "--set", "logFormat=json", "--set", "prometheus.address=http://prometheus.monitoring:9090",
              "--set", "image.digest=sha256:" + "a" * 64, "--set", "verbose=true")

Doc = dict[str, Any]




def _unavailable(reason: str) -> NoReturn:
    if REQUIRE_CLUSTER:
        pytest.fail(f"{reason} (MODELROLLOUT_REQUIRE_CLUSTER=1)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def helm() -> Path:
    try:
        return Path(rc.helm_path())
    except rc.ToolMissing as exc:
        _unavailable(f"helm unavailable: {exc}")


@pytest.fixture(scope="module")
def kubectl() -> Path:
    try:
        return Path(rc.kubectl_path())
    except rc.ToolMissing as exc:
        _unavailable(f"kubectl unavailable: {exc}")


def render(helm: Path, *args: str, crds: bool = True) -> list[Doc]:
    return rc.documents(rc.helm_template(*args, crds=crds))


def render_fails(helm: Path, *args: str) -> str:
    res = subprocess.run([str(helm), "template", "x", str(CHART), *args], capture_output=True, text=True,
                         check=False)
    assert res.returncode != 0, f"helm template {args} rendered:\n{res.stdout[:2000]}"
    return res.stderr


def by_kind(docs: Sequence[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: Sequence[Doc], kind: str) -> Doc:
    found = by_kind(docs, kind)
    assert len(found) == 1, [d["kind"] for d in docs]
    return found[0]


# ------------------------------------------------------------------------------------------------- CRD copies


@pytest.mark.parametrize("copy", rc.CRD_COPIES, ids=lambda p: str(p.relative_to(ROOT)))
def test_crd_copy_is_identical_to_the_generated_crd(copy: Path) -> None:
    assert copy.is_file(), f"{copy.relative_to(ROOT)} missing: run `python hack/render_chart.py --sync`"
    assert copy.read_bytes() == rc.CRD_SOURCE.read_bytes(), (
        f"{copy.relative_to(ROOT)} differs from crds/{rc.CRD_NAME}: run `python hack/render_chart.py --sync`")


def test_chart_and_package_versions_agree() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == project["version"]
    assert chart["apiVersion"] == "v2"


# ------------------------------------------------------------------------------------------------------- Helm


@pytest.mark.parametrize("values", [(), NAMESPACED, EVERYTHING], ids=["default", "namespaced", "everything"])
def test_helm_lint_strict(helm: Path, values: tuple[str, ...]) -> None:
    res = subprocess.run([str(helm), "lint", "--strict", str(CHART), *values], capture_output=True, text=True,
                         check=False)
    assert res.returncode == 0, res.stdout + res.stderr


def test_default_render(helm: Path) -> None:
    docs = render(helm)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "Deployment", "Role",
                     "RoleBinding", "Service", "ServiceAccount"]
    assert one(docs, "CustomResourceDefinition") == yaml.safe_load(rc.CRD_SOURCE.read_text())
    for d in docs:
        if d["kind"] not in ("ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"):
            assert d["metadata"]["namespace"] == rc.NAMESPACE, d["kind"]

    dep = one(docs, "Deployment")
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    pod = dep["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == one(docs, "ServiceAccount")["metadata"]["name"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 65532
    (container,) = pod["containers"]
    assert container["image"] == "ghcr.io/modelrollout/modelrollout:0.1.0"
    assert container["args"] == ["--metrics-port", "9090", "--liveness", "http://0.0.0.0:8080/healthz",
                                 "--workers", "64", *LEADER_ELECT_ARGS]
    assert container["env"] == [POD_NAME]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"metrics": 9090, "healthz": 8080}
    sc = container["securityContext"]
    assert sc == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
                  "capabilities": {"drop": ["ALL"]}}
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}]
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]

    svc = one(docs, "Service")
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert svc["spec"]["ports"] == [{"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}]
    binding = one(docs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == one(docs, "ClusterRole")["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": pod["serviceAccountName"],
                                    "namespace": rc.NAMESPACE}]


LEADER_ELECT_ARGS = ["--leader-elect", "--leader-elect-namespace", rc.NAMESPACE, "--leader-elect-lease-name",
                     "modelrollout-leader", "--leader-elect-lease-duration", "15s", "--leader-elect-renew-deadline",
                     "10s", "--leader-elect-retry-period", "2s"]
POD_NAME = {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}


def _leader_election(doc: Doc) -> bool:
    """The leader election Role/RoleBinding (in the release namespace, whatever the RBAC mode)."""
    return doc["kind"] in ("Role", "RoleBinding") and doc["metadata"]["name"].endswith("-leader-election")


def test_leader_election_lets_replicas_scale_and_grants_only_its_lease_verbs(helm: Path) -> None:
    docs = render(helm, "--set", "replicas=3", "--set", "leaderElection.leaseName=ops-lease", "--set",
                  "leaderElection.leaseDuration=30s", *NAMESPACED, crds=False)
    dep = one(docs, "Deployment")
    assert dep["spec"]["replicas"] == 3 and dep["spec"]["strategy"]["type"] == "RollingUpdate"
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--leader-elect-lease-name") + 1] == "ops-lease"
    assert args[args.index("--leader-elect-lease-duration") + 1] == "30s"
    role = next(d for d in by_kind(docs, "Role") if _leader_election(d))
    assert role["metadata"]["namespace"] == rc.NAMESPACE
    assert _grants(role["rules"]) == {("coordination.k8s.io", "leases", v) for v in ("get", "create", "update")}
    binding = next(d for d in by_kind(docs, "RoleBinding") if _leader_election(d))
    assert binding["metadata"]["namespace"] == rc.NAMESPACE and binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": one(docs, "ServiceAccount")["metadata"]["name"],
                                    "namespace": rc.NAMESPACE}]
    assert not any(g[1] == "leases" for r in by_kind(docs, "Role") + by_kind(docs, "ClusterRole")
                   if not _leader_election(r) for g in _grants(r["rules"]))

    off = render(helm, "--set", "leaderElection.enabled=false", crds=False)
    dep = one(off, "Deployment")
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"] == {"type": "Recreate"}
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert not [a for a in container["args"] if a.startswith("--leader-elect")] and "env" not in container
    assert not by_kind(off, "Role") and not by_kind(off, "RoleBinding")


def _grants(rules: Sequence[Doc]) -> set[tuple[str, str, str]]:
    out = set()
    for rule in rules:
        assert set(rule) == {"apiGroups", "resources", "verbs"}, rule  # no resourceNames / nonResourceURLs
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    out.add((group, resource, verb))
    return out


@pytest.mark.parametrize("values", [(), NAMESPACED, ("--set", "watchNamespaces={team-a}")],
                         ids=["cluster", "namespaced", "cluster-role-watching-one-namespace"])
def test_rbac_is_explicit_and_never_touches_secrets(helm: Path, values: tuple[str, ...]) -> None:
    docs = render(helm, *values, crds=False)
    roles = by_kind(docs, "ClusterRole") + by_kind(docs, "Role")
    assert roles
    for role in roles:
        for group, resource, verb in _grants(role["rules"]):
            assert "*" not in (group, resource, verb), role["metadata"]["name"]
            assert resource.split("/")[0] not in ("secrets", "serviceaccounts", "roles", "rolebindings",
                                                  "clusterroles", "clusterrolebindings"), (resource, verb)
            assert verb not in ("escalate", "bind", "impersonate", "deletecollection"), (resource, verb)


def test_namespaced_rbac_is_one_role_per_watched_namespace(helm: Path) -> None:
    cluster = render(helm, crds=False)
    docs = [d for d in render(helm, *NAMESPACED, crds=False) if not _leader_election(d)]
    operator_rules = _grants(one(cluster, "ClusterRole")["rules"])
    discovery = {g for g in operator_rules if g[1] == "customresourcedefinitions"}
    roles, bindings = by_kind(docs, "Role"), by_kind(docs, "RoleBinding")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    for role in roles:
        assert _grants(role["rules"]) == operator_rules - discovery
    sa = one(docs, "ServiceAccount")["metadata"]
    for b in bindings:
        assert b["subjects"] == [{"kind": "ServiceAccount", "name": sa["name"], "namespace": sa["namespace"]}]
    # cluster-scoped: only kopf's read-only discovery (CRDs; Namespaces because it watches a list of them)
    (cluster_role,) = by_kind(docs, "ClusterRole")
    assert _grants(cluster_role["rules"]) == {("apiextensions.k8s.io", "customresourcedefinitions", v)
                                             for v in ("list", "watch")} | {("", "namespaces", v)
                                                                            for v in ("list", "watch")}
    args = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[-4:] == ["--namespace", "team-a", "--namespace", "team-b"]
    no_discovery = render(helm, *NAMESPACED, "--set", "rbac.clusterDiscovery=false", crds=False)
    assert not by_kind(no_discovery, "ClusterRole") and not by_kind(no_discovery, "ClusterRoleBinding")


def test_toggles(helm: Path) -> None:
    docs = render(helm, *EVERYTHING, crds=False)
    sm, rule = one(docs, "ServiceMonitor"), one(docs, "PrometheusRule")
    svc = one(docs, "Service")
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["endpoints"][0]["port"] == svc["spec"]["ports"][0]["name"]
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert alerts == {"ModelRolloutRolledBack", "ModelRolloutFailed", "ModelRolloutAwaitingApproval",
                      "ModelRolloutReconcileErrors"}
    container = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "ghcr.io/modelrollout/modelrollout@sha256:" + "a" * 64
    assert "--verbose" in container["args"]
    assert {e["name"]: e.get("value") for e in container["env"]} == {
        "MODELROLLOUT_LOG_FORMAT": "json", "MODELROLLOUT_PROMETHEUS_ADDRESS": "http://prometheus.monitoring:9090",
        "POD_NAME": None}
    off = render(helm, "--set", "metrics.service.enabled=false", "--set", "rbac.create=false", "--set",
                 "serviceAccount.create=false", "--set", "serviceAccount.name=existing", crds=False)
    assert [d["kind"] for d in off] == ["Deployment"]
    assert one(off, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "existing"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian's prometheus) not installed")
def test_prometheus_rules_parse(helm: Path, tmp_path: Path) -> None:
    rule = one(render(helm, "--set", "metrics.prometheusRule.enabled=true", crds=False), "PrometheusRule")
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    res = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize(("values", "message"), [
    (("--set", "replicas=2", "--set", "leaderElection.enabled=false"), "replicas > 1 needs leaderElection"),
    (("--set", "replicas=-1"), "minimum"),
    (("--set", "leaderElection.retryPeriod=soon"), "does not match pattern"),
    (("--set", "leaderElection.leaseName=Not_A_Name"), "does not match pattern"),
    (("--set", "image.repository="), "minLength"),
    (("--set", "image.digest=sha256:abc"), "does not match pattern"),
    (("--set", "image.pullPolicy=Sometimes"), "value must be one of"),
    (("--set", "logFormat=xml"), "value must be one of"),
    (("--set", "watchNamespaces={Not_A_Namespace}"), "does not match pattern"),
    (("--set", "rbac.namespaced=true"), "rbac.namespaced=true needs watchNamespaces"),
    (("--set", "resources.limits.memory=lots"), "does not match pattern"),
    (("--set", "prometheus.address=prometheus:9090"), "does not match pattern"),
    (("--set", "replica=1"), "additional properties 'replica' not allowed"),
    (("--set", "rbac.namespace=true"), "additional properties 'namespace' not allowed"),
    (("--set", "metrics.service.enabled=false", "--set", "metrics.serviceMonitor.enabled=true"),
     "needs metrics.service.enabled=true"),
], ids=lambda v: " ".join(v) if isinstance(v, tuple) else "")
def test_bad_values_fail(helm: Path, values: tuple[str, ...], message: str) -> None:
    assert message in render_fails(helm, *values)


# ------------------------------------------------------------------------------------------------- kustomize


def _without_helm_labels(doc: Doc) -> Doc:
    labels = doc["metadata"].get("labels") or {}
    doc["metadata"]["labels"] = {k: v for k, v in labels.items() if k not in rc.HELM_ONLY_LABELS}
    return doc


def _key(doc: Doc) -> tuple[str, str, str]:
    return doc["kind"], doc["metadata"].get("namespace", ""), doc["metadata"]["name"]


def test_generated_manifests_are_up_to_date(helm: Path) -> None:
    for name, content in rc.manifest_files().items():
        path = ROOT / "manifests" / name
        assert path.is_file() and path.read_text() == content, (
            f"manifests/{name} is stale: run `python hack/render_chart.py --manifests`")


def test_install_yaml_is_the_kustomize_build(kubectl: Path) -> None:
    built = rc.kustomize()
    committed = (ROOT / "manifests" / "install.yaml").read_text()
    assert committed == rc.INSTALL_HEADER + built, (
        "manifests/install.yaml is stale: run `python hack/render_chart.py --manifests`")


def test_kustomize_base_equals_the_chart_defaults(helm: Path, kubectl: Path) -> None:
    chart = {_key(d): _without_helm_labels(d) for d in render(helm)}
    base = {_key(d): d for d in rc.documents(rc.kustomize())}
    namespace = base.pop(("Namespace", "", rc.NAMESPACE))
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert base == chart


@pytest.mark.parametrize("source", ["default", "namespaced", "everything", "kustomize"])
def test_objects_validate_against_the_kubernetes_schemas(helm: Path, kubectl: Path, source: str) -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate not installed")
    if source == "kustomize":
        docs = rc.documents(rc.kustomize())
    else:
        docs = render(helm, *{"default": (), "namespaced": NAMESPACED, "everything": EVERYTHING}[source])
    checked = 0
    for doc in docs:
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # Prometheus Operator CRDs: no schema in kubernetes-validate (promtool checks the rules)
        kv.validate(doc, K8S_SCHEMA_VERSION, strict=True)
        checked += 1
    assert checked >= 6


def test_restricted_pod_security(helm: Path) -> None:
    """What the restricted Pod Security Standard asks of the operator's pod (the namespace enforces it)."""
    pod = one(render(helm, crds=False), "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for c in pod["containers"]:
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
        assert sc["runAsNonRoot"] is True
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and all("hostPath" not in v for v in pod["volumes"])


# ------------------------------------------------------------------------------------------------ Dockerfiles


def _instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


@pytest.mark.parametrize(("dockerfile", "entrypoint"), [
    ("operator/Dockerfile", ["modelrollout", "run"]),
    ("operator/compat_probe/Dockerfile", ["compat-probe"]),
])
def test_dockerfile(dockerfile: str, entrypoint: list[str]) -> None:
    path = ROOT / dockerfile
    text = path.read_text()
    assert "Build context: the repository root" in text
    ins = _instructions(path)
    froms = [arg for op, arg in ins if op == "FROM"]
    assert froms and all(f.split()[0] == "python:3.11-slim" for f in froms), froms
    final = ins[max(i for i, (op, _) in enumerate(ins) if op == "FROM"):]
    assert ("USER", "65532:65532") in final
    # ... a user the image knows (getpass.getuser(), which kopf calls, fails for an unknown uid)
    final_runs = " ".join(arg for op, arg in final if op == "RUN")
    assert "useradd --system --uid 65532 --gid 65532" in final_runs
    assert json.loads(next(arg for op, arg in final if op == "ENTRYPOINT")) == entrypoint
    env = " ".join(arg for op, arg in final if op == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env and "HOME=/tmp" in env
    # pip installs the package from the repository (not editable: the source is not in the final image)
    runs = " ".join(arg for op, arg in ins if op == "RUN")
    assert re.search(r"pip install \.(\s|$)", runs) and "-e" not in runs.split()
    # every COPY source exists relative to the repository root (the build context)
    for op, arg in ins:
        if op == "COPY" and not arg.startswith("--from"):
            for src in arg.split()[:-1]:
                assert (ROOT / src).exists(), f"{dockerfile}: COPY {src}: not in the build context"
    readme = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["readme"]
    copied = " ".join(arg for op, arg in ins if op == "COPY")
    assert "pyproject.toml" in copied and readme in copied and "operator/" in copied
    # the scripts it runs exist in the package
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert entrypoint[0] in scripts


# ------------------------------------------------------------------------- what the wheel and the images ship

PRODUCT = ("modelrollout", "compat_probe")
"""The packages under operator/ that the wheel and the images ship."""
DEV = "devenv"
"""operator/devenv/: the local environment and the demo, run from a checkout only."""


def _is_dev(name: str) -> bool:
    parts = name.split("/")
    return DEV in parts or "localenv" in parts or parts[-1] in ("demo.py", "kwok-stages.yaml")


@pytest.mark.parametrize("dockerfile", ["operator/Dockerfile", "operator/compat_probe/Dockerfile"])
def test_dockerfile_copies_the_product_packages_only(dockerfile: str) -> None:
    readme = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["readme"]
    allowed = {"pyproject.toml", readme, *(f"operator/{pkg}" for pkg in PRODUCT)}
    sources = [src.rstrip("/") for op, arg in _instructions(ROOT / dockerfile)
               if op == "COPY" and not arg.startswith("--from") for src in arg.split()[:-1]]
    assert set(sources) == allowed, f"{dockerfile} copies {sources}; it should copy {sorted(allowed)} only"
    # and the build context leaves the dev package out as well
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert f"operator/{DEV}" in ignored


@pytest.fixture(scope="module")
def wheel_files(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The files of the wheel ``pip wheel .`` builds from this checkout, offline (no index, no build isolation:
    the installed setuptools and the test extras' ``wheel``), from a copy so that the build writes nothing here."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    readme = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["readme"]
    for name in ("pyproject.toml", readme):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "operator", src / "operator",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build"))
    assert (src / "operator" / DEV / "__init__.py").is_file(), "the wheel is built from a source with the dev package"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "--disable-pip-version-check", "-w", str(tmp / "out"), str(src)],
        capture_output=True, text=True, timeout=300, cwd=tmp)
    if done.returncode != 0:
        pytest.fail(f"pip wheel failed (it needs the test extras' `wheel`, or setuptools>=70.1):\n{done.stderr}")
    (wheel,) = (tmp / "out").glob("*.whl")
    with zipfile.ZipFile(wheel) as z:
        return z.namelist()


def test_wheel_ships_the_product_packages_and_not_the_dev_environment(wheel_files: list[str]) -> None:
    tops = {name.split("/")[0] for name in wheel_files}
    assert tops - {p for p in tops if p.endswith(".dist-info")} == set(PRODUCT), tops
    assert not [name for name in wheel_files if _is_dev(name)]
    # every module of the product packages is in it
    sources = {str(f.relative_to(ROOT / "operator")) for pkg in PRODUCT for f in (ROOT / "operator" / pkg).rglob("*.py")
               if "__pycache__" not in f.parts}
    assert sources <= set(wheel_files), sorted(sources - set(wheel_files))
    assert {"modelrollout/__main__.py", "modelrollout/py.typed", "compat_probe/__main__.py"} <= set(wheel_files)


@pytest.mark.parametrize("values", [(), NAMESPACED], ids=["cluster", "namespaced"])
def test_chaos_steps_may_create_list_and_delete_the_supported_chaos_mesh_kinds_only(
        helm: Path, values: tuple[str, ...]) -> None:
    docs = render(helm, *values, crds=False)
    roles = [r for r in by_kind(docs, "ClusterRole") + by_kind(docs, "Role") if not _leader_election(r)]
    chaos = {(res, verb) for role in roles for group, res, verb in _grants(role["rules"]) if group == "chaos-mesh.org"}
    plurals = {"podchaos", "networkchaos", "stresschaos", "httpchaos", "iochaos", "timechaos"}
    assert chaos == {(p, v) for p in plurals for v in ("list", "create", "delete")}
