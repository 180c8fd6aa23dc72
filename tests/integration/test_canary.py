"""The real operator against the local control plane: canary rollouts over Service and NGINX Ingress."""

from __future__ import annotations

import json
from datetime import datetime

from devenv.localenv.operatorproc import kill_hard
from devenv.localenv.procs import ManagedProcess

from .kube import Kubectl, Watch, track_deployment, wait_audit, wait_deleted
from .manifests import ingress, rollout, service


def release(k: Kubectl, name: str, manifest: str, *, extra: str = "") -> str:
    """Apply the first revision and wait until it is stable; its revision."""
    for doc in (extra, manifest):
        if doc:
            k.apply(doc)
    st = k.wait_phase(name, "Succeeded", 90)
    return str(st["stableRevision"])


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_operator_picks_up_a_rollout(k: Kubectl, operator: ManagedProcess) -> None:
    k.apply(service("smoke"))
    k.apply(rollout("smoke", replicas=2))
    st = k.wait(name="smoke", predicate=lambda s: s.get("observedGeneration") == 1 and "phase" in s)
    assert st["phase"] in ("Pending", "Progressing", "Succeeded")
    st = k.wait_phase("smoke", "Succeeded", 90)
    dep = track_deployment(k, "smoke", "stable")
    assert dep is not None and dep["metadata"]["name"] == f"smoke-{st['stableRevision']}"
    assert dep["status"].get("availableReplicas") == 2
    assert dep["metadata"]["ownerReferences"][0]["kind"] == "ModelRollout"
    k.cp.kubectl("-n", k.ns, "wait", "--for=condition=Ready", "mro/smoke", "--timeout=30s")


def test_four_step_rollout_over_service_ends_succeeded(k: Kubectl, operator: ManagedProcess) -> None:
    steps = [{"setWeight": 25}, {"pause": {"duration": "3s"}}, {"setWeight": 50}, {"setWeight": 100}]
    first = release(k, "svc", rollout("svc", steps=steps), extra=service("svc"))
    with Watch(k, ["mro", "svc"], "{.status.currentStep} {.status.stepStartedAt} {.status.currentWeight}") as w, \
            Watch(k, ["deployment", "-l", "modelrollout.io/rollout=svc"], "{.metadata.name} {.spec.replicas}") as deps:
        k.apply(rollout("svc", image="model:2", steps=steps))
        st = k.wait(name="svc", predicate=lambda s: s.get("phase") == "Succeeded" and s.get("stableRevision") != first,
                    timeout=120)
    assert st["canaryRevision"] is None if "canaryRevision" in st else True
    second = st["stableRevision"]
    # the canary's Deployment became the stable one: its pods, at full size, are the ones that were analysed
    dep = track_deployment(k, "svc", "stable")
    assert dep is not None and dep["metadata"]["name"] == f"svc-{second}"
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "model:2"
    assert dep["spec"]["replicas"] == 4
    # the Service router's share is the replica ratio: the previous stable's Deployment is deleted at the switch
    wait_deleted(k, "deployment", f"svc-{first}", 30)
    # the canary was made at the first weight's size and scaled to carry each weight: ceil(4*25/100)=1, 2, 4, and
    # stays at 4 as the stable
    canary_replicas: list[str] = []
    for line in deps.values:
        dep_name, _, replicas = line.partition(" ")
        if dep_name == f"svc-{second}" and replicas and canary_replicas[-1:] != [replicas]:
            canary_replicas.append(replicas)
    assert canary_replicas == ["1", "2", "4"]
    # the timed pause held for its duration (operator clock: step 1 began, step 2 began >= 3 s later)
    starts = {}
    for line in w.values:
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit():
            starts.setdefault(int(parts[0]), ts(parts[1]))
    assert (starts[2] - starts[1]).total_seconds() >= 3.0
    outcomes = [h["outcome"] for h in st["history"]]
    assert outcomes[-1] == "Succeeded" and "Started" in outcomes


