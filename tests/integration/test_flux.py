"""Real Flux (source-controller and kustomize-controller v1.9.6, hack/flux/build.sh) syncing a ModelRollout from a
git repository served on 127.0.0.1 over smart HTTP, with the real operator: sync, a new image from git, approval
by kubectl and from git (pre-approval in the same commit), abort from git, rollback, prune; the Kustomization's
health (kstatus, ``wait: true``) at each phase; and no write fight over annotations kept in git, counted per
client in the apiserver's audit log over several sync intervals."""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from devenv.localenv.controlplane import ControlPlane
from devenv.localenv.flux import Flux, GitServer
from devenv.localenv.procs import ManagedProcess, wait_until
from modelrollout.__main__ import main as modelrollout_main

from .conftest import built_or_unavailable, running
from .kube import Kubectl, audit_events
from .manifests import rollout

APPROVE, ABORT = "modelrollout.io/approve", "modelrollout.io/abort"
INTERVAL = 3
"""Seconds between Flux syncs (GitRepository and Kustomization ``interval``)."""
STEPS = [{"setWeight": 25}, {"approval": {"reason": "look at the dashboards"}}, {"setWeight": 100}]
OPERATOR_AGENTS = ("OpenAPI-Generator", "kopf/")
FLUX_AGENT = "kustomize-controller"


@pytest.fixture(scope="module")
def flux(crd: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flux]:
    bin_dir = built_or_unavailable("flux", "Flux binaries")
    crd.kubectl("create", "namespace", "flux-system", check=False)
    with running(Flux(crd, bin_dir, tmp_path_factory.mktemp("flux"),
                      feature_gates="CancelHealthCheckOnNewRevision=true")) as f:
        yield f


@pytest.fixture
def git(tmp_path: Path) -> Iterator[GitServer]:
    server = GitServer(tmp_path / "git").start()
    try:
        yield server
    finally:
        server.stop()


def manifest(image: str, annotations: dict[str, str] | None = None) -> str:
    obj = json.loads(rollout("m", image=image, steps=STEPS, replicas=2))
    if annotations:
        obj["metadata"]["annotations"] = annotations
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "m"},
               "spec": {"selector": {"app": "m"}, "ports": [{"port": 80, "targetPort": 8080}]}}
    return yaml.safe_dump_all([service, obj])


def revision_of_manifest(text: str) -> str:
    """The revision ``python -m modelrollout revision -f FILE`` prints for the manifest (what a GitOps user runs)."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        f.write(text)
        f.flush()
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert modelrollout_main(["revision", "-f", f.name]) == 0
    return out.getvalue().split()[1]


def sync_from(k: Kubectl, git: GitServer) -> None:
    """A GitRepository for ``git`` and a Kustomization with ``wait: true`` applying it to the test namespace."""
    k.apply(yaml.safe_dump_all([
        {"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository", "metadata": {"name": "models"},
         "spec": {"interval": f"{INTERVAL}s", "url": git.url, "ref": {"branch": "main"}, "timeout": "20s"}},
        {"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization", "metadata": {"name": "models"},
         "spec": {"interval": f"{INTERVAL}s", "path": "./serving", "prune": True, "wait": True, "timeout": "30s",
                  "targetNamespace": k.ns, "sourceRef": {"kind": "GitRepository", "name": "models"}}},
    ]))


def wait_synced(k: Kubectl, flux: Flux, timeout: float = 120) -> None:
    """The ModelRollout applied by Flux (the first sync: clone, artifact, apply)."""
    def there() -> bool:
        flux.check_alive()
        return k.get("modelrollout", "m") is not None

    try:
        wait_until(there, timeout, 0.5, what="ModelRollout m applied by Flux")
    except TimeoutError:
        raise AssertionError(f"{k.run('get', 'gitrepository,kustomization', '-o', 'yaml')[-4000:]}\n"
                             f"{flux.logs()}") from None


def kustomization(k: Kubectl) -> dict[str, Any]:
    obj = k.get("kustomization", "models") or {}
    return dict(obj.get("status") or {})


def ready(status: dict[str, Any]) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), {})


def wait_kustomization(k: Kubectl, flux: Flux, commit: str, want: str, words: str = "", timeout: float = 120
                       ) -> dict[str, Any]:
    """The Kustomization's Ready condition once it reports ``want`` (True/False/Unknown) for ``commit``."""
    last: list[dict[str, Any]] = [{}]

    def check() -> dict[str, Any] | None:
        flux.check_alive()
        st = kustomization(k)
        cond = ready(st)
        last[0] = st
        seen = commit in (st.get("lastAttemptedRevision") or "")
        return cond if seen and cond.get("status") == want and words in cond.get("message", "") else None

    try:
        return wait_until(check, timeout, 0.5, what=f"Kustomization Ready={want} at {commit[:8]}")
    except TimeoutError:
        raise AssertionError(f"Kustomization: {json.dumps(last[0], indent=1)[:3000]}\n{flux.logs()}") from None


