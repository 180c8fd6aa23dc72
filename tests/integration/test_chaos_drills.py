"""Fault drills (chaos steps) with the real operator: Chaos Mesh's CRDs installed (tests/data/chaos-crds), no
Chaos Mesh controller running, so the experiments just exist and the tests read what the operator wrote.

Without the CRDs a rollout with a chaos step is Invalid with "install Chaos Mesh" (this module's first test; it
skips when another module installed them). With them: the experiment selects the canary's pods only and is
deleted once its duration is over, while analysis (a real Prometheus scraping real exporters) runs and is
recorded in status.drill; a breach during the drill deletes it at once with the rollback; so does an abort; and
an operator SIGKILLed during a drill leaves nothing behind.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from devenv.localenv.controlplane import ControlPlane
from devenv.localenv.operatorproc import kill_hard
from devenv.localenv.procs import ManagedProcess, wait_until
from devenv.localenv.prometheus import Prometheus

from .exporters import Exporter, exporters
from .kube import Json, Kubectl, deployment_names
from .manifests import rollout, service

ABORT = "modelrollout.io/abort"
COMPAT = 'min(model_api_compatibility_score{rollout="{{rollout}}",track="{{track}}"})'
KILL = {"kind": "PodChaos", "spec": {"action": "pod-kill", "mode": "one"}}


def steps(duration: str) -> list[dict[str, Any]]:
    return [{"setWeight": 25}, {"chaos": {**KILL, "duration": duration}}, {"setWeight": 100}]


def experiments(k: Kubectl, name: str) -> list[Json]:
    out = json.loads(k.run("get", "podchaos", "-l", f"modelrollout.io/rollout={name}", "-o", "json"))
    return list(out.get("items") or [])


def wait_experiment(k: Kubectl, name: str, timeout: float = 60) -> Json:
    found: Json = wait_until(lambda: next(iter(experiments(k, name)), None), timeout, 0.1,
                             what=f"the PodChaos of {name}")
    return found


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def released(k: Kubectl, name: str, duration: str, **spec: Any) -> None:
    """The first revision stable, then the second one applied (it walks to the drill)."""
    k.apply(service(name))
    k.apply(rollout(name, steps=steps(duration), replicas=2, **spec))
    k.wait_phase(name, "Succeeded", 90)
    k.apply(rollout(name, image="model:2", steps=steps(duration), replicas=2, **spec))


@pytest.fixture
def watched(prometheus: Prometheus, tmp_path: Path) -> Iterator[tuple[dict[str, Exporter], dict[str, Any]]]:
    """Exporters for rollout ``drill`` and the analysis that reads them every second."""
    analysis = {"interval": "1s", "prometheus": {"address": prometheus.url, "timeout": "2s"},
                "metrics": [{"name": "api-compatibility", "query": COMPAT, "min": 0.99}]}
    with exporters(prometheus, tmp_path, "drill") as out:
        yield out, analysis


def test_a_drill_without_chaos_mesh_crds_is_invalid(k: Kubectl, crd: ControlPlane, operator: ManagedProcess) -> None:
    if crd.kubectl("get", "crd", "podchaos.chaos-mesh.org", check=False).returncode == 0:
        pytest.skip("Chaos Mesh's CRDs are already installed in this control plane (a module that installs them ran "
                    "first); the missing-CRD case needs a control plane without them")
    k.apply(service("nochaos"))
    k.apply(rollout("nochaos", steps=steps("1m")))
    message = k.wait_phase("nochaos", "Invalid", 60)["message"]
    assert message.startswith("spec.strategy.canary.steps[1].chaos: this cluster does not serve chaos-mesh.org/"
                              "v1alpha1 PodChaos; install Chaos Mesh"), message
    assert deployment_names(k, "nochaos") == []


def test_a_drill_runs_against_the_canary_pods_only_for_its_duration_while_analysis_watches(
        k: Kubectl, chaos_crds: ControlPlane, operator: ManagedProcess,
        watched: tuple[dict[str, Exporter], dict[str, Any]]) -> None:
    _, analysis = watched
    released(k, "drill", "4s", analysis=analysis)
    exp = wait_experiment(k, "drill")
    owner = k.mro("drill")["metadata"]["uid"]
    canary = k.status("drill")["canaryRevision"]  # the canary revision's pods: pods carry no role label
    assert exp["spec"]["selector"] == {"namespaces": [k.ns], "labelSelectors": {
        "app": "drill", "modelrollout.io/rollout": "drill", "modelrollout.io/revision": canary}}
    assert exp["spec"]["action"] == "pod-kill" and exp["spec"]["mode"] == "one" and exp["spec"]["duration"] == "4s"
    assert [r["uid"] for r in exp["metadata"]["ownerReferences"]] == [owner]
    running = k.status("drill")
    assert running["drill"]["name"] == exp["metadata"]["name"] and running["drill"]["outcome"] == "Running"
    assert running["currentWeight"] == 25 and running["stepProgress"] == "2/3"
    done = k.wait_phase("drill", "Succeeded", 90)
    assert experiments(k, "drill") == []
    drill = done["drill"]
    assert drill["outcome"] == "Completed" and drill["duration"] == "4s"
    assert (ts(drill["finishedAt"]) - ts(drill["startedAt"])).total_seconds() >= 4
    (metric,) = drill["metrics"]
    assert metric["name"] == "api-compatibility" and metric["evaluations"] >= 2 and metric["failures"] == 0
    assert metric["min"] == 1.0
    reasons = [e["reason"] for e in k.events("drill")]
    assert "DrillStarted" in reasons and "DrillCompleted" in reasons


def test_a_breach_during_the_drill_deletes_the_experiment_with_the_rollback(
        k: Kubectl, chaos_crds: ControlPlane, operator: ManagedProcess,
        watched: tuple[dict[str, Exporter], dict[str, Any]]) -> None:
    tracks, analysis = watched
    released(k, "drill", "10m", analysis=analysis)
    wait_experiment(k, "drill")
    tracks["canary"].set_score(0.5)
    st = k.wait(name="drill", predicate=lambda s: s.get("phase") in ("RollingBack", "RolledBack"), timeout=60)
    assert experiments(k, "drill") == [], "the experiment outlived the breach's reconcile"
    drill = st["drill"]
    assert drill["outcome"] == "Stopped" and "api-compatibility" in drill["message"]
    assert any(m["failures"] >= 1 and m["min"] == 0.5 for m in drill["metrics"])
    assert any(e["reason"] == "DrillStopped" and e["type"] == "Warning" for e in k.events("drill"))


def test_an_abort_during_the_drill_deletes_the_experiment_at_once(
        k: Kubectl, chaos_crds: ControlPlane, operator: ManagedProcess) -> None:
    released(k, "abort", "10m")
    wait_experiment(k, "abort")
    k.annotate("abort", ABORT, "true")
    st = k.wait("abort", lambda s: s.get("phase") in ("RollingBack", "RolledBack"), 60)
    assert experiments(k, "abort") == []
    assert st["drill"]["outcome"] == "Stopped" and "aborted by user" in st["drill"]["message"]


def test_a_sigkilled_operator_resumes_the_drill_and_leaves_no_experiment_behind(
        k: Kubectl, chaos_crds: ControlPlane, operator: ManagedProcess) -> None:
    released(k, "crash", "4s")
    first = wait_experiment(k, "crash")
    # a reconcile creates the experiment, then records it in status: kill once both are written
    left = k.wait("crash", lambda s: (s.get("drill") or {}).get("name") == first["metadata"]["name"], 30,
                  "status.drill naming the experiment")["drill"]
    kill_hard(operator)
    operator.start()
    done = k.wait_phase("crash", "Succeeded", 90)
    assert experiments(k, "crash") == []
    # resumed with the remaining time: the same experiment, started when it was, run once
    assert done["drill"]["name"] == first["metadata"]["name"] == left["name"]
    assert done["drill"]["startedAt"] == left["startedAt"] and done["drill"]["outcome"] == "Completed"
    # killed during the next drill, aborted while it is down: the restarted operator deletes the experiment
    k.apply(rollout("crash", image="model:3", steps=steps("10m"), replicas=2))
    wait_experiment(k, "crash")
    kill_hard(operator)
    k.annotate("crash", ABORT, "true")
    operator.start()
    k.wait("crash", lambda s: s.get("phase") in ("RollingBack", "RolledBack"), 60)
    assert experiments(k, "crash") == []


def test_deleting_the_rollout_during_a_drill_deletes_the_experiment(
        k: Kubectl, chaos_crds: ControlPlane, operator: ManagedProcess) -> None:
    released(k, "gone", "10m")
    wait_experiment(k, "gone")
    k.run("delete", "mro", "gone", "--wait=false")
    # the experiment is owned by the rollout: the garbage collector deletes it with the rollout
    wait_until(lambda: experiments(k, "gone") == [], 60, 0.2, what="the experiment deleted with its rollout")


def test_a_spec_turned_invalid_during_a_drill_deletes_the_experiment(
        k: Kubectl, chaos_crds: ControlPlane, operator: ManagedProcess) -> None:
    released(k, "turned", "10m")
    wait_experiment(k, "turned")
    bad = [{"setWeight": 0}, {"chaos": {**KILL, "duration": "10m"}}, {"setWeight": 100}]  # admitted, not runnable
    k.apply(rollout("turned", image="model:2", steps=bad, replicas=2))
    st = k.wait_phase("turned", "Invalid", 60)
    assert experiments(k, "turned") == []
    assert st["drill"]["outcome"] == "Stopped" and "no setWeight above 0" in st["drill"]["message"]
