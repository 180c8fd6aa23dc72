"""Approval gates and control annotations with the real operator and the real `kubectl annotate`."""

from __future__ import annotations

import json

from devenv.localenv.procs import ManagedProcess, wait_until

from .kube import Kubectl, Watch, release_behind_nginx, track_deployment, wait_deleted
from .manifests import nginx, rollout

APPROVE = "modelrollout.io/approve"


def has_event(k: Kubectl, name: str, reason: str, *words: str) -> bool:
    return any(e["reason"] == reason and all(w in e["message"] for w in words) for e in k.events(name))


def test_tokens_bind_to_revision_and_step(k: Kubectl, operator: ManagedProcess) -> None:
    steps = [{"setWeight": 20}, {"approval": {"reason": "look at the dashboards"}}, {"setWeight": 60},
             {"setWeight": 100}]
    spec = {**nginx("tok"), "strategy": {"canary": {"steps": steps, "riskyAbove": 50}}}
    release_behind_nginx(k, "tok", steps, **spec)
    k.apply(rollout("tok", image="model:2", steps=steps, **spec))
    first_gate = k.wait_phase("tok", "AwaitingApproval", 90)
    rev2 = first_gate["canaryRevision"]
    # a template change: the rollout restarts with revision 3; revision 2's token is now stale
    k.apply(rollout("tok", image="model:3", steps=steps, **spec))
    st = k.wait(name="tok", predicate=lambda s: s.get("phase") == "AwaitingApproval" and s["canaryRevision"] != rev2,
                timeout=90)
    token = st["approval"]["token"]
    assert st["approval"]["step"] == 1 and st["approval"]["reason"] == "look at the dashboards"
    k.annotate("tok", APPROVE, first_gate["approval"]["token"])
    wait_until(lambda: has_event(k, "tok", "ApprovalRejected", f"revision {rev2}", token), 30, 0.1,
               what="stale token rejected")
    rev3 = st["canaryRevision"]
    k.annotate("tok", APPROVE, f"{rev3}-0")
    wait_until(lambda: has_event(k, "tok", "ApprovalRejected", "already passed", token), 30, 0.1,
               what="wrong-step token rejected")
    assert k.status("tok")["phase"] == "AwaitingApproval" and k.status("tok")["currentWeight"] == 20
    k.annotate("tok", APPROVE, token)
    # the risky step (60 > riskyAbove 50) is a second gate with its own token
    st = k.wait(name="tok", predicate=lambda s: (s.get("approval") or {}).get("step") == 2, timeout=60)
    assert "riskyAbove 50" in st["approval"]["reason"] and st["currentWeight"] == 20
    k.annotate("tok", APPROVE, st["approval"]["token"])
    # setWeight 100 is risky too
    st = k.wait(name="tok", predicate=lambda s: (s.get("approval") or {}).get("step") == 3, timeout=60)
    assert st["currentWeight"] == 60
    k.annotate("tok", APPROVE, st["approval"]["token"])
    st = k.wait(name="tok", predicate=lambda s: s.get("phase") == "Succeeded" and s["stableRevision"] == rev3,
                timeout=90)
    approved = [h for h in st["history"] if h["outcome"] == "Approved"]
    assert [h["step"] for h in approved] == [1, 2, 3]
    assert all(h["by"] == "kubectl-annotate" for h in approved), approved
    assert APPROVE not in (k.mro("tok")["metadata"].get("annotations") or {})


def test_pre_approval_is_honoured_when_the_gate_arrives(k: Kubectl, operator: ManagedProcess) -> None:
    steps = [{"setWeight": 20}, {"pause": {"duration": "3s"}}, {"approval": {"reason": "r"}}, {"setWeight": 100}]
    release_behind_nginx(k, "pre", steps, **nginx("pre"))
    with Watch(k, ["mro", "pre"], "{.status.phase}") as phases:
        k.apply(rollout("pre", image="model:2", steps=steps, **nginx("pre")))
        st = k.wait(name="pre", predicate=lambda s: s.get("phase") == "Paused", timeout=90)
        k.annotate("pre", APPROVE, f"{st['canaryRevision']}-2")
        st = k.wait(name="pre", predicate=lambda s: s.get("phase") == "Succeeded" and not s.get("canaryRevision"),
                    timeout=90)
    assert "AwaitingApproval" not in phases.values
    assert any(h["outcome"] == "Approved" and h["step"] == 2 for h in st["history"])


