"""The bad-input corpus (tests/data/invalid) against the real apiserver and one real operator.

Every file is one case whose header says what must happen to it:

* ``# expect: rejected`` — ``kubectl apply -f FILE`` fails and its stderr contains ``# message:``;
* ``# expect: invalid`` — the apiserver accepts it (after the ``# also:`` manifests from ``support/``), the
  operator sets ``status.phase: Invalid`` with ``# message:`` in ``status.message``, and it creates or changes
  no traffic object: no Deployment of the rollout (``NAME-REVISION``, labelled ``modelrollout.io/rollout``), no
  ``NAME-canary`` Ingress, no ``NAME-stable``/``NAME-canary`` Service,
  and the user's own Service/Ingress keep their resourceVersion.

One namespace and one operator serve the whole module (starting an operator per case would dominate the run
time), so every case has its own object name; after the corpus a valid rollout in the same namespace must
still reach Succeeded.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from devenv.localenv.controlplane import ControlPlane
from devenv.localenv.procs import ManagedProcess, wait_until

from .conftest import running_operator
from .kube import Kubectl, track_deployment
from .manifests import rollout, service

CORPUS = Path(__file__).resolve().parents[1] / "data" / "invalid"
SUPPORT = CORPUS / "support"
INVALID_TIMEOUT = 30.0
KEYS = ("expect", "message", "also")


@dataclass(frozen=True)
class Case:
    path: Path
    expect: str
    message: str
    also: tuple[str, ...] = ()
    docs: list[dict[str, object]] = field(default_factory=list, compare=False)

    @property
    def name(self) -> str:
        meta = self.docs[0]["metadata"]
        assert isinstance(meta, dict)
        return str(meta["name"])


def load_case(path: Path) -> Case:
    """A corpus file: its ``# key: value`` header and its YAML documents."""
    head: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        key, sep, value = line[1:].strip().partition(":")
        if sep and key.strip() in KEYS:
            head.setdefault(key.strip(), []).append(value.strip())
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    return Case(path, head["expect"][0], head["message"][0], tuple(head.get("also", ())), docs)


CASES = [load_case(p) for p in sorted(CORPUS.glob("*.yaml"))]


# --------------------------------------------------------------------------- one namespace, one operator


@pytest.fixture(scope="module")
def corpus_namespace(crd: ControlPlane) -> Iterator[str]:
    name = f"invalid-corpus-{uuid.uuid4().hex[:6]}"
    crd.kubectl("create", "namespace", name)
    wait_until(lambda: crd.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode == 0,
               30, what=f"ServiceAccount {name}/default")
    try:
        yield name
    finally:
        crd.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def k(crd: ControlPlane, corpus_namespace: str) -> Kubectl:
    """Module-scoped stand-in for conftest's ``k``: kubectl bound to the corpus namespace."""
    return Kubectl(crd, corpus_namespace)


@pytest.fixture(scope="module")
def operator(crd: ControlPlane, corpus_namespace: str,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedProcess]:
    """Module-scoped stand-in for conftest's ``operator``: one operator for the whole corpus."""
    with running_operator(crd, corpus_namespace, tmp_path_factory.mktemp("invalid-corpus") / "operator.log") as proc:
        yield proc


# --------------------------------------------------------------------------- helpers


def resource_versions(k: Kubectl, files: tuple[str, ...]) -> dict[tuple[str, str], str]:
    """(kind, name) -> resourceVersion of every object the support files define."""
    out = {}
    for fname in files:
        for doc in yaml.safe_load_all((SUPPORT / fname).read_text()):
            if not doc:
                continue
            kind, name = doc["kind"], doc["metadata"]["name"]
            obj = k.get(kind.lower(), name)
            assert obj is not None, f"support object {kind}/{name} from {fname} is missing"
            out[(kind, name)] = obj["metadata"]["resourceVersion"]
    return out