def writes_by_agent(cp: ControlPlane, namespace: str, name: str, since: float, *, dry_run: bool = False
                    ) -> dict[str, int]:
    """Successful writes to ModelRollout ``name`` (status included) since ``since``, per client (audit log);
    ``dry_run``: the dry-run writes instead (Flux's diff before each apply: one per sync)."""
    out: dict[str, int] = {}
    for ev in audit_events(cp, namespace, "modelrollouts", name, subresources=True, dry_runs=dry_run):
        if ("dryRun=All" in (ev.get("requestURI") or "")) != dry_run:
            continue
        stamp = ev.get("stageTimestamp") or ""
        if _epoch(stamp) < since:
            continue
        agent = str(ev.get("userAgent") or "")
        key = "operator" if agent.startswith(OPERATOR_AGENTS) else FLUX_AGENT if FLUX_AGENT in agent else agent
        out[key] = out.get(key, 0) + 1
    return out


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() if stamp else 0.0


def events_since(k: Kubectl, since: float) -> list[dict[str, Any]]:
    return [e for e in k.events("m") if _epoch(e.get("lastTimestamp") or e.get("eventTime") or "") >= since]


def hold_quiet(k: Kubectl, flux: Flux, git_commit: str, key: str, value: str) -> None:
    """Over five sync intervals with ``key=value`` held in git: Flux keeps syncing, the operator writes at most
    once and posts at most one Event, and the annotation stays as git has it."""
    start = time.time()

    def five_syncs() -> bool:
        flux.check_alive()
        return writes_by_agent(k.cp, k.ns, "m", start, dry_run=True).get(FLUX_AGENT, 0) >= 5

    wait_until(five_syncs, 5 * INTERVAL + 60, 0.5, what="five Flux syncs (dry-run applies of the rollout)")
    writes = writes_by_agent(k.cp, k.ns, "m", start)
    events = events_since(k, start)
    assert writes.get("operator", 0) <= 1, (writes, events)
    assert len(events) <= 1, events
    assert writes.get(FLUX_AGENT, 0) <= 2, writes  # at most: put back once (after the operator's one removal)
    assert (k.mro("m")["metadata"].get("annotations") or {}).get(key) == value
    assert git_commit in (kustomization(k).get("lastAttemptedRevision") or "")


