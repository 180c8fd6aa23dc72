"""``kubectl-modelrollout`` as a subprocess against the real operator and the local control plane."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from devenv.localenv.procs import ManagedProcess, wait_until

from .kube import Json, Kubectl
from .manifests import rollout, service

OPERATOR_SRC = Path(__file__).resolve().parents[2] / "operator"
STEPS = [{"setWeight": 25}, {"approval": {"reason": "check dashboards"}}, {"setWeight": 100}]
APPROVE, ABORT, RETRY = "modelrollout.io/approve", "modelrollout.io/abort", "modelrollout.io/retry"


def plugin_argv(k: Kubectl, *args: str) -> list[str]:
    return [sys.executable, "-m", "modelrollout.plugin", *args, "-n", k.ns, "--kubeconfig", str(k.cp.kubeconfig)]


def plugin_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}  # --kubeconfig alone must do
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(OPERATOR_SRC), os.environ.get("PYTHONPATH", "")) if p)
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def plugin(k: Kubectl, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(plugin_argv(k, *args), capture_output=True, text=True, env=plugin_env(), timeout=60,
                         check=False)
    assert (res.returncode == 0) == ok, f"{args}: exit {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res


def release(k: Kubectl, name: str, **spec: object) -> str:
    """Service and first revision applied and stable; the stable revision."""
    k.apply(service(name))
    k.apply(rollout(name, steps=STEPS, **spec))
    return str(k.wait_phase(name, "Succeeded", 90)["stableRevision"])


def annotations(k: Kubectl, name: str) -> dict[str, str]:
    return dict(k.mro(name)["metadata"].get("annotations") or {})


def consumed(k: Kubectl, name: str, key: str) -> None:
    wait_until(lambda: key not in annotations(k, name), 30, 0.1, what=f"{key} removed from {name}")


def history(st: Json, outcome: str) -> list[Json]:
    return [h for h in st.get("history") or [] if h.get("outcome") == outcome]


def test_get_shows_the_gate_and_approve_opens_it(k: Kubectl, operator: ManagedProcess) -> None:
    release(k, "chat")
    k.apply(rollout("chat", image="model:2", steps=STEPS))
    st = k.wait_phase("chat", "AwaitingApproval", 90)
    token = st["approval"]["token"]
    assert st["approval"]["step"] == 1 and token == f"{st['canaryRevision']}-1"

    out = plugin(k, "get", "chat").stdout
    assert f"ModelRollout {k.ns}/chat" in out
    assert "AwaitingApproval" in out
    gate = next(line for line in out.splitlines() if " approval " in line and "[gate:" in line)
    assert gate.split()[:3] == ["▶", "2", "approval"] and "[gate: check dashboards]" in gate
    assert any(line.split()[:2] == ["✓", "1"] for line in out.splitlines())
    assert "Step:" in out and next(line for line in out.splitlines() if line.startswith("Step:")).split()[1] == "2/3"
    assert f"kubectl modelrollout approve chat -n {k.ns}" in out
    assert st["approval"]["command"] in out

    watcher = subprocess.Popen(plugin_argv(k, "get", "chat", "-w", "--until-done", "--timeout", "120"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=plugin_env())
    try:
        assert watcher.stdout is not None
        first: list[str] = []
        for line in watcher.stdout:  # bounded: the watcher exits by --timeout at the latest
            first.append(line)
            if "Phase:" in line:
                break
        assert "AwaitingApproval" in first[-1], first
        res = plugin(k, "approve", "chat")
        assert res.stdout.strip() == f"approved chat at step 2/3 with {token}"
        watched, err = watcher.communicate(timeout=150)
    finally:
        watcher.kill()
        watcher.wait(10)
    assert watcher.returncode == 0, f"watch exited {watcher.returncode}: {err}\n{watched[-3000:]}"
    watched = "".join(first) + watched
    assert watched.count(f"ModelRollout {k.ns}/chat") >= 2, "the watch re-renders on every change"
    assert "AwaitingApproval" in watched and "Succeeded" in watched.rsplit(f"ModelRollout {k.ns}/chat", 1)[1]

    st = k.wait(name="chat", predicate=lambda s: s.get("phase") == "Succeeded" and s.get("currentStep") is None,
                timeout=90)
    approved = history(st, "Approved")
    assert approved and approved[-1]["token"] == token and approved[-1].get("by") == "kubectl-modelrollout"
    consumed(k, "chat", APPROVE)

    res = plugin(k, "approve", "chat", ok=False)
    assert res.returncode == 1 and "nothing waits for approval on chat (phase Succeeded" in res.stderr
    res = plugin(k, "get", "missing", ok=False)
    assert f'modelrollout "missing" not found in namespace "{k.ns}"' in res.stderr


def test_abort_rolls_back_retry_restarts_and_promote_skips_the_gate(k: Kubectl, operator: ManagedProcess) -> None:
    fast = {"rollback": {"scaleDownDelay": "1s"}}
    first = release(k, "abt", **fast)
    k.apply(rollout("abt", image="model:2", steps=STEPS, **fast))
    st = k.wait_phase("abt", "AwaitingApproval", 90)
    revision = st["canaryRevision"]

    res = plugin(k, "retry", "abt", ok=False)
    assert "no rolled-back revision to retry" in res.stderr
    assert plugin(k, "abort", "abt").stdout.startswith("aborted abt at step 2/3")
    st = k.wait(name="abt", predicate=lambda s: s.get("phase") in ("RollingBack", "RolledBack")
                and "aborted by user" in (s.get("message") or ""), timeout=60, what="abt aborted")
    consumed(k, "abt", ABORT)
    st = k.wait_phase("abt", "RolledBack", 60)
    assert "aborted by user" in st["message"] and st["rolledBackRevision"] == revision
    aborted = history(st, "Aborted")
    assert aborted and aborted[-1].get("by") == "kubectl-modelrollout"
    assert "kubectl modelrollout retry abt" in plugin(k, "get", "abt").stdout

    res = plugin(k, "retry", "abt")
    assert res.stdout.strip() == f"retried abt: revision {revision} starts again from step 1/3"
    st = k.wait(name="abt", predicate=lambda s: bool(history(s, "Retried")) and s.get("phase") != "RolledBack",
                timeout=60, what="abt retried")
    assert history(st, "Retried")[-1].get("by") == "kubectl-modelrollout"
    consumed(k, "abt", RETRY)

    st = k.wait_phase("abt", "AwaitingApproval", 90)
    assert st["canaryRevision"] == revision and st["currentStep"] == 1
    res = plugin(k, "promote", "abt")
    assert res.stdout.startswith(f"promoted abt at step 2/3 with {revision}-1")
    st = k.wait(name="abt", predicate=lambda s: s.get("phase") == "Succeeded" and s.get("stableRevision") == revision,
                timeout=90, what="abt promoted")
    assert st["stableRevision"] != first and history(st, "Promoted")
    res = plugin(k, "abort", "abt", ok=False)
    assert "no rollout in progress on abt" in res.stderr
