"""Fault injection: the real operator talks to the real apiserver (and Prometheus) through a fault proxy.

Each API case runs the same small canary rollout over the NGINX Ingress router while the proxy answers
some of the operator's requests with 409 / 429 / 500, answers 500 after the write landed (a lost
response), slows requests down, or cuts the operator's watch streams. Whatever happens in between, the
rollout must end as an undisturbed one does (Succeeded, the new revision stable), every step must happen
once and in order (the canary Ingress weight, watched through the apiserver directly, moves 20 → 50 → 100;
the audit log shows one successful write per weight; ``status.currentStep`` never goes back or skips), and
each rule must really have fired.

The Prometheus cases turn analysis on and take Prometheus away (stopped: connection refused), slow it
down (the same proxy, plain http, in front of it) or let the canary's series vanish (its exporter stopped:
the query selects no series). No data is never a pass: the weight does not move past the first step, the
status says inconclusive and why, and the rollout completes once the data is back.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devenv.localenv.controlplane import ControlPlane
from devenv.localenv.faultproxy import (
    CutWatch,
    Delay,
    FaultProxy,
    Rule,
    conflict,
    for_control_plane,
    proxy_kubeconfig,
    server_error,
    too_many_requests,
)
from devenv.localenv.operatorproc import operator_process
from devenv.localenv.procs import ManagedProcess
from devenv.localenv.prometheus import Prometheus
from modelrollout.core.revision import revision_of

from .exporters import exporters
from .kube import Kubectl, Watch, audit_writes, wait_audit
from .manifests import ingress, rollout, service

NAME = "flt"
STEPS: list[dict[str, Any]] = [{"setWeight": 20}, {"setWeight": 50}, {"setWeight": 100}]
PLANNED_WEIGHTS = ["20", "50", "100"]
WEIGHT_PATH = "{.metadata.annotations.nginx\\.ingress\\.kubernetes\\.io/canary-weight}"

CLIENT = "OpenAPI-Generator"  # User-Agent of the kubernetes client the operator's reconciles use (kopf: "kopf/")
ROLLOUT = rf"/namespaces/[^/]+/modelrollouts/{NAME}"
DEPLOYMENTS = r"/apis/apps/v1/namespaces/[^/]+/deployments"
CANARY_INGRESS = rf"/apis/networking\.k8s\.io/v1/namespaces/[^/]+/ingresses/{NAME}-canary$"
WRITE = "PATCH|POST|PUT|DELETE"


def manifest(image: str, steps: list[dict[str, Any]] = STEPS, name: str = NAME, **spec: Any) -> str:
    traffic: dict[str, Any] = {"traffic": {"service": {"name": name}, "ingress": {"name": name}}}
    return rollout(name, image=image, steps=steps, replicas=2, **traffic, **spec)


def expected_revision(image: str, name: str = NAME) -> str:
    """The revision an undisturbed rollout of ``image`` ends with (a pure hash of template and model)."""
    return revision_of(json.loads(manifest(image, name=name))["spec"]["template"], None)


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture
def api_proxy(crd: ControlPlane) -> Iterator[FaultProxy]:
    """A fault proxy in front of the test control plane's apiserver."""
    with for_control_plane(crd) as proxy:
        yield proxy


@pytest.fixture
def proxied_operator(api_proxy: FaultProxy, namespace: str, tmp_path: Path) -> Iterator[ManagedProcess]:
    """The operator (child process) whose only way to the apiserver is the fault proxy."""
    kubeconfig = proxy_kubeconfig(tmp_path / "proxy.kubeconfig", api_proxy.url)
    proc = operator_process(kubeconfig, tmp_path / "operator.log", namespaces=[namespace])
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
        faults = [f"{s.method} {s.path} -> {s.status} {s.fault}" for s in api_proxy.requests if s.fault]
        print(f"--- faults injected ({len(faults)})\n" + "\n".join(faults[-40:]))
        kinds = Counter(f"{s.agent.split('/')[0]} {s.method} {'watch ' if s.watch else ''}{s.path.split('/')[-1]}"
                        for s in api_proxy.requests)
        print("--- requests through the proxy\n" + "\n".join(f"{n:5d} {k}" for k, n in sorted(kinds.items())))
        print(f"--- operator log tail ({proc.log})\n{proc.log_tail(60)}")


def release(k: Kubectl, steps: list[dict[str, Any]] = STEPS, name: str = NAME, **spec: Any) -> str:
    """The first revision, stable; returns its revision."""
    k.apply(service(name) + "\n---\n" + ingress(name, f"{name}-stable"))
    k.apply(manifest("model:1", steps, name, **spec))
    return str(k.wait_phase(name, "Succeeded", 90)["stableRevision"])


