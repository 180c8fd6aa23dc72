"""Status never lies: what the apiserver refuses is visible in status (``Stalled``), in an Event, and retried with
a capped exponential backoff, never in a silent loop (``core.refusal``).

The real operator talks to the real apiserver; refusals are real (a ConfigMap over the 1 MiB object limit) or
injected by the fault proxy (403 on a write, 400 on a status update), and counted there.
"""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

import pytest

from devenv.localenv.controlplane import ControlPlane
from devenv.localenv.faultproxy import FaultProxy, Respond, Rule, status_body
from devenv.localenv.procs import ManagedProcess, wait_until
from modelrollout.core.refusal import backoff

from .kube import Json, Kubectl, Watch, deployment_names, track_deployment
from .manifests import ingress, rollout, service
from .test_faults import CLIENT, api_proxy, proxied_operator
from .test_routers_gateway_istio import HEADER

FIXTURES = (api_proxy, proxied_operator)
"""The fault proxy and the operator behind it (shared with test_faults), the HTTPRoute CRD (with
test_routers_gateway_istio)."""

STEPS: list[dict[str, Any]] = [{"setWeight": 20}, {"setWeight": 100}]
WINDOW = 20.0
"""Seconds over which refused requests are counted: a retry every second would make about 20 of them."""
STALLED = '{.status.phase}|{.status.conditions[?(@.type=="Stalled")].status}|' \
          '{.status.conditions[?(@.type=="Stalled")].message}'


def manifest(name: str, image: str, **spec: Any) -> str:
    return rollout(name, image=image, steps=STEPS, replicas=2, ingress=True, **spec)


def release(k: Kubectl, name: str, **spec: Any) -> str:
    k.apply(service(name) + "\n---\n" + ingress(name, f"{name}-stable"))
    k.run("apply", "--server-side", "-f", "-", input=manifest(name, "model:1", **spec))
    return str(k.wait_phase(name, "Succeeded", 90)["stableRevision"])


def condition(status: Json, kind: str) -> Json:
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind), {})


def refused(code: int, reason: str, message: str) -> Respond:
    return Respond(code, status_body(code, reason, message), (("Content-Type", "application/json"),))


def warnings(k: Kubectl, name: str, reason: str) -> list[Json]:
    return [e for e in k.events(name) if e.get("reason") == reason and e.get("type") == "Warning"]


def count_over_window(rule: Rule) -> list[float]:
    """The times (seconds after the first) at which ``rule`` refused a request during :data:`WINDOW` seconds."""
    wait_until(lambda: bool(rule.injected_at), 90, 0.1, what="the first refusal")
    first = rule.injected_at[0]
    wait_until(lambda: time.monotonic() - first >= WINDOW, WINDOW + 5, 0.2, what="the end of the window")
    return [t - first for t in list(rule.injected_at) if t - first <= WINDOW]


def assert_backs_off(times: list[float], per_attempt: int = 1) -> None:
    """Few refusals, and the gaps between attempts grow as :func:`backoff` says (not a retry a second)."""
    attempts = times[::per_attempt]
    assert 2 <= len(attempts) <= 6, f"{len(times)} refused requests in {WINDOW:g}s: {times}"
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    for n, gap in enumerate(gaps, start=1):
        assert gap >= backoff(n) - 0.25, f"attempt {n + 1} came {gap:.2f}s after the refusal, backoff {backoff(n)}s"