def test_nginx_rollout_moves_the_canary_ingress_weight_step_by_step(k: Kubectl, operator: ManagedProcess) -> None:
    steps = [{"setWeight": 10}, {"setWeight": 30}, {"setWeight": 60}, {"setWeight": 100}]
    spec = {"traffic": {"service": {"name": "ngx"}, "ingress": {"name": "ngx"},
                        "headerRoute": {"name": "X-Canary", "value": "yes"}}}
    first = release(k, "ngx", rollout("ngx", steps=steps, **spec),
                    extra=service("ngx") + "\n---\n" + ingress("ngx", "ngx-stable"))
    user_before = k.get("ingress", "ngx")
    with Watch(k, ["ingress", "-l", "modelrollout.io/track=canary"],
               "{.metadata.annotations.nginx\\.ingress\\.kubernetes\\.io/canary-weight}") as w:
        k.apply(rollout("ngx", image="model:2", steps=steps, **spec))
        k.wait(name="ngx", predicate=lambda s: s.get("phase") == "Succeeded" and s.get("stableRevision") != first,
               timeout=120)
    assert w.distinct() == ["10", "30", "60", "100"]
    assert k.get("ingress", "ngx-canary") is None, "the canary Ingress is removed after promotion"
    st = k.status("ngx")
    stable = track_deployment(k, "ngx", "stable")
    assert stable is not None and stable["metadata"]["name"] == f"ngx-{st['stableRevision']}"
    assert stable["spec"]["template"]["spec"]["containers"][0]["image"] == "model:2"
    # the previous stable stays up, at its size, for scaleDownDelay (30s by default), then is deleted
    previous = k.get("deployment", f"ngx-{first}")
    assert previous is not None and previous["spec"]["replicas"] == 4, "the previous stable is kept for the delay"
    wait_deleted(k, "deployment", f"ngx-{first}", 60)
    user_after = k.get("ingress", "ngx")
    assert user_before is not None and user_after is not None
    assert user_after["metadata"]["resourceVersion"] == user_before["metadata"]["resourceVersion"]
    writes = wait_audit(k.cp, k.ns, "ingresses", "ngx-canary", lambda w: w[-1:] == ["delete"])
    assert writes == ["patch", "patch", "patch", "patch", "delete"], writes


def test_canary_ingress_copies_the_user_ingress_and_pins_the_header(k: Kubectl, operator: ManagedProcess) -> None:
    steps = [{"setWeight": 20}, {"pause": {}}, {"setWeight": 100}]
    spec = {"traffic": {"service": {"name": "pin"}, "ingress": {"name": "pin"},
                        "headerRoute": {"name": "X-Canary", "value": "yes"}}}
    release(k, "pin", rollout("pin", steps=steps, **spec),
            extra=service("pin") + "\n---\n" + ingress("pin", "pin-stable"))
    k.apply(rollout("pin", image="model:2", steps=steps, **spec))
    k.wait_phase("pin", "AwaitingApproval", 90)
    canary = k.get("ingress", "pin-canary")
    assert canary is not None
    ann = canary["metadata"]["annotations"]
    assert ann["nginx.ingress.kubernetes.io/canary"] == "true"
    assert ann["nginx.ingress.kubernetes.io/canary-weight"] == "20"
    assert ann["nginx.ingress.kubernetes.io/canary-by-header"] == "X-Canary"
    assert ann["nginx.ingress.kubernetes.io/canary-by-header-value"] == "yes"
    backend = canary["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"]
    assert backend == "pin-canary"
    assert canary["spec"]["ingressClassName"] == "nginx"