def traffic_objects(k: Kubectl, name: str) -> list[str]:
    """Every object the operator would create for rollout ``name`` that exists now (its Deployments, NAME-REVISION,
    are found by their label)."""
    found = [f"{kind}/{obj}" for kind, obj in (
        ("service", f"{name}-stable"), ("service", f"{name}-canary"),
        ("ingress", f"{name}-canary"),
    ) if k.get(kind, obj) is not None]
    labelled = json.loads(k.run("get", "deployments,services,ingresses", "-l", f"modelrollout.io/rollout={name}",
                                "-o", "json"))
    found += [f"{o['kind']}/{o['metadata']['name']} (labelled)" for o in labelled["items"]]
    return found


# --------------------------------------------------------------------------- the corpus


@pytest.mark.parametrize("case", CASES, ids=[c.path.stem for c in CASES])
def test_bad_input_is_refused_naming_the_field(k: Kubectl, operator: ManagedProcess, case: Case) -> None:
    if case.expect == "rejected":
        res = k.cp.kubectl("-n", k.ns, "apply", "-f", str(case.path), check=False)
        assert res.returncode != 0, f"{case.path.name}: accepted by the apiserver:\n{res.stdout}"
        assert case.message in res.stderr, f"{case.message!r} not in:\n{res.stderr}"
        return

    assert case.expect == "invalid", case.expect
    for fname in case.also:
        k.run("apply", "-f", str(SUPPORT / fname))
    before = resource_versions(k, case.also)
    k.run("apply", "-f", str(case.path))
    st = k.wait(case.name, lambda s: s.get("phase") == "Invalid" and case.message in (s.get("message") or ""),
                INVALID_TIMEOUT, f"{case.name} Invalid with {case.message!r}")
    assert st["observedGeneration"] == 1
    own = {f"{kind.lower()}/{name}" for kind, name in before}
    assert [o for o in traffic_objects(k, case.name) if o not in own] == []
    assert resource_versions(k, case.also) == before, "the user's Service/Ingress was changed"
    operator.check_alive()


def test_garbage_approval_on_a_new_object_is_a_warning_not_invalid(k: Kubectl, operator: ManagedProcess) -> None:
    name = "approve-garbage"
    body = json.loads(rollout(name, replicas=2))
    body["metadata"]["annotations"] = {"modelrollout.io/approve": "garbage"}
    k.apply(service(name))
    k.apply(json.dumps(body))
    st = k.wait_phase(name, "Succeeded", 90)
    assert all(h["outcome"] != "Approved" for h in st.get("history") or [])

    def warned() -> bool:
        return any(e["type"] == "Warning" and "modelrollout.io/approve" in e["message"] for e in k.events(name))

    wait_until(warned, 30, 0.1, what="Warning event about modelrollout.io/approve")
    assert not any(e["reason"] == "PhaseInvalid" for e in k.events(name))
    wait_until(lambda: "modelrollout.io/approve" not in (k.mro(name)["metadata"].get("annotations") or {}), 30, 0.1,
               what="the garbage annotation consumed")


def test_operator_keeps_serving_after_the_corpus(k: Kubectl, operator: ManagedProcess) -> None:
    """Runs last in this module: a valid rollout in the same namespace still goes through."""
    operator.check_alive()
    k.apply(service("after-corpus"))
    k.apply(rollout("after-corpus", replicas=2))
    k.wait_phase("after-corpus", "Succeeded", 90)
    dep = track_deployment(k, "after-corpus", "stable")
    assert dep is not None and dep["status"].get("availableReplicas") == 2
    # the invalid cases applied earlier are still Invalid, and still nothing was created for them
    for case in CASES:
        obj = k.get("modelrollout", case.name) if case.expect == "invalid" else None
        if obj is None:  # not applied in this run (deselected)
            continue
        assert (obj.get("status") or {}).get("phase") == "Invalid", case.path.name
        own = {f"{kind.lower()}/{name}" for kind, name in resource_versions(k, case.also)}
        assert [o for o in traffic_objects(k, case.name) if o not in own] == [], case.path.name