def test_config_over_the_object_limit_is_invalid_before_anything_moves(k: Kubectl, operator: ManagedProcess) -> None:
    name = "bigcfg"
    first = release(k, name, model={"version": "1", "config": {"max_length": 4096}})
    assert k.get("configmap", f"{name}-config-{first}") is not None
    big = {"version": "2", "config": {"max_length": 4096, "vocabulary": "x" * (1024 * 1024 + 4096)}}
    k.run("apply", "--server-side", "-f", "-", input=manifest(name, "model:2", model=big))
    generation = int(k.mro(name)["metadata"]["generation"])
    st = k.wait(name, lambda s: s.get("phase") == "Invalid" and s.get("observedGeneration") == generation, 60,
                f"{name} Invalid for generation {generation}")
    # the apiserver's own words, naming the field and the object
    assert "spec.model.config" in st["message"] and "1048576" in st["message"], st["message"]
    ready, stalled = condition(st, "Ready"), condition(st, "Stalled")
    assert ready["status"] == "False" and ready["observedGeneration"] == generation
    assert stalled["status"] == "True" and "1048576" in stalled["message"]
    # no traffic object touched, nothing rendered for the new revision
    assert st["stableRevision"] == first and st.get("currentWeight", 0) == 0 and st.get("canaryRevision") is None
    assert k.get("ingress", f"{name}-canary") is None
    assert deployment_names(k, name) == [f"{name}-{first}"], "no Deployment for the new revision"
    stable = track_deployment(k, name, "stable")
    assert stable is not None and stable["metadata"]["annotations"]["modelrollout.io/revision"] == first
    names = [c["metadata"]["name"] for c in json.loads(k.run("get", "configmaps", "-o", "json"))["items"]]
    assert names.count(f"{name}-config-{first}") == 1 and not any(
        n.startswith(f"{name}-config-") and n != f"{name}-config-{first}" for n in names), names
    events = warnings(k, name, "PhaseInvalid")
    assert events and "1048576" in events[-1]["message"], events


def test_a_route_the_apiserver_would_refuse_is_invalid_before_anything_moves(
        k: Kubectl, operator: ManagedProcess, route_crds: ControlPlane) -> None:
    """An HTTPRoute that already has the 16 rules Gateway API allows: the header-pin rule the operator would add
    makes 17, which the CRD's schema refuses. The dry run finds it before any write: Invalid with the
    apiserver's message, the route untouched, no canary."""
    name = "full-route"
    rules = [{"name": f"r{i}", "matches": [{"path": {"type": "PathPrefix", "value": f"/r{i}"}}],
              "backendRefs": [{"name": "docs", "port": 80}]} for i in range(15)]
    rules.append({"name": "api", "matches": [{"path": {"type": "PathPrefix", "value": "/v1"}}],
                  "backendRefs": [{"name": name, "port": 80}]})
    route = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": name},
             "spec": {"parentRefs": [{"name": "gateway"}], "rules": rules}}
    spec: dict[str, Any] = {"traffic": {"service": {"name": name}, "httpRoute": {"name": name, "rule": "api"},
                                        "headerRoute": HEADER}}
    k.apply(service(name) + "\n---\n" + json.dumps(route))
    k.apply(rollout(name, steps=STEPS, replicas=2, **spec))
    first = str(k.wait_phase(name, "Succeeded", 90)["stableRevision"])
    before = k.get("httproute", name)
    assert before is not None
    k.apply(rollout(name, image="model:2", steps=STEPS, replicas=2, **spec))
    generation = int(k.mro(name)["metadata"]["generation"])
    st = k.wait(name, lambda s: s.get("phase") == "Invalid" and s.get("observedGeneration") == generation, 60,
                f"{name} Invalid for generation {generation}")
    assert "spec.traffic.httpRoute" in st["message"] and "must have at most 16 items" in st["message"], st["message"]
    assert condition(st, "Ready")["status"] == "False" and condition(st, "Stalled")["status"] == "True"
    assert st["stableRevision"] == first and st.get("currentWeight", 0) == 0
    after = k.get("httproute", name)
    assert after is not None and after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert deployment_names(k, name) == [f"{name}-{first}"], "no Deployment for the new revision"
    assert warnings(k, name, "PhaseInvalid")


