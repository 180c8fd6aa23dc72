"""Promotion by role on a real control plane (kwok pods): the pods that passed analysis are the pods that serve,
the previous stable stays up for the switch-back window and then goes, switching back within it is one write, and
an operator SIGKILLed at each transition of a promotion repeats no write (apiserver audit log)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from devenv.localenv.operatorproc import kill_hard
from devenv.localenv.procs import ManagedProcess, wait_until
from modelrollout.core.revision import revision_of

from .kube import Json, Kubectl, RefuseStatus, Watch, audit_writes, release_behind_nginx, wait_audit, writes_since
from .manifests import ingress, rollout, service

STEPS: list[Json] = [{"setWeight": 50}, {"pause": {"duration": "1s"}}]
ROUTING = ("deployments", "services", "ingresses", "configmaps")
"""What a promotion or a switch back may write (status, Events and the controllers' own objects aside)."""


def spec(delay: str) -> dict[str, Any]:
    return {"ingress": True, "strategy": {"canary": {"steps": STEPS, "scaleDownDelay": delay}}}


def revision(manifest: str) -> str:
    body = json.loads(manifest)["spec"]
    return revision_of(body["template"], body.get("model"))


def pod_uids(k: Kubectl, name: str, rev: str) -> set[str]:
    out = json.loads(k.run("get", "pods", "-l", f"modelrollout.io/rollout={name},modelrollout.io/revision={rev}",
                           "-o", "json"))
    return {p["metadata"]["uid"] for p in out["items"] if not p["metadata"].get("deletionTimestamp")}


def endpoint_uids(k: Kubectl, service: str) -> set[str]:
    out = json.loads(k.run("get", "endpointslices", "-l", f"kubernetes.io/service-name={service}", "-o", "json"))
    return {(ep.get("targetRef") or {}).get("uid", "") for s in out["items"] for ep in s.get("endpoints") or []
            if (ep.get("conditions") or {}).get("ready") is not False}


def stamp() -> str:
    """Now as the audit log writes request times (RFC 3339, microseconds, UTC)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_promotion_serves_the_analysed_pods_and_switching_back_in_the_window_is_one_write(
        k: Kubectl, operator: ManagedProcess) -> None:
    name = "roles"
    first = release_behind_nginx(k, name, STEPS, **spec("10m"))
    manifest = rollout(name, image="model:2", **spec("10m"))
    new = revision(manifest)
    k.apply(manifest)
    at_half = k.wait(name, lambda s: s.get("canaryRevision") == new and s.get("currentWeight") == 50, 90,
                     what="the canary at weight 50")
    assert at_half["phase"] in ("Progressing", "Paused")
    analysed = pod_uids(k, name, new)
    assert len(analysed) == 2, analysed  # ceil(4 x 50%)
    st = k.wait(name, lambda s: s.get("phase") == "Succeeded" and s.get("stableRevision") == new, 90,
                what="promotion")
    assert st["previousRevision"] == first and st.get("scaleDownAt")
    serving = pod_uids(k, name, new)
    assert analysed <= serving and len(serving) == 4  # the analysed pods serve, two more joined them
    stable_svc = k.get("service", f"{name}-stable") or {}
    assert stable_svc["spec"]["selector"] == {"app": name, "modelrollout.io/rollout": name,
                                              "modelrollout.io/revision": new}
    wait_until(lambda: endpoint_uids(k, f"{name}-stable") == serving, 30, 0.2, what="NAME-stable lists them")
    assert (k.get("deployment", f"{name}-{first}") or {})["spec"]["replicas"] == 4  # up for the window
    assert k.get("ingress", f"{name}-canary") is None  # the router took the canary's share back
    assert [v for v in audit_writes(k.cp, k.ns, "deployments", f"{name}-{new}")].count("delete") == 0

    since = stamp()
    k.apply(rollout(name, **spec("10m")))  # the spec set back to the previous revision, within its window
    st = k.wait(name, lambda s: s.get("phase") == "Succeeded" and s.get("stableRevision") == first, 60,
                what="the switch back")
    assert st["previousRevision"] == new
    assert writes_since(k.cp, k.ns, since, ROUTING) == [("services", f"{name}-stable", "patch")]
    wait_until(lambda: endpoint_uids(k, f"{name}-stable") == pod_uids(k, name, first), 30, 0.2,
               what="NAME-stable lists the previous stable's pods again")

    since = stamp()
    k.annotate(name, "modelrollout.io/rollback-to", new)  # and forward again with rollback-to, as one write too
    st = k.wait(name, lambda s: s.get("phase") == "Succeeded" and s.get("stableRevision") == new, 60,
                what="rollback-to within the window")
    assert st["previousRevision"] == first
    assert writes_since(k.cp, k.ns, since, ROUTING) == [("services", f"{name}-stable", "patch")]
    assert pod_uids(k, name, new) == serving  # the same pods again


class Phases(Watch):
    """``kubectl get -w`` of the rollout's phase and stable revision, waking a waiter on every new version."""

    def __init__(self, k: Kubectl, name: str) -> None:
        super().__init__(k, ["mro", name], "{.status.phase},{.status.stableRevision},{.status.message}")

    def wait_phase(self, phase: str, timeout: float = 90) -> None:
        self.wait_for(lambda: any(v.startswith(f"{phase},") for v in self.values), timeout, f"no phase {phase}")


def test_sigkill_at_each_transition_of_a_promotion_repeats_no_write(k: Kubectl, operator: ManagedProcess) -> None:
    name = "rolekill"
    first = release_behind_nginx(k, name, STEPS, replicas=2, **spec("3s"))
    manifest = rollout(name, image="model:2", replicas=2, **spec("3s"))
    new = revision(manifest)
    refused = "test: promotion status refused"
    with Phases(k, name) as phases:
        k.apply(manifest)
        phases.wait_phase("Promoting")  # 1. the canary's Deployment scaled to full size, waiting for it
        kill_hard(operator)
        operator.start()
        # 2. between the switch (NAME-stable's selector, the canary Ingress deleted) and the status recording it
        with RefuseStatus(k, name, f"!has(object.status.stableRevision) || object.status.stableRevision != '{new}'",
                          {"stableRevision": new}, refused):
            wait_until(lambda: refused in operator.log.read_text(errors="replace"), 60, 0.1,
                       what="the promotion's status write refused")
            kill_hard(operator)
        assert k.status(name)["stableRevision"] == first, "status is behind the switch"
        operator.start()
        st = k.wait(name, lambda s: s.get("phase") == "Succeeded" and s.get("stableRevision") == new, 60,
                    what="promotion recorded")
        # 3. inside the switch-back window
        kill_hard(operator)
        operator.start()
    wait_until(lambda: k.get("deployment", f"{name}-{first}") is None, 60, 0.2, what="the previous stable deleted")
    st = k.wait(name, lambda s: s.get("previousRevision") is None, 30, what="the window closed in status")
    assert st["phase"] == "Succeeded" and st["stableRevision"] == new
    selector_writes = [v for v in audit_writes(k.cp, k.ns, "services", f"{name}-stable") if v == "patch"]
    assert selector_writes == ["patch"], selector_writes  # the switch, once
    assert audit_writes(k.cp, k.ns, "ingresses", f"{name}-canary").count("delete") == 1
    deletes = wait_audit(k.cp, k.ns, "deployments", f"{name}-{first}", lambda v: "delete" in v)
    assert deletes.count("delete") == 1, deletes
    assert "delete" not in audit_writes(k.cp, k.ns, "deployments", f"{name}-{new}")
    assert len(pod_uids(k, name, new)) == 2


def legacy_objects(k: Kubectl, name: str, rev: str, template: Json, replicas: int) -> str:
    """What an operator before promotion by role made for a stable revision: ``NAME-stable`` running it, pods and
    selectors by ``modelrollout.io/track``, and both per-track Services selecting a track."""
    owner = {"apiVersion": "modelrollout.io/v1alpha1", "kind": "ModelRollout", "name": name,
             "uid": (k.get("modelrollout", name) or {})["metadata"]["uid"], "controller": True,
             "blockOwnerDeletion": True}
    managed = {"app.kubernetes.io/managed-by": "modelrollout"}
    pod = json.loads(json.dumps(template))
    pod["metadata"]["labels"] = {**pod["metadata"]["labels"], "modelrollout.io/track": "stable",
                                 "modelrollout.io/rollout": name, "modelrollout.io/revision": rev}
    pod["metadata"]["annotations"] = {"modelrollout.io/revision": rev}
    items: list[Json] = [{
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": f"{name}-stable", "ownerReferences": [owner], "annotations": {
            "modelrollout.io/revision": rev}, "labels": {"modelrollout.io/rollout": name,
                                                         "modelrollout.io/track": "stable", **managed}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name, "modelrollout.io/track": "stable"}},
                 "template": pod}}]
    for track in ("stable", "canary"):
        items.append({"apiVersion": "v1", "kind": "Service", "metadata": {
            "name": f"{name}-{track}", "ownerReferences": [owner],
            "labels": {"modelrollout.io/rollout": name, "modelrollout.io/track": track, **managed}},
            "spec": {"selector": {"app": name, "modelrollout.io/track": track},
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}})
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})


