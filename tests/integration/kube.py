"""kubectl-based helpers for integration tests: apply, read status, wait on a condition with a deadline."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from devenv.localenv.controlplane import ControlPlane
from devenv.localenv.procs import wait_until

from .manifests import ingress, rollout, service

Json = dict[str, Any]


def track_revision(k: Kubectl, name: str, track: str) -> str | None:
    """The revision the ModelRollout's status gives ``track`` ("stable" or "canary"): ``status.stableRevision`` or
    ``status.canaryRevision`` (None while it has none, e.g. the canary after a promotion)."""
    obj = k.get("modelrollout", name)
    rev = ((obj or {}).get("status") or {}).get(f"{track}Revision")
    return str(rev) if rev else None


def track_deployment(k: Kubectl, name: str, track: str) -> Json | None:
    """The Deployment that runs ``track``'s revision: ``NAME-REVISION`` (each revision has its own; the role is which
    revision the status names), or None when the track has no revision or its Deployment does not exist."""
    rev = track_revision(k, name, track)
    return None if rev is None else k.get("deployment", f"{name}-{rev}")


def track_pods(k: Kubectl, name: str, track: str) -> list[Json]:
    """The pods of ``track``'s revision, listed by ``modelrollout.io/rollout`` and ``modelrollout.io/revision`` (pods
    carry no role label: promotion moves the role, not the pods); [] while the track has no revision."""
    rev = track_revision(k, name, track)
    if rev is None:
        return []
    out = json.loads(k.run("get", "pods", "-l", f"modelrollout.io/rollout={name},modelrollout.io/revision={rev}",
                           "-o", "json"))
    return list(out.get("items") or [])


def deployment_names(k: Kubectl, name: str) -> list[str]:
    """The names of every Deployment of rollout ``name`` (labelled ``modelrollout.io/rollout``), sorted."""
    out = json.loads(k.run("get", "deployments", "-l", f"modelrollout.io/rollout={name}", "-o", "json"))
    return sorted(d["metadata"]["name"] for d in out.get("items") or [])


def wait_deleted(k: Kubectl, kind: str, name: str, timeout: float = 60) -> None:
    """Wait until ``kind/name`` no longer exists."""
    wait_until(lambda: k.get(kind, name) is None, timeout, 0.2, what=f"{kind}/{name} deleted")


def release_behind_nginx(k: Kubectl, name: str, steps: list[Json], **spec: Any) -> str:
    """The root Service and an Ingress to NAME-stable, then the first revision; its revision once stable."""
    k.apply(service(name) + "\n---\n" + ingress(name, f"{name}-stable"))
    k.apply(rollout(name, steps=steps, **spec))
    return str(k.wait_phase(name, "Succeeded", 90)["stableRevision"])


@dataclass
class Kubectl:
    cp: ControlPlane
    ns: str

    def run(self, *args: str, input: str | None = None, check: bool = True) -> str:
        return self.cp.kubectl("-n", self.ns, *args, input=input, check=check).stdout

    def apply(self, yaml_text: str) -> str:
        return self.run("apply", "-f", "-", input=yaml_text)

    def get(self, kind: str, name: str) -> Json | None:
        res = self.cp.kubectl("-n", self.ns, "get", kind, name, "-o", "json", check=False)
        return json.loads(res.stdout) if res.returncode == 0 else None

    def mro(self, name: str) -> Json:
        obj = self.get("modelrollout", name)
        assert obj is not None, f"ModelRollout {name} not found"
        return obj

    def status(self, name: str) -> Json:
        return dict(self.mro(name).get("status") or {})

    def wait(self, name: str, predicate: Callable[[Json], bool], timeout: float = 60, what: str = "") -> Json:
        last: list[Json] = [{}]

        def check() -> Json | None:
            st = self.status(name)
            last[0] = st
            return st if predicate(st) else None

        try:
            return wait_until(check, timeout, 0.1, what=what or f"status of {name}")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}; last status: {json.dumps(last[0], indent=1)[:3000]}") from None

    def wait_phase(self, name: str, phase: str, timeout: float = 60) -> Json:
        return self.wait(name, lambda s: s.get("phase") == phase, timeout, f"{name} phase {phase}")

    def events(self, name: str) -> list[Json]:
        out = json.loads(self.run("get", "events", "-o", "json", "--field-selector",
                                  f"involvedObject.name={name},involvedObject.kind=ModelRollout"))
        return list(out.get("items") or [])

    def annotate(self, name: str, key: str, value: str) -> None:
        self.run("annotate", "mro", name, f"{key}={value}", "--overwrite")


@dataclass
class Watch:
    """``kubectl get -w`` in the background, collecting every value a jsonpath shows (every version)."""

    k: Kubectl
    args: list[str]
    jsonpath: str
    values: list[str] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)
    """Notified on every value: :meth:`wait_for` wakes on the version it waits for."""
    _proc: Any = None

    def __enter__(self) -> Watch:
        import subprocess

        argv = [str(self.k.cp.bin_dir / "kubectl"), f"--kubeconfig={self.k.cp.kubeconfig}", "-n", self.k.ns,
                "get", *self.args, "-w", "-o", f"jsonpath={self.jsonpath}{{\"\\n\"}}"]
        self._proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            with self.cond:
                self.values.append(line.strip())
                self.cond.notify_all()

    def wait_for(self, seen: Callable[[], bool], timeout: float, what: str) -> None:
        """Until ``seen()`` (called with the values locked) holds, at most ``timeout`` seconds."""
        with self.cond:
            assert self.cond.wait_for(seen, timeout), f"{what}: {self.values[-5:]}"

    def __exit__(self, *exc: object) -> None:
        self._proc.terminate()
        self._proc.wait(10)
        self._thread.join(5)

    def distinct(self) -> list[str]:
        """Values in order with consecutive repeats folded."""
        out: list[str] = []
        for v in self.values:
            if not out or out[-1] != v:
                out.append(v)
        return out


def audit_log(cp: ControlPlane) -> Iterator[Json]:
    """Every event of the apiserver's audit log, in the log's order (of completion, not of receipt)."""
    for line in cp.audit_log.read_text().splitlines():
        try:
            yield json.loads(line)
        except ValueError:
            continue


def audit_events(cp: ControlPlane, namespace: str, resource: str, name: str | None, *,
                 subresources: bool = False, dry_runs: bool = False) -> Iterator[Json]:
    """The successful write requests the apiserver's audit log recorded for one object (``name`` None: for every
    object of ``resource`` in ``namespace``; with ``subresources``: its status and scale writes too; with
    ``dry_runs``: server-side dry runs too, which write nothing)."""
    for ev in audit_log(cp):
        ref = ev.get("objectRef") or {}
        if ref.get("namespace") != namespace or ref.get("resource") != resource or (
                name is not None and ref.get("name") != name):
            continue
        if ref.get("subresource") and not subresources:
            continue
        if "dryRun=" in (ev.get("requestURI") or "") and not dry_runs:  # a dry run writes nothing
            continue
        if ev.get("verb") in ("create", "update", "patch", "delete") and ev.get("stage") == "ResponseComplete":
            code = (ev.get("responseStatus") or {}).get("code", 0)
            if 200 <= code < 300:
                yield ev


def audit_writes(cp: ControlPlane, namespace: str, resource: str, name: str, since: float = 0) -> list[str]:
    """Verbs of the write requests the apiserver's audit log recorded for one object (server-side dry runs are not
    writes: left out)."""
    return [ev["verb"] for ev in audit_events(cp, namespace, resource, name)]


def now() -> float:
    return time.time()


def wait_audit(cp: ControlPlane, namespace: str, resource: str, name: str,
               predicate: Callable[[list[str]], bool], timeout: float = 15) -> list[str]:
    """audit_writes() once ``predicate`` holds for it (the apiserver logs a request just after answering it)."""
    last: list[list[str]] = [[]]

    def check() -> bool:
        last[0] = audit_writes(cp, namespace, resource, name)
        return predicate(last[0])

    with contextlib.suppress(TimeoutError):  # the caller's assertion shows what was there
        wait_until(check, timeout, 0.1, what=f"audit log entries for {resource}/{name}")
    return last[0]


class RefuseStatus:
    """A ValidatingAdmissionPolicy (CEL, evaluated by the apiserver) refusing, in the test's namespace, the status
    writes of ModelRollouts for which ``allowed`` (a CEL expression over ``object``) is false: the operator's other
    writes land, the status write recording them does not."""

    def __init__(self, k: Kubectl, rollout: str, allowed: str, probe: Json, message: str) -> None:
        self.k, self.rollout, self.allowed, self.probe, self.message = k, rollout, allowed, probe, message
        self.name = f"refuse-status-{k.ns}"[:63]

    def _dry_run(self) -> tuple[int, str]:
        res = self.k.cp.kubectl("-n", self.k.ns, "patch", "mro", self.rollout, "--subresource=status",
                                "--type=merge", "--dry-run=server", "-p", json.dumps({"status": self.probe}),
                                check=False)
        return res.returncode, res.stderr

    def __enter__(self) -> RefuseStatus:
        self.enforce()
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def enforce(self) -> None:
        self.k.cp.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
             "metadata": {"name": self.name},
             "spec": {"failurePolicy": "Fail",
                      "matchConstraints": {"resourceRules": [{
                          "apiGroups": ["modelrollout.io"], "apiVersions": ["*"], "operations": ["UPDATE"],
                          "resources": ["modelrollouts/status"]}]},
                      "validations": [{"expression": self.allowed, "message": self.message}]}},
            {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
             "metadata": {"name": self.name},
             "spec": {"policyName": self.name, "validationActions": ["Deny"],
                      "matchResources": {"namespaceSelector": {
                          "matchLabels": {"kubernetes.io/metadata.name": self.k.ns}}}}},
        ]}))
        # the apiserver loads policies asynchronously: probe with a server-side dry run until it refuses
        wait_until(lambda: self.message in self._dry_run()[1], 60, 0.2, what="the admission policy enforced")

    def remove(self) -> None:
        self.k.cp.kubectl("delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", self.name,
                          "--ignore-not-found", check=False)
        wait_until(lambda: self._dry_run()[0] == 0, 60, 0.2, what="the admission policy gone")


def writes_since(cp: ControlPlane, namespace: str, since: str,
                 resources: tuple[str, ...]) -> list[tuple[str, str, str]]:
    """``(resource, name, verb)`` of the successful writes (no subresource, no dry run) to objects of ``resources``
    in ``namespace`` that the apiserver received at or after ``since`` (RFC 3339, as the audit log writes it)."""
    out = []
    for line in cp.audit_log.read_text().splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        ref = ev.get("objectRef") or {}
        if ref.get("namespace") != namespace or ref.get("resource") not in resources or ref.get("subresource"):
            continue
        if "dryRun=" in (ev.get("requestURI") or "") or ev.get("stage") != "ResponseComplete":
            continue
        if ev.get("verb") in ("create", "update", "patch", "delete") and ev["requestReceivedTimestamp"] >= since \
                and 200 <= (ev.get("responseStatus") or {}).get("code", 0) < 300:
            out.append((ref["resource"], ref.get("name", ""), ev["verb"]))
    return out
