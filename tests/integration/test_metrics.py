"""The operator's own metrics (telemetry.py), scraped from `modelrollout run --metrics-port` after real rollouts.

These are the series the chart's ServiceMonitor scrapes and its PrometheusRule alerts on; the test also checks
kopf's liveness endpoint, which the chart's liveness and readiness probes call.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from devenv.localenv.controlplane import ControlPlane
from devenv.localenv.operatorproc import operator_process
from devenv.localenv.procs import LOCALHOST, ManagedProcess, free_port, port_open, wait_until
from devenv.localenv.prometheus import Prometheus

from .exporters import exporters
from .kube import Kubectl, wait_deleted
from .manifests import ingress, rollout, service

Labels = dict[str, str]
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1 never through a proxy


class Scrape:
    """One /metrics scrape: sample name -> [(labels, value)]."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: dict[str, list[tuple[Labels, float]]] = {}
        self.types: dict[str, str] = {}
        for family in text_string_to_metric_families(text):
            self.types[family.name] = family.type
            for s in family.samples:
                self.samples.setdefault(s.name, []).append((dict(s.labels), s.value))

    def values(self, name: str, **labels: str) -> list[tuple[Labels, float]]:
        return [(lb, v) for lb, v in self.samples.get(name, []) if all(lb.get(k) == val for k, val in labels.items())]

    def value(self, name: str, **labels: str) -> float:
        found = self.values(name, **labels)
        assert len(found) == 1, f"{name}{labels}: {found}\n{self.text[:4000]}"
        return found[0][1]


@pytest.fixture
def metrics_operator(crd: ControlPlane, namespace: str, tmp_path: Path) -> Iterator[tuple[ManagedProcess, int, int]]:
    """The operator with --metrics-port and kopf's --liveness endpoint on free 127.0.0.1 ports."""
    metrics_port, liveness_port = free_port(), free_port()
    proc = operator_process(crd.kubeconfig, tmp_path / "operator.log", namespaces=[namespace],
                            metrics_port=metrics_port,
                            extra=["--liveness", f"http://{LOCALHOST}:{liveness_port}/healthz"])
    proc.start()
    try:
        wait_until(lambda: proc.check_alive() or port_open(metrics_port), 30, 0.05, what="operator /metrics port")
        yield proc, metrics_port, liveness_port
    finally:
        proc.stop()
        print(f"--- operator log tail ({proc.log})\n{proc.log_tail(60)}")


def scrape(port: int) -> Scrape:
    with _opener.open(f"http://{LOCALHOST}:{port}/metrics", timeout=5) as resp:
        assert resp.status == 200
        return Scrape(resp.read().decode())


def nginx(name: str, **extra: Any) -> dict[str, Any]:
    return {"traffic": {"service": {"name": name}, "ingress": {"name": name}},
            "rollback": {"scaleDownDelay": "1s"}, **extra}


def release(k: Kubectl, name: str, steps: list[dict[str, Any]], spec: dict[str, Any]) -> str:
    k.apply(service(name) + "\n---\n" + ingress(name, f"{name}-stable"))
    k.apply(rollout(name, steps=steps, **spec))
    return str(k.wait_phase(name, "Succeeded", 90)["stableRevision"])


