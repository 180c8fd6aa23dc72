"""Fault drills carried out by a real Chaos Mesh: its controller-manager (hack/chaosmesh/build.sh, run out of
cluster by devenv.localenv.chaosmesh with every listener on 127.0.0.1 and its admission webhooks registered) on the
local control plane with kwok nodes.

The operator creates a PodChaos pod-kill at its chaos step; Chaos Mesh admits it through its own webhooks, adds its
finalizer, deletes the one selected canary pod (the audit log shows Chaos Mesh's own client doing it) and records
the injection in the experiment's status; no stable pod is touched. Once the duration is over the operator
deletes the experiment and Chaos Mesh finalizes it: nothing is left, no finalizer stuck. Stopping Chaos Mesh
unregisters its webhooks.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devenv.localenv import chaosmesh
from devenv.localenv.chaosmesh import ChaosMesh
from devenv.localenv.controlplane import ControlPlane
from devenv.localenv.procs import LOCALHOST, ManagedProcess, wait_until

from .conftest import built_or_unavailable, running
from .exporters import Exporter
from .keda import listening
from .kube import Json, Kubectl, audit_events, track_pods
from .manifests import rollout, service
from .test_chaos_drills import experiments, steps, ts, wait_experiment, watched  # noqa: F401  (fixture)

FINALIZER = "chaos-mesh/records"


@pytest.fixture(scope="module")
def chaos_mesh_bin() -> Path:
    return built_or_unavailable("chaosmesh", f"Chaos Mesh {chaosmesh.CHAOS_MESH_VERSION} binary")


@pytest.fixture(scope="module")
def chaos_mesh(crd: ControlPlane, chaos_mesh_bin: Path, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[ChaosMesh]:
    with running(ChaosMesh(crd, chaos_mesh_bin, tmp_path_factory.mktemp("chaos-mesh"))) as cm:
        yield cm


def pods(k: Kubectl, name: str, track: str) -> dict[str, str]:
    """{pod name: uid} of ``track``'s pods of rollout ``name`` (terminating ones left out)."""
    return {p["metadata"]["name"]: p["metadata"]["uid"] for p in track_pods(k, name, track)
            if not p["metadata"].get("deletionTimestamp")}


def injected(exp: Json) -> list[Json]:
    records = ((exp.get("status") or {}).get("experiment") or {}).get("containerRecords") or []
    return [r for r in records if r.get("phase") == "Injected" or r.get("injectedCount", 0) >= 1]


def test_the_manager_listens_on_loopback_only(chaos_mesh: ChaosMesh) -> None:
    assert chaos_mesh.proc is not None
    addresses = listening(chaos_mesh.proc.pid)
    assert addresses, "Chaos Mesh listens on nothing?"
    assert {a.rsplit(":", 1)[0] for a in addresses} == {LOCALHOST}, addresses
    assert {int(a.rsplit(":", 1)[1]) for a in addresses} == set(chaos_mesh.ports.values())


