"""Hostile metric answers (tests/data/hostile/, one file a case), produced by the real Prometheus from real PromQL,
each with its documented verdict (README, "Which answers are judged how").

First every answer is read and judged alone; then every case runs as the only gating metric of a real rollout
behind the NGINX canary Ingress and the Gateway API HTTPRoute, once per onFailure action, all at once on one
operator: a passing case promotes; a failing one rolls back, pauses or alerts as its action says; an
inconclusive one holds; a refused query is Invalid before any traffic moves. In no case does the weight rise past
the first step without a passing evaluation, and status stays writable and says why (no traceback in the log).

The Gateway API CRDs are cluster-wide: this module runs after test_routers_crds_missing.py (alphabetically).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from devenv.localenv.controlplane import ControlPlane
from devenv.localenv.procs import ManagedProcess, wait_until
from devenv.localenv.prometheus import Prometheus
from modelrollout import api
from modelrollout.core.analysis import judge
from modelrollout.durations import parse_duration
from modelrollout.metrics.prometheus import PrometheusSource

from .kube import Json, Kubectl
from .manifests import ingress, nginx, rollout, service
from .test_routers_gateway_istio import httproute

CORPUS = Path(__file__).resolve().parents[1] / "data" / "hostile"
ACTIONS = ("rollback", "pause", "alert")
MIN = 0.99


@dataclass(frozen=True)
class Case:
    name: str
    query: str
    verdict: str  # Pass | Fail | Inconclusive | QueryError
    message: str
    actions: tuple[str, ...]
    interval: str
    timeout: str = "1s"  # analysis.prometheus.timeout


def cases() -> list[Case]:
    out = []
    for path in sorted(CORPUS.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        out.append(Case(path.stem, doc["query"], doc["verdict"], doc["message"], tuple(doc.get("actions", ACTIONS)),
                        doc.get("interval", "1s"), doc.get("timeout", "1s")))
    return out


CASES = cases()


def test_the_corpus_covers_every_verdict() -> None:
    assert {c.verdict for c in CASES} == {"Pass", "Fail", "Inconclusive", "QueryError"}


@pytest.fixture
def scraping_itself(prometheus: Prometheus) -> Prometheus:
    """Prometheus with one target, itself: ``up`` has samples for the cases that need a real series."""
    address = f"127.0.0.1:{prometheus.port}"
    prometheus.set_targets([(address, {})])
    prometheus.wait_target_up(address)
    return prometheus


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_each_answer_gets_its_documented_verdict(scraping_itself: Prometheus, case: Case) -> None:
    prometheus = scraping_itself
    source = PrometheusSource(prometheus.url, timeout=parse_duration(case.timeout).total_seconds())
    metric = api.Metric.model_validate({"name": "hostile", "query": case.query, "min": MIN})
    verdict, message, value = judge(metric, source.query(case.query))
    expected = "Fail" if case.verdict == "QueryError" else case.verdict
    assert verdict.value == expected, message
    assert case.message in message
    assert value is None or abs(value) < float("inf")


def spec_for(case: Case, action: str, router: str, prometheus: Prometheus, name: str) -> Json:
    traffic = nginx(name)["traffic"] if router == "nginx" else {"service": {"name": name},
                                                                 "httpRoute": {"name": name}}
    return {
        "replicas": 1,
        "traffic": traffic,
        "rollback": {"scaleDownDelay": "0s"},
        "analysis": {
            "interval": case.interval, "prometheus": {"address": prometheus.url, "timeout": case.timeout},
            "inconclusive": {"limit": 2, "action": "pause"},
            "metrics": [{"name": "hostile", "query": case.query, "min": MIN, "onFailure": action},
                        # a passing gating metric, so an alert-only hostile metric lets the rollout go on
                        {"name": "baseline", "query": "vector(1)", "min": 0.5}],
        },
    }


STEPS = [{"setWeight": 20}, {"analysis": {"passes": 1}}, {"setWeight": 60}, {"setWeight": 100}]


def expected_phase(case: Case, action: str) -> str:
    if case.verdict == "QueryError":
        return "Invalid"
    if case.verdict == "Pass" or action == "alert":
        return "Succeeded"
    if case.verdict == "Fail":
        return "RolledBack" if action == "rollback" else "Paused"
    return "Paused"  # Inconclusive: held by inconclusive.action pause


def test_rollouts_over_hostile_answers(k: Kubectl, operator: ManagedProcess, route_crds: ControlPlane,
                                       scraping_itself: Prometheus) -> None:
    prometheus = scraping_itself
    runs: list[tuple[str, Case, str, str]] = []
    index = 0
    for case in CASES:
        for action in case.actions:
            router = ("nginx", "gateway")[index % 2]  # every case meets both routers across its actions
            index += 1
            runs.append((f"h{index}-{router[0]}", case, action, router))
    firsts: dict[str, str] = {}
    for name, case, action, router in runs:
        spec = spec_for(case, action, router, prometheus, name)
        route = ingress(name, f"{name}-stable") if router == "nginx" else httproute(name)
        k.apply(service(name) + "\n---\n" + route)
        k.apply(rollout(name, steps=STEPS, **spec))
    for name, *_ in runs:
        firsts[name] = str(k.wait_phase(name, "Succeeded", 120)["stableRevision"])
    for name, case, action, router in runs:
        k.apply(rollout(name, image="model:2", steps=STEPS, **spec_for(case, action, router, prometheus, name)))

    def settled(name: str, case: Case, action: str) -> Json | None:
        st = k.status(name)
        want = expected_phase(case, action)
        if st.get("phase") != want:
            return None
        if want == "Succeeded" and st.get("stableRevision") == firsts[name]:
            return None
        return st

    problems: list[str] = []
    for name, case, action, router in runs:
        where = f"{case.name} x {action} on {router} ({name})"
        try:
            st = wait_until(lambda n=name, c=case, a=action: settled(n, c, a), 120, 0.2, what=where)
        except TimeoutError:
            got = json.dumps(k.status(name))[:800]
            problems.append(f"{where}: expected {expected_phase(case, action)}, status {got}")
            continue
        problems += check(k, name, case, action, router, st)
    assert "Traceback" not in operator.log.read_text(errors="replace")
    assert not problems, "\n".join(problems)


def max_weight_written(k: Kubectl, name: str) -> int:
    """The highest weight the operator announced for this rollout (an Event at every weight it wrote)."""
    weights = [int(e["message"].split("% of traffic")[0].rsplit(" ", 1)[-1]) for e in k.events(name)
               if e["reason"] == "SetWeight" and "% of traffic" in e["message"]]
    return max(weights, default=0)


def check(k: Kubectl, name: str, case: Case, action: str, router: str, st: Json) -> list[str]:
    where = f"{case.name} x {action} on {router}"
    out: list[str] = []
    phase, message = st.get("phase"), st.get("message") or ""
    hostile = next((m for m in st.get("analysis") or [] if m["name"] == "hostile"), None)
    if phase == "Invalid":
        if "spec.analysis.metrics[0] (hostile)" not in message or case.message not in message:
            out.append(f"{where}: Invalid without naming the metric and Prometheus's answer: {message}")
        if max_weight_written(k, name) or st.get("currentWeight"):
            out.append(f"{where}: traffic moved before the refused query was reported")
        if router == "nginx" and k.get("ingress", f"{name}-canary") is not None:
            out.append(f"{where}: a canary Ingress exists for an Invalid rollout")
        return out
    if hostile is None or case.message not in (hostile.get("message") or ""):
        out.append(f"{where}: status.analysis does not say why: {hostile}")
    if hostile is not None and hostile["verdict"] != case.verdict:
        out.append(f"{where}: verdict {hostile['verdict']}, documented {case.verdict}")
    if hostile is not None and hostile.get("value") is not None and not abs(hostile["value"]) < float("inf"):
        out.append(f"{where}: a non-finite value in status")
    gating = action != "alert"
    if gating and case.verdict != "Pass" and max_weight_written(k, name) > 20:
        out.append(f"{where}: the weight rose past 20 without a passing evaluation")
    if phase == "RolledBack" and case.message not in message:
        out.append(f"{where}: the rollback message does not say why: {message}")
    if phase == "Paused" and case.verdict == "Inconclusive" and "inconclusive" not in message:
        out.append(f"{where}: the hold does not say it is inconclusive: {message}")
    if action == "alert" and case.verdict == "Fail" and not any(
            e["reason"] == "AnalysisAlert" and case.message in e["message"] for e in k.events(name)):
        out.append(f"{where}: no AnalysisAlert event naming the failure")
    ready = next((c for c in st.get("conditions") or [] if c["type"] == "Ready"), None)
    if ready is None or (ready["status"] == "True") != (phase == "Succeeded"):
        out.append(f"{where}: Ready={ready and ready['status']} in phase {phase}")
    return out


def test_a_query_refused_during_a_rollout_fails_its_metric_with_prometheus_words(
        k: Kubectl, operator: ManagedProcess, prometheus: Prometheus) -> None:
    """The query is edited mid-rollout into one Prometheus refuses (a 400): the next evaluation is a failure of
    that metric quoting Prometheus, and its onFailure (rollback) acts; not "did not answer", not a hold."""
    name = "edited"
    good = Case("good", "vector(1)", "Pass", "", ("rollback",), "1s")
    steps = [{"setWeight": 20}, {"approval": {"reason": "hold"}}, {"setWeight": 100}]
    spec = spec_for(good, "rollback", "nginx", prometheus, name)
    k.apply(service(name) + "\n---\n" + ingress(name, f"{name}-stable"))
    k.apply(rollout(name, steps=steps, **spec))
    first = k.wait_phase(name, "Succeeded", 90)["stableRevision"]
    k.apply(rollout(name, image="model:2", steps=steps, **spec))
    k.wait(name, lambda s: s.get("phase") == "AwaitingApproval" and s.get("currentWeight") == 20, 90)
    spec["analysis"]["metrics"][0]["query"] = "sum(vector(1)"
    k.apply(rollout(name, image="model:2", steps=steps, **spec))
    st = k.wait_phase(name, "RolledBack", 60)
    assert st["stableRevision"] == first and st["currentWeight"] == 0
    assert "hostile" in st["message"] and "refused the query (400 bad_data)" in st["message"]
    assert "did not answer" not in st["message"]
    assert k.get("ingress", f"{name}-canary") is None