def test_operator_metrics_after_a_rollout_an_abort_and_an_analysis(
        k: Kubectl, metrics_operator: tuple[ManagedProcess, int, int], prometheus: Prometheus,
        tmp_path: Path) -> None:
    _proc, port, liveness = metrics_operator
    ns = k.ns

    # kopf's liveness endpoint (the chart's livenessProbe and readinessProbe)
    def healthy() -> bool:
        with _opener.open(f"http://{LOCALHOST}:{liveness}/healthz", timeout=5) as resp:
            return resp.status == 200

    wait_until(healthy, 30, 0.1, what="kopf /healthz", ignore=(OSError,))

    # 1. a rollout to Succeeded, looked at while it waits at 50%
    steps = [{"setWeight": 50}, {"pause": {}}, {"setWeight": 100}]
    # (the previous stable's Deployment deleted 1s after the promotion: DeleteWorkload below)
    first = release(k, "met", steps, {**nginx("met"), "scale_down_delay": "1s"})
    k.apply(rollout("met", image="model:2", steps=steps, scale_down_delay="1s", **nginx("met")))
    st = k.wait(name="met", predicate=lambda s: s.get("phase") == "AwaitingApproval" and s.get("currentWeight") == 50,
                timeout=90)
    # the gauges are set after the status write that kubectl saw: wait for both to show it
    def at_the_gate(m: Scrape) -> bool:
        return (m.value("modelrollout_rollout_weight", namespace=ns, rollout="met") == 50
                and m.value("modelrollout_rollout_phase", namespace=ns, rollout="met", phase="AwaitingApproval") == 1)

    wait_until(lambda: at_the_gate(scrape(port)), 10, 0.1, what="weight 50 and phase AwaitingApproval in /metrics")
    k.annotate("met", "modelrollout.io/approve", st["approval"]["token"])
    k.wait(name="met", predicate=lambda s: s.get("phase") == "Succeeded" and s["stableRevision"] != first, timeout=90)
    wait_deleted(k, "deployment", f"met-{first}", 30)

    # 2. an abort: a rollback with reason Aborted
    release(k, "abo", steps, nginx("abo"))
    k.apply(rollout("abo", image="model:2", steps=steps, **nginx("abo")))
    k.wait(name="abo", predicate=lambda s: s.get("phase") == "AwaitingApproval", timeout=90)
    k.annotate("abo", "modelrollout.io/abort", "true")
    k.wait_phase("abo", "RolledBack", 60)

    # 3. a rollout with analysis against the real Prometheus
    compat = 'min(model_api_compatibility_score{rollout="{{rollout}}",track="{{track}}"})'
    analysis = {"interval": "1s", "prometheus": {"address": prometheus.url, "timeout": "2s"},
                "metrics": [{"name": "api-compatibility", "query": compat, "min": 0.99}]}
    ana_steps = [{"setWeight": 20}, {"analysis": {"passes": 2}}, {"setWeight": 100}]
    with exporters(prometheus, tmp_path, "ana"):
        first = release(k, "ana", ana_steps, nginx("ana", analysis=analysis))
        k.apply(rollout("ana", image="model:2", steps=ana_steps, **nginx("ana", analysis=analysis)))
        k.wait(name="ana", predicate=lambda s: s.get("phase") == "Succeeded" and s["stableRevision"] != first,
               timeout=120)

    def settled(m: Scrape) -> bool:
        return all(m.values("modelrollout_rollout_phase", namespace=ns, rollout=r, phase=p) == [(
            {"namespace": ns, "rollout": r, "phase": p}, 1.0)] for r, p in (
            ("met", "Succeeded"), ("abo", "RolledBack"), ("ana", "Succeeded")))

    m = wait_until(lambda: (lambda s: s if settled(s) else None)(scrape(port)), 10, 0.1, what="final phases")

    # modelrollout_rollout_phase{namespace, rollout, phase}: one series per phase, exactly one of them 1
    assert m.types["modelrollout_rollout_phase"] == "gauge"
    for r in ("met", "abo", "ana"):
        series = m.values("modelrollout_rollout_phase", namespace=ns, rollout=r)
        assert {tuple(sorted(lb)) for lb, _ in series} == {("namespace", "phase", "rollout")}
        assert len(series) >= 10 and sum(v for _, v in series) == 1, series

    # modelrollout_rollout_weight{namespace, rollout}: the status' currentWeight
    assert m.types["modelrollout_rollout_weight"] == "gauge"
    for r in ("met", "abo", "ana"):
        assert m.value("modelrollout_rollout_weight", namespace=ns, rollout=r) == k.status(r).get("currentWeight", 0)

    # modelrollout_reconciles_total{namespace}
    assert m.types["modelrollout_reconciles"] == "counter"
    reconciles = m.values("modelrollout_reconciles_total")
    assert [set(lb) for lb, _ in reconciles] == [{"namespace"}] and reconciles[0][0]["namespace"] == ns
    assert reconciles[0][1] >= 10

    # modelrollout_api_writes_total{action}: one series per kind of action carried out
    assert m.types["modelrollout_api_writes"] == "counter"
    writes = {lb["action"]: v for lb, v in m.values("modelrollout_api_writes_total")}
    assert all(set(lb) == {"action"} for lb, _ in m.values("modelrollout_api_writes_total"))
    # (promotion: SelectRevision switches NAME-stable to the canary revision; DeleteWorkload removes the previous
    # stable's Deployment after scaleDownDelay)
    for action in ("EnsureServices", "EnsureStable", "EnsureCanary", "SetWeight", "SelectRevision", "ResetRouter",
                   "ScaleCanary", "DeleteWorkload"):
        assert writes.get(action, 0) >= 1, (action, writes)
    assert writes["SetWeight"] >= 4  # met: 50, 100; abo: 50; ana: 20, 100

    # modelrollout_rollbacks_total{namespace, rollout, reason}: the abort, nothing for the others
    assert m.types["modelrollout_rollbacks"] == "counter"
    assert m.value("modelrollout_rollbacks_total", namespace=ns, rollout="abo", reason="Aborted") == 1
    assert not m.values("modelrollout_rollbacks_total", rollout="met")
    assert not m.values("modelrollout_rollbacks_total", rollout="ana")

    # modelrollout_analysis_evaluations_total{namespace, rollout, metric, verdict}
    assert m.types["modelrollout_analysis_evaluations"] == "counter"
    evals = m.values("modelrollout_analysis_evaluations_total", namespace=ns, rollout="ana")
    assert evals and all(set(lb) == {"namespace", "rollout", "metric", "verdict"} for lb, _ in evals)
    assert {lb["metric"] for lb, _ in evals} == {"api-compatibility"}
    assert m.value("modelrollout_analysis_evaluations_total", namespace=ns, rollout="ana",
                   metric="api-compatibility", verdict="Pass") >= 2
    assert not m.values("modelrollout_analysis_evaluations_total", rollout="met")

    # modelrollout_reconcile_seconds: a histogram of every reconcile
    assert m.types["modelrollout_reconcile_seconds"] == "histogram"
    assert m.value("modelrollout_reconcile_seconds_count") >= reconciles[0][1]
    # modelrollout_reconcile_errors_total{namespace, rollout}: declared (no reconcile failed here)
    assert m.types["modelrollout_reconcile_errors"] == "counter"

    # modelrollout_step_duration_seconds{namespace, rollout, kind}: observed once per completed step
    assert m.types["modelrollout_step_duration_seconds"] == "histogram"
    buckets = m.values("modelrollout_step_duration_seconds_bucket", namespace=ns)
    assert buckets and all(set(lb) == {"namespace", "rollout", "kind", "le"} for lb, _ in buckets)
    completed = {(lb["rollout"], lb["kind"]): v for lb, v in m.values("modelrollout_step_duration_seconds_count",
                                                                      namespace=ns)}
    # met: setWeight 50, pause (approved), setWeight 100; abo: setWeight 50 (aborted at the pause);
    # ana: setWeight 20, analysis x2, setWeight 100
    assert completed == {("met", "setWeight"): 2, ("met", "pause"): 1, ("abo", "setWeight"): 1,
                         ("ana", "setWeight"): 2, ("ana", "analysis"): 1}, completed
    assert m.value("modelrollout_step_duration_seconds_sum", namespace=ns, rollout="met", kind="pause") > 0
    assert m.value("modelrollout_step_duration_seconds_sum", namespace=ns, rollout="ana", kind="analysis") >= 1

    # modelrollout_approval_wait_seconds{namespace, rollout, action}: the one approval that opened a gate (met);
    # the abort dropped abo's gate, which is not an approval
    assert m.types["modelrollout_approval_wait_seconds"] == "histogram"
    waits = m.values("modelrollout_approval_wait_seconds_count", namespace=ns)
    assert [(lb["rollout"], lb["action"], v) for lb, v in waits] == [("met", "continue", 1.0)], waits
    assert all(set(lb) == {"namespace", "rollout", "action", "le"}
               for lb, _ in m.values("modelrollout_approval_wait_seconds_bucket", namespace=ns))
    assert m.value("modelrollout_approval_wait_seconds_sum", namespace=ns, rollout="met", action="continue") > 0