def test_indefinite_pause_holds_until_annotated_with_its_token(k: Kubectl, operator: ManagedProcess) -> None:
    steps = [{"setWeight": 25}, {"pause": {}}, {"setWeight": 100}]
    release(k, "hold", rollout("hold", steps=steps), extra=service("hold"))
    k.apply(rollout("hold", image="model:2", steps=steps))
    st = k.wait_phase("hold", "AwaitingApproval", 90)
    token = st["approval"]["token"]
    expected = f"kubectl annotate mro hold -n {k.ns} modelrollout.io/approve={token} --overwrite"
    assert st["approval"]["command"] == expected
    k.annotate("hold", "modelrollout.io/approve", "not-a-token")

    def rejected() -> bool:
        return any(e["reason"] == "ApprovalRejected" and token in e["message"] for e in k.events("hold"))

    from devenv.localenv.procs import wait_until

    wait_until(rejected, 30, 0.1, what="ApprovalRejected event")
    assert k.status("hold")["phase"] == "AwaitingApproval"
    assert k.status("hold")["currentWeight"] == 25
    k.annotate("hold", "modelrollout.io/approve", token)
    st = k.wait(name="hold", predicate=lambda s: s.get("phase") == "Succeeded" and s.get("currentStep") is None,
                timeout=90)
    assert any(h["outcome"] == "Approved" and h.get("token") == token for h in st["history"])
    assert "modelrollout.io/approve" not in (k.mro("hold")["metadata"].get("annotations") or {})


def test_template_change_mid_rollout_restarts_with_the_newest_revision(k: Kubectl, operator: ManagedProcess) -> None:
    steps = [{"setWeight": 25}, {"pause": {}}, {"setWeight": 100}]
    release(k, "chg", rollout("chg", steps=steps), extra=service("chg"))
    k.apply(rollout("chg", image="model:2", steps=steps))
    abandoned = k.wait_phase("chg", "AwaitingApproval", 90)["canaryRevision"]
    k.apply(rollout("chg", image="model:3", steps=steps))
    st = k.wait(name="chg", predicate=lambda s: s.get("canaryRevision") not in (None, abandoned)
                and s.get("phase") == "AwaitingApproval", timeout=90)
    assert any(h["outcome"] == "Superseded" and h["revision"] == abandoned for h in st["history"])
    k.annotate("chg", "modelrollout.io/approve", st["approval"]["token"])
    done = k.wait_phase("chg", "Succeeded", 90)
    dep = track_deployment(k, "chg", "stable")
    assert dep is not None and dep["spec"]["template"]["spec"]["containers"][0]["image"] == "model:3"
    assert done["stableRevision"] == st["canaryRevision"]
    wait_deleted(k, "deployment", f"chg-{abandoned}", 30)  # the superseded canary's Deployment is deleted


def test_sigkill_during_pause_and_weight_step_repeats_no_router_write(
        k: Kubectl, operator: ManagedProcess) -> None:
    steps = [{"setWeight": 20}, {"pause": {"duration": "4s"}}, {"setWeight": 40}, {"pause": {}},
             {"setWeight": 70}, {"setWeight": 100}]
    spec = {"traffic": {"service": {"name": "kill"}, "ingress": {"name": "kill"}}}
    release(k, "kill", rollout("kill", steps=steps, **spec),
            extra=service("kill") + "\n---\n" + ingress("kill", "kill-stable"))
    with Watch(k, ["ingress", "-l", "modelrollout.io/track=canary"],
               "{.metadata.annotations.nginx\\.ingress\\.kubernetes\\.io/canary-weight}") as w:
        k.apply(rollout("kill", image="model:2", steps=steps, **spec))
        k.wait_phase("kill", "Paused", 90)
        kill_hard(operator)  # during the timed pause
        operator.start()
        k.wait(name="kill", predicate=lambda s: s.get("currentWeight") == 40, timeout=60)
        kill_hard(operator)  # right after a weight step
        operator.start()
        st = k.wait_phase("kill", "AwaitingApproval", 60)
        k.annotate("kill", "modelrollout.io/approve", st["approval"]["token"])
        from devenv.localenv.procs import wait_until

        wait_until(lambda: "70" in w.values, 60, 0.05, what="weight 70")
        kill_hard(operator)
        operator.start()
        k.wait(name="kill", predicate=lambda s: s.get("phase") == "Succeeded" and s.get("canaryRevision") is None,
               timeout=90)
    assert w.distinct() == ["20", "40", "70", "100"]
    writes = wait_audit(k.cp, k.ns, "ingresses", "kill-canary", lambda w: w[-1:] == ["delete"])
    assert writes == ["patch"] * 4 + ["delete"], json.dumps(writes)