def test_tokens_for_steps_no_gate_will_be_at_are_removed_and_nothing_moves(k: Kubectl,
                                                                          operator: ManagedProcess) -> None:
    steps = [{"setWeight": 20}, {"pause": {}}, {"setWeight": 50}, {"setWeight": 100}]
    release_behind_nginx(k, "nogate", steps, **nginx("nogate"))
    with Watch(k, ["ingress", "-l", "modelrollout.io/track=canary"],
               "{.metadata.annotations.nginx\\.ingress\\.kubernetes\\.io/canary-weight}") as w:
        k.apply(rollout("nogate", image="model:2", steps=steps, **nginx("nogate")))
        st = k.wait_phase("nogate", "AwaitingApproval", 90)
        rev, token = st["canaryRevision"], st["approval"]["token"]
        cases = [(APPROVE, f"{rev}-7", "ApprovalRejected", "no such step"),      # beyond the last step
                 (APPROVE, f"{rev}-2", "ApprovalRejected", "not a gate"),        # a later step that is no gate
                 ("modelrollout.io/promote", f"{rev}-9", "PromoteRejected", "no such step")]
        for key, value, reason, words in cases:
            k.annotate("nogate", key, value)
            wait_until(lambda value=value, reason=reason, words=words:
                       has_event(k, "nogate", reason, value, words, token), 30, 0.1,
                       what=f"{value} refused with a Warning naming {token}")
            wait_until(lambda key=key: key not in (k.mro("nogate")["metadata"].get("annotations") or {}), 30, 0.1,
                       what=f"{key}={value} removed")
        now = k.status("nogate")
        assert (now["phase"], now["currentStep"], now["currentWeight"]) == ("AwaitingApproval", 1, 20), now
        assert now["approval"]["token"] == token
        # kubectl get mro: the STEP printer column and the message name the same step, 1-based
        columns = k.run("get", "mro", "nogate", "--no-headers", "-o", "custom-columns=S:.status.stepProgress")
        assert columns.split() == ["2/4"] and "before step 2/4 " in now["message"], (columns, now["message"])
        assert "2/4" in k.run("get", "mro", "nogate").split("\n")[1].split()
        assert all(e["type"] == "Warning" for e in k.events("nogate") if e["reason"].endswith("Rejected"))
    assert w.distinct() == ["20"], "a refused token moved traffic"
    assert not any(h["outcome"] in ("Approved", "Promoted") for h in now["history"])


def test_promote_needs_the_current_token_and_skips_the_rest(k: Kubectl, operator: ManagedProcess) -> None:
    steps = [{"setWeight": 20}, {"pause": {}}, {"setWeight": 50}, {"setWeight": 100}]
    first = release_behind_nginx(k, "pro", steps, **nginx("pro"))
    with Watch(k, ["ingress", "-l", "modelrollout.io/track=canary"],
               "{.metadata.annotations.nginx\\.ingress\\.kubernetes\\.io/canary-weight}") as w:
        k.apply(rollout("pro", image="model:2", steps=steps, **nginx("pro")))
        st = k.wait_phase("pro", "AwaitingApproval", 90)
        k.annotate("pro", "modelrollout.io/promote", "true")
        wait_until(lambda: has_event(k, "pro", "PromoteRejected", st["approval"]["token"]), 30, 0.1,
                   what="blind promote rejected")
        assert k.status("pro")["phase"] == "AwaitingApproval"
        k.annotate("pro", "modelrollout.io/promote", st["approval"]["token"])
        done = k.wait(name="pro", predicate=lambda s: s.get("phase") == "Succeeded" and s["stableRevision"] != first,
                      timeout=90)
    assert w.distinct() == ["20"], "no step after the promote moved traffic"
    assert any(h["outcome"] == "Promoted" for h in done["history"])
    assert "modelrollout.io/promote" not in (k.mro("pro")["metadata"].get("annotations") or {})


def test_abort_returns_all_traffic_to_stable_and_retry_restarts(k: Kubectl, operator: ManagedProcess) -> None:
    steps = [{"setWeight": 30}, {"pause": {}}, {"setWeight": 100}]
    spec = {**nginx("abo"), "rollback": {"scaleDownDelay": "1s"}}
    first = release_behind_nginx(k, "abo", steps, **spec)
    k.apply(rollout("abo", image="model:2", steps=steps, **spec))
    k.wait_phase("abo", "AwaitingApproval", 90)
    assert k.get("ingress", "abo-canary") is not None
    k.annotate("abo", "modelrollout.io/abort", "true")
    st = k.wait_phase("abo", "RolledBack", 60)
    assert "aborted by user" in st["message"] and st["stableRevision"] == first
    assert k.get("ingress", "abo-canary") is None
    assert "modelrollout.io/abort" not in (k.mro("abo")["metadata"].get("annotations") or {})
    k.annotate("abo", "modelrollout.io/retry", "true")
    st = k.wait(name="abo", predicate=lambda s: s.get("phase") == "AwaitingApproval", timeout=60)
    assert [h["outcome"] for h in st["history"]][-2:] == ["Retried", "Started"]
    k.annotate("abo", APPROVE, st["approval"]["token"])
    k.wait(name="abo", predicate=lambda s: s.get("phase") == "Succeeded" and s["stableRevision"] != first, timeout=90)