def at_least(count: int) -> Callable[[list[str]], bool]:
    return lambda writes: len(writes) >= count


def steps_in_order(values: list[str], count: int) -> list[int]:
    """The currentStep values a Watch saw (blank when none), checked to go forward through 0, 1, …, count (all done),
    each once, to the end. A status write the fault refused leaves its step unrecorded (the first step's, say, when
    the reconcile that starts the revision is cut after its Deployment writes): the weights, checked write by write
    in the audit log, show that no step was skipped."""
    steps = [int(v) for v in values if v.strip().isdigit()]
    folded = [s for i, s in enumerate(steps) if i == 0 or steps[i - 1] != s]
    planned = list(range(count + 1))
    assert folded == sorted(set(folded)) and set(folded) <= set(planned) and folded[-1:] == [count], \
        f"steps went {folded}, planned {planned}"
    return folded


# ------------------------------------------------------------------------------------------- API faults


@dataclass(frozen=True)
class Case:
    id: str
    rules: tuple[Rule, ...]


CANARY_DEPLOYMENT = f"{NAME}-{expected_revision('model:2')}"
"""The Deployment of the revision the API cases roll out: NAME-REVISION, the canary, then the stable one."""
STABLE_SERVICE = rf"/api/v1/namespaces/[^/]+/services/{NAME}-stable$"
NEW_DEPLOYMENT = rf"/namespaces/[^/]+/deployments/{CANARY_DEPLOYMENT}$"
"""The new revision's Deployment. The first requests for it are the server-side dry run that checks it before the
revision's first write (reads of the rollout, its Deployments, Services, Ingresses, ConfigMaps and DaemonSets come
from the operator's watches, and the new Deployment is known absent from the listing): a 500 there must be retried
without any write made before it succeeds."""


def _cases() -> list[Case]:
    return [
        Case("conflicts", (
            Rule(conflict("modelrollouts.modelrollout.io", NAME), path=ROLLOUT + "/status$", method="PATCH",
                 agent=CLIENT, times=3),
            Rule(conflict("ingresses.networking.k8s.io", f"{NAME}-canary"), path=CANARY_INGRESS, method="PATCH",
                 times=2),
            Rule(conflict("deployments.apps", CANARY_DEPLOYMENT), path=DEPLOYMENTS + f"/{CANARY_DEPLOYMENT}$",
                 method="PATCH", agent=CLIENT, times=3),
            Rule(conflict("services", f"{NAME}-stable"), path=STABLE_SERVICE, method="PATCH", agent=CLIENT,
                 times=1),  # the promotion: NAME-stable's selector switched to the canary revision
        )),
        Case("429-retry-after", (
            Rule(too_many_requests(3), path=CANARY_INGRESS, method="PATCH", times=1),
            Rule(too_many_requests(1), path=ROLLOUT + "/status$", method="PATCH", agent=CLIENT, times=1),
        )),
        Case("500s", (
            Rule(server_error(), method=WRITE, agent=CLIENT, path=r"/namespaces/", fraction=0.3, seed=7, times=6),
            Rule(server_error(), method="PATCH", agent=CLIENT, path=NEW_DEPLOYMENT, times=2),  # its dry runs
        )),
        Case("lost-responses", (  # the write lands, the operator sees a 500: it must not write it again
            Rule(server_error(forward=True), path=CANARY_INGRESS, method="PATCH", times=2),
            Rule(server_error(forward=True), path=ROLLOUT + "/status$", method="PATCH", agent=CLIENT, times=2),
        )),
        Case("slow", (
            Rule(Delay(1.0), agent=CLIENT, fraction=0.25, seed=3, times=8),
            Rule(Delay(3.0), path=CANARY_INGRESS, method="PATCH", times=1),
        )),
        Case("watch-cuts", (
            Rule(CutWatch(events=1), path=r"/modelrollouts$", watch=True, times=4),
            Rule(CutWatch(events=2, abort=True), path=r"/deployments$", watch=True, times=4),
            Rule(CutWatch(seconds=2.0), watch=True, times=4),
        )),
    ]