@pytest.mark.parametrize("target", ["write", "status"])
def test_a_forbidden_write_stalls_visibly_and_backs_off(target: str, k: Kubectl, api_proxy: FaultProxy,
                                                        proxied_operator: ManagedProcess) -> None:
    """403 on the weight write (the canary Ingress): Stalled=True with the apiserver's message in status. 403 on
    every status update, the stall's own included: the Warning Event and the log are what remain. Either way the
    attempts back off, and the rollout completes once the refusal stops."""
    name = f"forbid-{target}"
    first = release(k, name)
    if target == "write":
        path, what = rf"/namespaces/[^/]+/ingresses/{name}-canary$", "ingresses"
    else:
        path, what = rf"/namespaces/[^/]+/modelrollouts/{name}/status$", "modelrollouts/status"
    message = f'{what} "{name}" is forbidden: User "modelrollout-operator" cannot patch resource (injected)'
    rule = api_proxy.add(Rule(refused(403, "Forbidden", message), path=path, method="PATCH", agent=CLIENT))
    k.run("apply", "--server-side", "-f", "-", input=manifest(name, "model:2"))
    times = count_over_window(rule)
    # per attempt: the write; with the status refused, the decision's status and then the stall's
    assert_backs_off(times, per_attempt=1 if target == "write" else 2)
    events = warnings(k, name, "WriteRefused")
    assert events and all("is forbidden" in e["message"] and "403" in e["message"] for e in events), events
    assert len(events) <= len(times)
    st = k.status(name)
    if target == "write":
        stalled = condition(st, "Stalled")
        assert stalled["status"] == "True" and "is forbidden" in stalled["message"], st
        assert condition(st, "Ready")["status"] == "False"
        assert st["message"].startswith("stalled: ") and "retrying in" in st["message"]
        assert st["currentWeight"] == 0  # the weight was never written: status does not claim it
        # a spec change is tried at once, not after the backoff: the new revision's weight write comes (and is
        # refused) well before the retry the backoff scheduled
        scheduled = rule.injected_at[0] + times[-1] + backoff(len(times))
        seen = rule.injected
        k.run("apply", "--server-side", "-f", "-", input=manifest(name, "model:3"))
        wait_until(lambda: rule.injected > seen, 30, 0.1, what="the new revision's weight write")
        assert rule.injected_at[seen] < scheduled - 1, "the new generation waited for the old backoff"
    else:
        assert st["phase"] == "Succeeded" and st["stableRevision"] == first  # nothing could be written
        log = proxied_operator.log.read_text(errors="replace")
        assert "could not record the stall in status either" in log and "(injected)" in log
    api_proxy.remove(rule)
    done = k.wait(name, lambda s: s.get("phase") == "Succeeded" and s.get("stableRevision") != first, 120,
                  f"{name} Succeeded once the refusal stops")
    assert condition(done, "Stalled")["status"] == "False" and condition(done, "Ready")["status"] == "True"


def test_a_refused_status_update_is_made_visible(k: Kubectl, api_proxy: FaultProxy,
                                                 proxied_operator: ManagedProcess) -> None:
    """A status update answered 400 (as a non-finite float in the body once made the apiserver answer): a minimal
    status says so (Stalled=True with the apiserver's message, Ready=False for the new generation; the phase stays
    Succeeded, which core.phases never turns into Failed), a Warning Event too, and the next attempt after the
    backoff records the rollout again."""
    name = "badstatus"
    first = release(k, name)
    message = "injected: invalid character 'I' looking for beginning of value"
    rule = api_proxy.add(Rule(refused(400, "BadRequest", message), path=rf"/modelrollouts/{name}/status$",
                              method="PATCH", agent=CLIENT, times=1))
    with Watch(k, ["mro", name], STALLED) as seen:
        k.run("apply", "--server-side", "-f", "-", input=manifest(name, "model:2"))
        done = k.wait(name, lambda s: s.get("phase") == "Succeeded" and s.get("stableRevision") != first, 120,
                      f"{name} Succeeded after the refused update")
    assert rule.injected == 1
    stalls = [v for v in seen.distinct() if v.startswith("Succeeded|True|")]
    assert stalls, seen.distinct()
    assert message in stalls[0] and "status update" in stalls[0] and "400" in stalls[0], stalls[0]
    events = warnings(k, name, "WriteRefused")
    assert len(events) == 1 and message in events[0]["message"], events
    assert "carried out but not recorded" in events[0]["message"]
    assert condition(done, "Stalled")["status"] == "False" and condition(done, "Ready")["status"] == "True"
