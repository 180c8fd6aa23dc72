"""Pre-warmed rollback with the real operator: image pre-pull DaemonSet, warm stable, one-write rollback."""

from __future__ import annotations

import json
from typing import Any

from devenv.localenv.procs import ManagedProcess, wait_until

from .kube import Kubectl, Watch, audit_writes, track_deployment, wait_audit
from .manifests import ingress, rollout, service


def spec_for(name: str, **rollback: Any) -> dict[str, Any]:
    return {"traffic": {"service": {"name": name}, "ingress": {"name": name}},
            "rollback": {"scaleDownDelay": "1s", **rollback}}


def with_scheduling(manifest: str) -> str:
    obj = json.loads(manifest)
    pod = obj["spec"]["template"]["spec"]
    pod["nodeSelector"] = {"type": "kwok"}
    pod["tolerations"] = [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]
    return json.dumps(obj)


def begin(k: Kubectl, name: str, steps: list[dict[str, Any]], spec: dict[str, Any]) -> str:
    k.apply(service(name) + "\n---\n" + ingress(name, f"{name}-stable"))
    k.apply(with_scheduling(rollout(name, steps=steps, **spec)))
    return str(k.wait_phase(name, "Succeeded", 90)["stableRevision"])


def test_prewarm_daemonset_pulls_both_images_before_traffic_then_is_trimmed(
        k: Kubectl, operator: ManagedProcess) -> None:
    steps = [{"setWeight": 25}, {"setWeight": 100}]
    spec = spec_for("pw", prewarm={"enabled": True, "keepRevisions": 1})
    first = begin(k, "pw", steps, spec)
    with Watch(k, ["mro", "pw"], "{.status.phase} {.status.currentWeight}") as phases, \
            Watch(k, ["daemonset", "-l", "modelrollout.io/prewarm=true"],
                  "{.metadata.annotations.modelrollout\\.io/images}") as images:
        k.apply(with_scheduling(rollout("pw", image="model:2", steps=steps, **spec)))
        st = k.wait(name="pw", predicate=lambda s: s.get("phase") == "Succeeded" and s["stableRevision"] != first,
                    timeout=120)
    seen = [line.split() for line in phases.values if line.strip()]
    prewarming = [i for i, (phase, *_rest) in enumerate(seen) if phase == "Prewarming"]
    weighted = [i for i, parts in enumerate(seen) if len(parts) > 1 and parts[1] != "0"]
    assert prewarming and weighted and max(prewarming) < min(weighted), seen
    assert json.loads(images.values[0]) == ["model:1", "model:2"]
    ds = k.get("daemonset", "pw-prewarm")
    assert ds is not None
    pod = ds["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"type": "kwok"} and pod["tolerations"][0]["key"] == "gpu"
    assert [c["image"] for c in pod["initContainers"]] == ["model:2"], "trimmed to keepRevisions=1 after promotion"
    assert pod["initContainers"][0]["command"] == ["true"] and pod["containers"][0]["name"] == "pause"
    assert ds["metadata"]["ownerReferences"][0]["kind"] == "ModelRollout"
    assert st.get("prewarm") is None
    assert [h["images"] for h in st["revisionImages"]] == [["model:2"]]


def test_a_node_that_cannot_pull_fails_before_any_traffic(k: Kubectl, operator: ManagedProcess) -> None:
    steps = [{"setWeight": 25}, {"setWeight": 100}]
    spec = spec_for("np", prewarm={"enabled": True, "timeout": "5s"})
    first = begin(k, "np", steps, spec)
    k.apply(with_scheduling(rollout("np", image="unpullable.invalid/model:2", steps=steps, **spec)))
    st = k.wait_phase("np", "Failed", 90)
    msg = st["message"]
    assert "no traffic moved" in msg and "ImagePullBackOff" in msg and "node kwok-node-" in msg, msg
    assert st["stableRevision"] == first and st["currentWeight"] == 0
    assert k.get("ingress", "np-canary") is None
    assert any(c["type"] == "Stalled" and c["status"] == "True" for c in st["conditions"])


def test_rollback_during_canary_is_one_routing_write_and_no_scale_up(k: Kubectl, operator: ManagedProcess) -> None:
    steps = [{"setWeight": 30}, {"pause": {}}, {"setWeight": 100}]
    spec = spec_for("one", prewarm={"enabled": True})
    first = begin(k, "one", steps, spec)
    k.apply(with_scheduling(rollout("one", image="model:2", steps=steps, **spec)))
    k.wait_phase("one", "AwaitingApproval", 90)
    ingress_before = audit_writes(k.cp, k.ns, "ingresses", "one-canary")
    stable_before = audit_writes(k.cp, k.ns, "deployments", f"one-{first}")
    stable = track_deployment(k, "one", "stable")
    assert stable is not None and stable["metadata"]["name"] == f"one-{first}"
    assert stable["status"]["readyReplicas"] == 4, "stable stays warm at full size"
    k.annotate("one", "modelrollout.io/abort", "true")
    k.wait_phase("one", "RolledBack", 60)
    wait_until(lambda: (track_deployment(k, "one", "canary") or {}).get("spec", {}).get("replicas") == 0, 30,
               what="canary at 0")
    after = wait_audit(k.cp, k.ns, "ingresses", "one-canary", lambda w: w[-1:] == ["delete"])
    assert after[len(ingress_before):] == ["delete"]
    assert audit_writes(k.cp, k.ns, "deployments", f"one-{first}") == stable_before, "no stable scale-up"


def test_rollback_to_after_promotion_takes_the_fast_path_with_the_prewarmed_image(
        k: Kubectl, operator: ManagedProcess) -> None:
    import subprocess
    import sys
    from pathlib import Path

    steps = [{"setWeight": 50}, {"setWeight": 100}]
    spec = spec_for("back", prewarm={"enabled": True, "keepRevisions": 2})
    v1 = begin(k, "back", steps, spec)
    k.apply(with_scheduling(rollout("back", image="model:2", steps=steps, **spec)))
    v2 = k.wait(name="back", predicate=lambda s: s.get("phase") == "Succeeded" and s["stableRevision"] != v1,
                timeout=120)["stableRevision"]
    ds = k.get("daemonset", "back-prewarm")
    assert ds is not None
    assert sorted(c["image"] for c in ds["spec"]["template"]["spec"]["initContainers"]) == ["model:1", "model:2"]
    ingress_writes = audit_writes(k.cp, k.ns, "ingresses", "back-canary")
    env = {**__import__("os").environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "operator")}
    out = subprocess.run([sys.executable, "-m", "modelrollout.plugin", "rollback-to", "back", "-n", k.ns,
                          "--kubeconfig", str(k.cp.kubeconfig)], capture_output=True, text=True, env=env, check=True)
    assert v1 in out.stdout
    st = k.wait(name="back", predicate=lambda s: s.get("phase") == "Succeeded" and s["stableRevision"] == v1,
                timeout=120)
    stable = track_deployment(k, "back", "stable")
    assert stable is not None and stable["metadata"]["name"] == f"back-{v1}"
    assert stable["spec"]["template"]["spec"]["containers"][0]["image"] == "model:1"
    assert k.mro("back")["spec"]["template"]["spec"]["containers"][0]["image"] == "model:1"
    assert audit_writes(k.cp, k.ns, "ingresses", "back-canary") == ingress_writes, "no traffic steps"
    assert any(h["outcome"] == "RollbackTo" and h["revision"] == v1 for h in st["history"])
    assert v2 != v1
