"""Pod chaos with kwok's fake pods: canary or stable pods turned NotReady (the status subresource patched the way a
kubelet would report a failing readiness probe) or deleted in the middle of a rollout.

kwok only makes Pending pods Ready (its pod-ready stage), so a Running pod patched NotReady stays NotReady until
it is deleted; the ReplicaSet's replacement then comes up Ready.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from devenv.localenv.procs import ManagedProcess, wait_until

from .kube import Json, Kubectl, Watch, release_behind_nginx, track_deployment, track_pods, wait_audit
from .manifests import nginx, rollout

APPROVE = "modelrollout.io/approve"
CANARY_WEIGHT = "{.metadata.annotations.nginx\\.ingress\\.kubernetes\\.io/canary-weight}"


def pods(k: Kubectl, name: str, track: str) -> list[Json]:
    return [p for p in track_pods(k, name, track) if not p["metadata"].get("deletionTimestamp")]


def ready(pod: Json) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def make_not_ready(k: Kubectl, pod: Json) -> None:
    """What a kubelet reports when the readiness probe fails: Ready and ContainersReady False, containers not ready."""
    conditions = [{"type": t, "status": "False", "reason": "ChaosNotReady"} for t in ("Ready", "ContainersReady")]
    containers = [{"name": c["name"], "ready": False} for c in pod["spec"]["containers"]]
    k.run("patch", "pod", pod["metadata"]["name"], "--subresource=status", "--type=strategic", "-p",
          json.dumps({"status": {"conditions": conditions, "containerStatuses": containers}}))


def ready_replicas(k: Kubectl, name: str, track: str) -> int:
    dep = track_deployment(k, name, track) or {}
    return int((dep.get("status") or {}).get("readyReplicas") or 0)


def test_canary_pods_not_ready_mid_step_hold_the_weight_and_roll_back_at_the_deadline(
        k: Kubectl, operator: ManagedProcess) -> None:
    name = "cnr"
    steps: list[dict[str, Any]] = [{"setWeight": 25}, {"pause": {}}, {"setWeight": 75}, {"setWeight": 100}]
    spec = {**nginx(name), "progressDeadlineSeconds": 10, "rollback": {"scaleDownDelay": "0s"}}
    first = release_behind_nginx(k, name, steps, **spec)
    with Watch(k, ["ingress", "-l", "modelrollout.io/track=canary"], CANARY_WEIGHT) as router:
        k.apply(rollout(name, image="model:2", steps=steps, **spec))
        gate = k.wait_phase(name, "AwaitingApproval", 90)
        assert gate["currentWeight"] == 25
        [victim] = pods(k, name, "canary")
        broken_at = datetime.now(UTC)
        make_not_ready(k, victim)
        wait_until(lambda: ready_replicas(k, name, "canary") == 0, 30, what="the canary Deployment sees 0 ready")
        k.annotate(name, APPROVE, gate["approval"]["token"])
        # the next step scales the canary up but does not move traffic while a canary pod is not ready
        held = k.wait(name, lambda s: "waiting for canary pods" in (s.get("message") or ""), 60, "holding")
        assert held["currentWeight"] == 25 and held["currentStep"] == 2, held
        assert not ready(k.get("pod", victim["metadata"]["name"]) or {}), "kwok left the pod NotReady"
        st = k.wait_phase(name, "RolledBack", 90)
    assert router.distinct() == ["25"], f"no weight increase while canary pods were not ready: {router.values}"
    writes = wait_audit(k.cp, k.ns, "ingresses", f"{name}-canary", lambda w: w[-1:] == ["delete"])
    assert writes == ["patch", "delete"], writes
    assert st["stableRevision"] == first and st["currentWeight"] == 0
    assert "canary pods not ready after 10s" in st["message"] and "pods not ready" in st["message"], st["message"]
    rolled = [h for h in st["history"] if h["outcome"] == "RolledBack"]
    assert len(rolled) == 1
    waited = (datetime.fromisoformat(rolled[0]["at"]) - broken_at).total_seconds()
    assert waited >= 10, f"rolled back {waited:.1f}s after the pod broke, before the 10s progress deadline"
    assert any(e["reason"] == "RollingBack" and e["type"] == "Warning" for e in k.events(name))
    wait_until(lambda: (track_deployment(k, name, "canary") or {}).get("spec", {}).get("replicas") == 0, 30,
               what="canary scaled to zero")


def test_stable_pods_lost_mid_rollout_hold_the_weight_and_say_why(k: Kubectl, operator: ManagedProcess) -> None:
    name = "snr"
    steps: list[dict[str, Any]] = [{"setWeight": 25}, {"pause": {}}, {"setWeight": 50}, {"setWeight": 100}]
    spec = nginx(name)
    release_behind_nginx(k, name, steps, **spec)
    with Watch(k, ["ingress", "-l", "modelrollout.io/track=canary"], CANARY_WEIGHT) as router:
        k.apply(rollout(name, image="model:2", steps=steps, **spec))
        gate = k.wait_phase(name, "AwaitingApproval", 90)
        lost = pods(k, name, "stable")[:2]
        assert len(lost) == 2
        for pod in lost:
            make_not_ready(k, pod)
        wait_until(lambda: ready_replicas(k, name, "stable") == 2, 30, what="the stable Deployment sees 2 ready")
        k.annotate(name, APPROVE, gate["approval"]["token"])
        held = k.wait(name, lambda s: "could not take all traffic back" in (s.get("message") or ""), 60, "holding")
        assert "holding weight 25: stable has 2/4 ready pods" in held["message"], held["message"]
        assert held["currentWeight"] == 25 and held["phase"] == "Progressing"
        conditions = {c["type"]: c for c in held["conditions"]}
        assert "stable has 2/4 ready pods" in conditions["Progressing"]["message"]
        assert conditions["Ready"]["status"] == "False"
        assert (track_deployment(k, name, "canary") or {})["spec"]["replicas"] == 1, "the canary was not grown"
        assert [v for v in router.values if v] == ["25"], router.values
        assert wait_audit(k.cp, k.ns, "ingresses", f"{name}-canary", lambda w: len(w) >= 1) == ["patch"]
        # the lost stable pods are deleted (as an evicted pod would be); their replacements come up Ready
        k.run("delete", "pod", "--wait=false", *(p["metadata"]["name"] for p in lost))
        st = k.wait(name, lambda s: s.get("phase") == "Succeeded" and s.get("stableRevision") == held["canaryRevision"],
                    120, "Succeeded")
    assert router.distinct() == ["25", "50", "100"], router.values
    writes = wait_audit(k.cp, k.ns, "ingresses", f"{name}-canary", lambda w: w[-1:] == ["delete"])
    assert writes == ["patch", "patch", "patch", "delete"], writes
    assert st["currentWeight"] == 0