def test_flux_syncs_rollouts_and_annotations_from_git(k: Kubectl, operator: ManagedProcess, flux: Flux,
                                                      git: GitServer) -> None:
    # sync: the first revision becomes stable; the Kustomization (wait: true) is Ready once kstatus says Current
    c1 = git.commit({"serving/m.yaml": manifest("model:1")}, "model 1")
    sync_from(k, git)
    wait_synced(k, flux)
    k.wait_phase("m", "Succeeded", 120)
    wait_kustomization(k, flux, c1, "True")

    # a new image from git waits at the approval gate: kstatus InProgress, the health check waits
    c2 = git.commit({"serving/m.yaml": manifest("model:2")}, "model 2")
    st = k.wait(name="m", predicate=lambda s: s.get("phase") == "AwaitingApproval", timeout=120)
    cond = wait_kustomization(k, flux, c2, "Unknown", timeout=60)
    assert "health" in cond["message"].lower() or "progress" in cond["message"].lower(), cond
    rev2 = st["canaryRevision"]
    assert rev2 == revision_of_manifest(manifest("model:2"))  # the CLI predicts the revision the operator sees
    k.annotate("m", APPROVE, st["approval"]["token"])  # approval by kubectl
    k.wait(name="m", predicate=lambda s: s.get("phase") == "Succeeded" and s.get("stableRevision") == rev2,
           timeout=120)
    wait_kustomization(k, flux, c2, "True")

    # GitOps-only approval: the token of the new revision's gate in the same commit as the new image
    text3 = manifest("model:3")
    token3 = f"{revision_of_manifest(text3)}-1"
    c3 = git.commit({"serving/m.yaml": manifest("model:3", {APPROVE: token3})}, "model 3, pre-approved")
    st = k.wait(name="m", predicate=lambda s: s.get("phase") == "Succeeded" and s.get("stableRevision") ==
                token3.split("-")[0], timeout=120)
    assert any(h["outcome"] == "Approved" and h.get("token") == token3 and h.get("by") == FLUX_AGENT
               for h in st["history"]), st["history"]
    wait_kustomization(k, flux, c3, "True")
    hold_quiet(k, flux, c3, APPROVE, token3)  # the used token stays in git: no fight

    # abort from git: abort=REVISION for the revision in progress (the stale token still there)
    text4 = manifest("model:4", {APPROVE: token3})
    rev4 = revision_of_manifest(text4)
    git.commit({"serving/m.yaml": text4}, "model 4")
    k.wait(name="m", predicate=lambda s: s.get("phase") == "AwaitingApproval" and s.get("canaryRevision") == rev4,
           timeout=120)
    c5 = git.commit({"serving/m.yaml": manifest("model:4", {APPROVE: token3, ABORT: rev4})}, "abort model 4")
    st = k.wait(name="m", predicate=lambda s: s.get("phase") == "RolledBack", timeout=120)
    assert any(h["outcome"] == "Aborted" and h["revision"] == rev4 and h.get("by") == FLUX_AGENT
               for h in st["history"]), st["history"]
    # the rollback: kstatus Failed, so the Kustomization's health check fails with the rollout's reason
    cond = wait_kustomization(k, flux, c5, "False", timeout=120)
    assert "Failed" in cond["message"] or "failed" in cond["message"], cond
    hold_quiet(k, flux, c5, ABORT, rev4)

    # prune: the file leaves git, Flux deletes the rollout
    c6 = git.commit({"serving/m.yaml": None, "serving/keep.yaml": yaml.safe_dump(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "keep"}, "data": {"a": "b"}})}, "prune")
    wait_until(lambda: k.get("modelrollout", "m") is None, 120, 0.5, what="ModelRollout pruned")
    wait_kustomization(k, flux, c6, "True")


def test_abort_true_held_in_git_does_not_abort_the_next_revision(k: Kubectl, operator: ManagedProcess, flux: Flux,
                                                                 git: GitServer) -> None:
    git.commit({"serving/m.yaml": manifest("model:1")}, "model 1")
    sync_from(k, git)
    wait_synced(k, flux)
    k.wait_phase("m", "Succeeded", 120)
    git.commit({"serving/m.yaml": manifest("model:2")}, "model 2")
    k.wait(name="m", predicate=lambda s: s.get("phase") == "AwaitingApproval", timeout=120)
    c3 = git.commit({"serving/m.yaml": manifest("model:2", {ABORT: "true"})}, "abort")
    k.wait(name="m", predicate=lambda s: s.get("phase") == "RolledBack", timeout=120)
    hold_quiet(k, flux, c3, ABORT, "true")
    text = manifest("model:3", {ABORT: "true"})
    rev3 = revision_of_manifest(text)
    git.commit({"serving/m.yaml": text}, "model 3, abort still in git")
    st = k.wait(name="m", predicate=lambda s: s.get("phase") == "AwaitingApproval" and s.get("canaryRevision") ==
                rev3, timeout=120)
    assert not any(h["outcome"] == "Aborted" and h["revision"] == rev3 for h in st["history"])
    k.annotate("m", APPROVE, st["approval"]["token"])
    k.wait(name="m", predicate=lambda s: s.get("phase") == "Succeeded" and s.get("stableRevision") == rev3,
           timeout=120)