CASES = _cases()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_rollout_under_api_faults_ends_as_undisturbed(
        case: Case, k: Kubectl, api_proxy: FaultProxy, proxied_operator: ManagedProcess) -> None:
    first = release(k)
    assert first == expected_revision("model:1")
    rules = [api_proxy.add(_fresh(r)) for r in case.rules]
    with Watch(k, ["ingress", "-l", "modelrollout.io/track=canary"], WEIGHT_PATH) as weights, \
            Watch(k, ["mro", NAME], "{.status.currentStep}") as steps:
        k.apply(manifest("model:2"))
        st = k.wait(name=NAME, predicate=lambda s: s.get("phase") == "Succeeded" and s.get("stableRevision") != first,
                    timeout=150, what=f"{NAME} Succeeded with the new revision under {case.id}")
    # the same end as an undisturbed run
    assert st["stableRevision"] == expected_revision("model:2")
    assert st.get("currentWeight", 0) == 0 and st.get("canaryRevision") is None
    outcomes = [h["outcome"] for h in st["history"] if h["revision"] == st["stableRevision"]]
    assert outcomes == ["Started", "Succeeded"], st["history"]
    # every fault fired, and the operator's requests did go through the proxy
    for rule in rules:
        assert rule.injected >= 1, f"{rule} never fired"
    assert api_proxy.seen("PATCH", CANARY_INGRESS)
    # weights: only the planned sequence, each written once (audit log: successful writes only)
    values = weights.distinct()
    assert [v for v in values if v] == PLANNED_WEIGHTS, values
    assert all(0 <= int(v) <= 100 for v in values if v)
    writes = wait_audit(k.cp, k.ns, "ingresses", f"{NAME}-canary", lambda w: w[-1:] == ["delete"])
    assert writes == ["patch"] * len(PLANNED_WEIGHTS) + ["delete"], writes
    steps_in_order(steps.values, len(STEPS))
    if case.id == "429-retry-after":
        assert_retry_after_honoured(api_proxy, rules)


def _fresh(rule: Rule) -> Rule:
    """A copy of a (module-level) rule with zeroed counters and a fresh RNG, so reruns behave the same."""
    return Rule(rule.action, path=rule.path, method=rule.method, watch=rule.watch, agent=rule.agent,
                times=rule.times, fraction=rule.fraction, seed=rule.seed)


def assert_retry_after_honoured(proxy: FaultProxy, rules: list[Rule]) -> None:
    """The next matching request came no sooner than Retry-After said (the operator's own retry)."""
    for rule in rules:
        assert rule.injected_at, rule
        wait = float(dict(rule.action.headers)["Retry-After"])  # type: ignore[union-attr]
        at = rule.injected_at[0]
        later = [s.at for s in proxy.seen(rule.method, rule.path) if s.at > at and s.fault is None]
        assert later, f"no retry after the 429 on {rule.path}"
        assert later[0] - at >= wait - 0.05, f"retried {later[0] - at:.2f}s after a 429 with Retry-After: {wait:g}"


def test_service_router_under_deployment_faults_writes_what_an_undisturbed_run_writes(
        k: Kubectl, api_proxy: FaultProxy, proxied_operator: ManagedProcess) -> None:
    """The Service router moves traffic by Deployment writes (the stable one carries the weight annotation and
    its replicas): the same rollout, once undisturbed and once with those writes disturbed, writes the same."""

    def run(name: str, faults: Callable[[str, str], tuple[Rule, ...]] = lambda stable, canary: ()
            ) -> tuple[list[str], dict[str, Any]]:
        """The rollout of ``name``; ``faults(stable, canary)``: the rules for the paths of its two Deployments."""
        k.apply(service(name))
        k.apply(rollout(name, steps=STEPS, replicas=2))
        first = k.wait_phase(name, "Succeeded", 90)["stableRevision"]
        assert first == expected_revision("model:1", name)
        second = expected_revision("model:2", name)
        rules = faults(f"{name}-{first}", f"{name}-{second}")
        for rule in rules:
            api_proxy.add(rule)
        with Watch(k, ["deployment", f"{name}-{first}"], "{.metadata.annotations.modelrollout\\.io/weight}") as w:
            k.apply(rollout(name, image="model:2", steps=STEPS, replicas=2))
            st = k.wait(name, lambda s: s.get("phase") == "Succeeded" and s.get("stableRevision") != first, 150,
                        f"{name} Succeeded with the new revision")
        for rule in rules:
            assert rule.injected >= 1, f"{rule} never fired"
        return w.distinct(), st

    base_weights, base = run("base")
    weights, st = run("svc", lambda stable, canary: (
        Rule(server_error(forward=True), path=rf"{DEPLOYMENTS}/{stable}$", method="PATCH", agent=CLIENT, times=2),
        Rule(too_many_requests(1), path=rf"{DEPLOYMENTS}/{stable}$", method="PATCH", agent=CLIENT, times=1),
        Rule(conflict("deployments.apps", canary), path=rf"{DEPLOYMENTS}/{canary}$", method="PATCH",
             agent=CLIENT, times=2),
    ))
    assert [v for v in base_weights if v] == PLANNED_WEIGHTS, base_weights
    assert weights == base_weights
    assert st["phase"] == base["phase"] == "Succeeded"
    assert [h["outcome"] for h in st["history"]] == [h["outcome"] for h in base["history"]]
    # per Deployment: the first revision's (stable, deleted at the switch) and the second's (canary, then stable)
    for image in ("model:1", "model:2"):
        want = audit_writes(k.cp, k.ns, "deployments", f"base-{expected_revision(image, 'base')}")
        got = wait_audit(k.cp, k.ns, "deployments", f"svc-{expected_revision(image, 'svc')}", at_least(len(want)))
        assert got == want, f"{image}: {got} != undisturbed {want}"