def test_a_rollout_made_before_promotion_by_role_migrates_without_dropping_traffic(
        k: Kubectl, operator: ManagedProcess) -> None:
    """The stable Service keeps ready endpoints through the upgrade, the next promotion and the old Deployment's
    removal; the Services end up selecting revisions; nothing of the old layout is left."""
    name = "legacy"
    operator.stop()
    k.apply(service(name) + "\n---\n" + ingress(name, f"{name}-stable"))
    first_manifest = rollout(name, **spec("2s"))
    k.apply(first_manifest)
    first = revision(first_manifest)
    k.cp.kubectl("-n", k.ns, "patch", "mro", name, "--subresource=status", "--type=merge", "-p", json.dumps(
        {"status": {"phase": "Succeeded", "stableRevision": first, "message": "made by an earlier operator"}}))
    k.apply(legacy_objects(k, name, first, json.loads(first_manifest)["spec"]["template"], 4))
    wait_until(lambda: len(endpoint_uids(k, f"{name}-stable")) == 4, 60, 0.2, what="the legacy stable serving")
    ready = "{range .endpoints[*]}{.conditions.ready}{\" \"}{end}"
    with Watch(k, ["endpointslices", "-l", f"kubernetes.io/service-name={name}-stable"], ready) as served:
        operator.start()
        wait_until(lambda: ((k.get("service", f"{name}-stable") or {}).get("spec") or {}).get("selector", {}).get(
            "modelrollout.io/revision") == first, 60, 0.2, what="NAME-stable pointed at the stable revision")
        assert k.get("deployment", f"{name}-stable") is not None  # it keeps serving until the next promotion
        assert k.status(name)["phase"] == "Succeeded"
        manifest = rollout(name, image="model:2", **spec("2s"))
        new = revision(manifest)
        k.apply(manifest)
        k.wait(name, lambda s: s.get("phase") == "Succeeded" and s.get("stableRevision") == new, 90,
               what="the first promotion by role")
        wait_until(lambda: k.get("deployment", f"{name}-stable") is None, 60, 0.2, what="the legacy Deployment gone")
        wait_until(lambda: endpoint_uids(k, f"{name}-stable") == pod_uids(k, name, new), 60, 0.2,
                   what="NAME-stable lists the promoted pods")
    counts = [v.split().count("true") for v in served.values if v is not None]
    assert counts and min(counts) > 0, f"NAME-stable had no ready endpoint at some point: {served.values}"
    for track, rev in (("stable", new), ("canary", new)):
        selector = (k.get("service", f"{name}-{track}") or {})["spec"]["selector"]
        assert selector == {"app": name, "modelrollout.io/rollout": name, "modelrollout.io/revision": rev}, selector
    left = json.loads(k.run("get", "deployments", "-l", f"modelrollout.io/rollout={name}", "-o", "json"))["items"]
    assert [d["metadata"]["name"] for d in left] == [f"{name}-{new}"]