def test_chaos_mesh_kills_the_selected_canary_pod_and_finalizes_the_experiment_the_operator_deletes(
        k: Kubectl, chaos_mesh: ChaosMesh, operator: ManagedProcess,
        watched: tuple[dict[str, Exporter], dict[str, Any]]) -> None:  # noqa: F811
    _, analysis = watched
    k.apply(service("drill"))
    k.apply(rollout("drill", steps=steps("6s"), replicas=2, analysis=analysis))
    k.wait_phase("drill", "Succeeded", 90)
    stable_before = pods(k, "drill", "stable")
    assert len(stable_before) == 2
    k.apply(rollout("drill", image="model:2", steps=steps("6s"), replicas=2, analysis=analysis))

    # Chaos Mesh takes the experiment: admitted through its webhooks, its finalizer on, the kill recorded
    wait_experiment(k, "drill")
    exp: Json = wait_until(lambda: next((e for e in experiments(k, "drill") if injected(e)), None), 60, 0.1,
                           what="Chaos Mesh recording the pod-kill in the PodChaos status")
    assert FINALIZER in exp["metadata"].get("finalizers", [])
    (record,) = injected(exp)
    namespace, victim = record["id"].split("/", 1)
    assert namespace == k.ns
    canary = k.status("drill")["canaryRevision"]
    assert exp["spec"]["selector"]["labelSelectors"]["modelrollout.io/revision"] == canary
    assert chaos_mesh.proc is not None
    admitted = [line for line in chaos_mesh.proc.log_tail(5000).splitlines()
                if "auth validate passed" in line and k.ns in line]
    assert admitted, "Chaos Mesh's /validate-auth webhook never admitted the experiment"

    # the victim was a canary pod, deleted first by Chaos Mesh's own client (not by the operator, not by kwok).
    # The log is in order of completion: kwok's final delete of the terminating pod can complete before Chaos
    # Mesh's delete that set deletionTimestamp is logged, so the deletes are ordered by when they were received.
    deletes = sorted((ev for ev in audit_events(k.cp, k.ns, "pods", victim) if ev["verb"] == "delete"),
                     key=lambda ev: ts(ev["requestReceivedTimestamp"]))
    assert deletes, f"no delete of pod {victim} in the audit log"
    assert deletes[0]["user"]["username"] == chaosmesh.USER
    assert victim.startswith(f"drill-{canary}-") and victim not in stable_before
    assert victim not in pods(k, "drill", "canary")
    assert pods(k, "drill", "stable").items() <= stable_before.items()  # the operator's scale-down only

    # the operator ends the drill after its duration; Chaos Mesh removes its finalizer; nothing is left
    done = k.wait_phase("drill", "Succeeded", 120)
    wait_until(lambda: experiments(k, "drill") == [], 60, 0.2, what="the PodChaos finalized and gone")
    drill = done["drill"]
    assert drill["outcome"] == "Completed" and drill["name"] == exp["metadata"]["name"]
    assert (ts(drill["finishedAt"]) - ts(drill["startedAt"])).total_seconds() >= 6
    (metric,) = drill["metrics"]
    assert metric["evaluations"] >= 2 and metric["failures"] == 0

    # no stable pod touched: Chaos Mesh deleted exactly one pod in this namespace, the victim (the stable pods
    # of the first revision are replaced later, by the promotion)
    chaos_deletes = [ev for ev in pod_deletes(k.cp, k.ns) if ev["user"]["username"] == chaosmesh.USER]
    assert [ev["objectRef"]["name"] for ev in chaos_deletes] == [victim]


def pod_deletes(cp: ControlPlane, namespace: str) -> list[Json]:
    """The successful pod deletes in ``namespace`` the audit log recorded, in its order."""
    return [ev for ev in audit_events(cp, namespace, "pods", None) if ev["verb"] == "delete"]


def test_stop_unregisters_the_webhooks_and_ends_the_manager(crd: ControlPlane, chaos_mesh: ChaosMesh) -> None:
    """Last in the module: while it runs, the apiserver calls the webhooks on 127.0.0.1 only; ``stop()`` removes
    every webhook configuration it registered (a stopped server must not keep admitting chaos-mesh.org objects)."""
    names = {chaosmesh.MUTATING, chaosmesh.VALIDATING, chaosmesh.VALIDATING_AUTH}

    def registered() -> dict[str, Json]:
        out = {}
        for kind in ("mutatingwebhookconfigurations", "validatingwebhookconfigurations"):
            for item in json.loads(crd.kubectl("get", kind, "-o", "json").stdout)["items"]:
                if item["metadata"]["name"] in names:
                    out[item["metadata"]["name"]] = item
        return out

    running = registered()
    assert set(running) == names
    urls = {h["clientConfig"]["url"] for item in running.values() for h in item["webhooks"]}
    assert urls and all(u.startswith(f"https://{LOCALHOST}:{chaos_mesh.ports['webhook']}/") for u in urls), urls
    chaos_mesh.stop()
    assert registered() == {}
    assert chaos_mesh.proc is not None and not chaos_mesh.proc.running