def test_preflight_flags_a_torch_major_jump_and_a_removed_config_key(k: Kubectl, operator: ManagedProcess) -> None:
    steps = [{"setWeight": 20}, {"setWeight": 100}]
    old = {"version": "1", "config": {"max_seq_len": 4096, "use_fp16": True}, "dependencies": {"torch": "2.5.1"}}
    new = {"version": "2", "config": {"max_length": 4096}, "dependencies": {"torch": "3.0.0"},
           "configMigrations": [{"from": "max_seq_len", "to": "max_length"}]}
    first = release_behind_nginx(k, "pre-flight", steps, model=old, **nginx("pre-flight"))
    k.apply(rollout("pre-flight", image="model:2", steps=steps, model=new, **nginx("pre-flight")))
    st = k.wait_phase("pre-flight", "AwaitingApproval", 90)
    assert st["currentWeight"] == 0 and k.get("ingress", "pre-flight-canary") is None
    reason = st["approval"]["reason"]
    assert "torch 2.5.1 -> 3.0.0" in reason and "use_fp16" in reason, reason
    assert st["preflight"]["renamedConfigKeys"] == ["max_seq_len -> max_length"], json.dumps(st["preflight"])
    # the canary runs the migrated config, rendered into its revision's ConfigMap and mounted
    cm = k.get("configmap", f"pre-flight-config-{st['canaryRevision']}")
    assert cm is not None and json.loads(cm["data"]["config.json"]) == {"max_length": 4096}
    canary = track_deployment(k, "pre-flight", "canary")
    assert canary is not None
    volumes = {v["name"]: v for v in canary["spec"]["template"]["spec"]["volumes"]}
    assert volumes["modelrollout-model-config"]["configMap"]["name"] == cm["metadata"]["name"]
    k.annotate("pre-flight", APPROVE, st["approval"]["token"])
    done = k.wait(name="pre-flight", predicate=lambda s: s.get("phase") == "Succeeded" and not s.get("canaryRevision"),
                  timeout=90)
    # the old revision's Deployment is deleted after scaleDownDelay (30s by default), and its ConfigMap once no
    # Deployment runs it
    wait_deleted(k, "deployment", f"pre-flight-{first}", 60)
    wait_until(lambda: k.get("configmap", f"pre-flight-config-{first}") is None, 30, what="old config pruned")
    assert done["stableRevision"] == st["canaryRevision"]


def test_preflight_compares_rendered_configs_old_names_with_rules_pass(k: Kubectl, operator: ManagedProcess) -> None:
    steps = [{"setWeight": 20}, {"setWeight": 100}]
    old = {"version": "1", "config": {"max_length": 4096, "amp": True, "generation": {"top_k": 5}}}
    new = {"version": "2", "config": {"max_seq_len": 4096, "use_fp16": True, "generation": {"top_k": 5, "top_p": 1}},
           "configMigrations": [{"from": "max_seq_len", "to": "max_length"}, {"from": "use_fp16", "to": "amp"}]}
    first = release_behind_nginx(k, "rendered", steps, model=old, **nginx("rendered"))
    with Watch(k, ["mro", "rendered"], "{.status.phase}") as phases:
        k.apply(rollout("rendered", image="model:2", steps=steps, model=new, **nginx("rendered")))
        # the new revision promoted (the status before the apply is Succeeded without a canary too)
        st = k.wait(name="rendered", predicate=lambda s: s.get("phase") == "Succeeded" and not s.get("canaryRevision")
                    and s.get("stableRevision") != first, timeout=90)
    assert "AwaitingApproval" not in phases.values, phases.values
    assert st["stableModel"]["config"] == {"max_length": 4096, "amp": True, "generation": {"top_k": 5, "top_p": 1}}
    assert not any(h["outcome"] == "Approved" for h in st["history"])
    assert not any(e["reason"] == "PreflightGate" for e in k.events("rendered"))
