"""Analysis against real Prometheus (Debian's server, 1 s scrape) scraping a real exporter per track."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from devenv.localenv.procs import ManagedProcess, wait_until
from devenv.localenv.prometheus import Prometheus

from .exporters import exporters
from .kube import Kubectl, release_behind_nginx, track_deployment
from .manifests import ingress, nginx, rollout, service

COMPAT = 'min(model_api_compatibility_score{rollout="{{rollout}}",track="{{track}}"})'


def analysis(prometheus: Prometheus, *metrics: dict[str, Any], limit: int = 3, action: str = "pause") -> dict[str, Any]:
    return {"interval": "1s", "prometheus": {"address": prometheus.url, "timeout": "2s"},
            "inconclusive": {"limit": limit, "action": action}, "metrics": list(metrics)}


def start(k: Kubectl, name: str, steps: list[dict[str, Any]], **spec: Any) -> str:
    first = release_behind_nginx(k, name, steps, **spec)
    k.apply(rollout(name, image="model:2", steps=steps, **spec))
    return first


def test_healthy_canary_promotes(k: Kubectl, operator: ManagedProcess, prometheus: Prometheus, tmp_path: Path) -> None:
    steps = [{"setWeight": 20}, {"analysis": {"passes": 2}}, {"setWeight": 60}, {"setWeight": 100}]
    spec = {**nginx("heal"), "analysis": analysis(prometheus, {"name": "api-compatibility", "query": COMPAT,
                                                                "min": 0.99})}
    with exporters(prometheus, tmp_path, "heal"):
        first = start(k, "heal", steps, **spec)
        st = k.wait(name="heal", predicate=lambda s: s.get("phase") == "Succeeded" and s["stableRevision"] != first,
                    timeout=120)
    assert any(h["outcome"] == "AnalysisPassed" for h in st["history"])
    assert k.get("ingress", "heal-canary") is None


def test_compatibility_drop_mid_rollout_rolls_back_naming_the_metric(
        k: Kubectl, operator: ManagedProcess, prometheus: Prometheus, tmp_path: Path) -> None:
    steps = [{"setWeight": 20}, {"analysis": {"passes": 1}}, {"setWeight": 50}, {"pause": {}}, {"setWeight": 100}]
    spec = {**nginx("drop"), "rollback": {"scaleDownDelay": "2s"},
            "analysis": analysis(prometheus, {"name": "api-compatibility", "query": COMPAT, "min": 0.99})}
    with exporters(prometheus, tmp_path, "drop") as ex:
        first = start(k, "drop", steps, **spec)
        k.wait(name="drop", predicate=lambda s: s.get("phase") == "AwaitingApproval" and s.get("currentWeight") == 50,
               timeout=90)
        assert k.get("ingress", "drop-canary") is not None
        ex["canary"].set_score(0.5)
        st = k.wait_phase("drop", "RolledBack", 60)
    assert k.get("ingress", "drop-canary") is None, "100% back on stable: the canary Ingress is gone"
    assert st["stableRevision"] == first and st["currentWeight"] == 0
    msg = st["message"]
    assert "api-compatibility" in msg and "0.5" in msg and "0.99" in msg and "model_api_compatibility_score" in msg
    canary = track_deployment(k, "drop", "canary")  # a rolled-back canary is kept, at 0
    assert canary is not None and canary["metadata"]["name"] == f"drop-{st['canaryRevision']}"
    assert canary["spec"]["replicas"] == 0
    events = k.events("drop")
    assert any(e["type"] == "Warning" and e["reason"] == "RollingBack" and "api-compatibility" in e["message"]
               for e in events)
    # a rolled-back revision is not retried on its own
    assert k.status("drop")["phase"] == "RolledBack"


def test_prometheus_down_pauses_never_promotes_and_resumes(
        k: Kubectl, operator: ManagedProcess, prometheus: Prometheus, tmp_path: Path) -> None:
    # the approval gate holds the rollout at 20 while Prometheus is stopped (without it a healthy rollout can
    # finish all its steps in about two seconds, before the test has seen weight 20)
    steps = [{"setWeight": 20}, {"approval": {"reason": "hold"}}, {"analysis": {"passes": 1}}, {"setWeight": 50},
             {"analysis": {"passes": 2}}, {"setWeight": 100}]
    spec = {**nginx("down"), "analysis": analysis(prometheus, {"name": "api-compatibility", "query": COMPAT,
                                                                "min": 0.99}, limit=2)}
    with exporters(prometheus, tmp_path, "down"):
        first = start(k, "down", steps, **spec)
        gate = k.wait(name="down", predicate=lambda s: s.get("currentWeight") == 20 and bool(s.get("approval")),
                      timeout=90)
        prometheus.stop()
        k.annotate("down", "modelrollout.io/approve", gate["approval"]["token"])
        st = k.wait(name="down", predicate=lambda s: s.get("phase") == "Paused" and "inconclusive" in s["message"],
                    timeout=60)
        assert st["stableRevision"] == first
        assert "did not answer" in st["message"]
        weight = st["currentWeight"]
        prometheus.start()
        st = k.wait(name="down", predicate=lambda s: s.get("phase") == "Succeeded" and s["stableRevision"] != first,
                    timeout=120)
    assert weight == 20  # no weight moved without data
    assert any(e["reason"] == "AnalysisInconclusive" for e in k.events("down"))


def test_on_failure_pause_holds_the_weight(
        k: Kubectl, operator: ManagedProcess, prometheus: Prometheus, tmp_path: Path) -> None:
    steps = [{"setWeight": 20}, {"analysis": {"passes": 1}}, {"setWeight": 50}, {"setWeight": 100}]
    spec = {**nginx("hold"), "analysis": analysis(prometheus, {"name": "api-compatibility", "query": COMPAT,
                                                                "min": 0.99, "onFailure": "pause"})}
    with exporters(prometheus, tmp_path, "hold", canary=0.5):
        start(k, "hold", steps, **spec)
        st = k.wait(name="hold", predicate=lambda s: s.get("phase") == "Paused" and bool(s.get("approval")),
                    timeout=90)
    assert st["currentWeight"] == 20 and st["approval"]["action"] == "resume"
    assert "api-compatibility" in st["approval"]["reason"]


def test_alert_only_warns(k: Kubectl, operator: ManagedProcess, prometheus: Prometheus, tmp_path: Path) -> None:
    steps = [{"setWeight": 20}, {"analysis": {"passes": 2}}, {"setWeight": 100}]
    spec = {**nginx("warn"), "analysis": analysis(
        prometheus,
        {"name": "served", "query": COMPAT, "min": 0},
        {"name": "compat-alert", "query": COMPAT, "min": 0.99, "onFailure": "alert"})}
    with exporters(prometheus, tmp_path, "warn", canary=0.8):
        first = start(k, "warn", steps, **spec)
        k.wait(name="warn", predicate=lambda s: s.get("phase") == "Succeeded" and s["stableRevision"] != first,
               timeout=120)
    assert any(e["type"] == "Warning" and e["reason"] == "AnalysisAlert" and "compat-alert" in e["message"]
               for e in k.events("warn"))


def test_unpullable_canary_rolls_back_at_the_progress_deadline(k: Kubectl, operator: ManagedProcess) -> None:
    steps = [{"setWeight": 20}, {"setWeight": 100}]
    spec = {**nginx("pull"), "progressDeadlineSeconds": 10, "rollback": {"scaleDownDelay": "0s"}}
    k.apply(service("pull") + "\n---\n" + ingress("pull", "pull-stable"))
    k.apply(rollout("pull", steps=steps, **spec))
    first = k.wait_phase("pull", "Succeeded", 90)["stableRevision"]
    k.apply(rollout("pull", image="unpullable.invalid/model:2", steps=steps, **spec))
    st = k.wait_phase("pull", "RolledBack", 60)
    assert "ImagePullBackOff" in st["message"] and "not ready after 10s" in st["message"]
    assert st["stableRevision"] == first
    assert k.get("ingress", "pull-canary") is None, "no traffic ever moved"
    wait_until(lambda: (track_deployment(k, "pull", "canary") or {}).get("spec", {}).get("replicas") == 0, 30,
               what="canary scaled to zero")