# ---------------------------------------------------------------------------------------- Prometheus faults

COMPAT = 'min(model_api_compatibility_score{rollout="{{rollout}}",track="{{track}}"})'
ANALYSED_STEPS: list[dict[str, Any]] = [{"setWeight": 20}, {"analysis": {"passes": 1}}, {"setWeight": 50},
                                        {"setWeight": 100}]
WHY = {"stopped": "did not answer", "slow": "did not answer", "empty": "empty result"}


@pytest.mark.parametrize("fault", ["stopped", "slow", "empty"])
def test_missing_metrics_hold_the_weight_and_the_rollout_resumes(
        fault: str, k: Kubectl, operator: ManagedProcess, prometheus: Prometheus, tmp_path: Path) -> None:
    """Prometheus stopped (connection refused), slower than the query timeout (a delaying proxy), or the
    canary's series gone (its exporter stopped: the query selects nothing): inconclusive, never a pass.

    One rollout name per case: a Prometheus restarted (the fixture, or the "stopped" case) writes no stale
    markers for the series it had, so they answer queries for 5 minutes more."""
    name = f"prom-{fault}"
    with FaultProxy(prometheus.url) as prom_proxy, exporters(prometheus, tmp_path, name) as ex:
        address = prom_proxy.url if fault == "slow" else prometheus.url
        spec = {"analysis": {"interval": "1s", "prometheus": {"address": address, "timeout": "1s"},
                             "inconclusive": {"limit": 2, "action": "pause"},
                             "metrics": [{"name": "api-compatibility", "query": COMPAT, "min": 0.99}]}}
        first = release(k, ANALYSED_STEPS, name, **spec)
        delay = Rule(Delay(3.0), path=r"^/api/v1/query$")
        if fault == "stopped":
            prometheus.stop()
        elif fault == "slow":
            prom_proxy.add(delay)
        else:
            ex["canary"].process.stop()
            prometheus.wait_for(f'model_api_compatibility_score{{rollout="{name}",track="canary"}}',
                                lambda r: not r, 30)
        with Watch(k, ["ingress", "-l", "modelrollout.io/track=canary"], WEIGHT_PATH) as weights:
            k.apply(manifest("model:2", ANALYSED_STEPS, name, **spec))
            held = k.wait(name, lambda s: s.get("phase") == "Paused" and "inconclusive" in s.get("message", ""),
                          90, f"{name} paused on inconclusive analysis ({fault})")
            # no promotion, no weight increase on missing data, and the status says why
            assert held["stableRevision"] == first and held["currentWeight"] == 20
            assert WHY[fault] in held["message"], held["message"]
            metric = held["analysis"][0]
            assert metric["verdict"] == "Inconclusive" and WHY[fault] in metric["message"], metric
            assert not any(h["outcome"] == "AnalysisPassed" for h in held["history"]), held["history"]
            assert [v for v in weights.distinct() if v] == ["20"]
            if fault == "slow":
                assert delay.injected >= 2
                prom_proxy.remove(delay)
            elif fault == "stopped":
                prometheus.start()
            else:
                ex["canary"].process.start()
            st = k.wait(name, lambda s: s.get("phase") == "Succeeded" and s.get("stableRevision") != first, 120,
                        f"{name} Succeeded once metrics are back ({fault})")
    assert st["stableRevision"] == expected_revision("model:2", name)
    assert [v for v in weights.distinct() if v] == ["20", "50", "100"]
    assert any(h["outcome"] == "AnalysisPassed" for h in st["history"])
    assert any(e["reason"] == "AnalysisInconclusive" for e in k.events(name))
