"""A weight, header pin or mirror reaches the router only once the canary's Service lists its ready pods: a router
sends the canary's share to those endpoints, and answers 503 while there are none (the real node showed 48 of
400 requests failing when the weight was written on the Deployment's readiness alone)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from modelrollout.api import Phase
from modelrollout.kube import Kube, ready_endpoints

from .sim import released

NGINX = {"traffic": {"service": {"name": "m"}, "ingress": {"name": "m"}}}


@pytest.mark.parametrize(("steps", "extra"), [
    ([{"setWeight": 20}, {"setWeight": 100}], {}),
    ([{"setHeaderRoute": {"name": "x-canary", "value": "1"}}, {"setWeight": 100}], {}),
    ([{"setWeight": 0}, {"setWeight": 100}], {"headerRoute": {"name": "x-canary", "value": "1"}}),
])
def test_traffic_waits_for_the_canary_service_to_list_ready_pods(steps: list[dict[str, Any]],
                                                                  extra: dict[str, Any]) -> None:
    w = released(steps, **NGINX)
    w.raw["traffic"].update(extra)
    before = len(w.routes)
    w.canary_serving = 0
    w.set_image("img:2")
    w.run(until=lambda w: "to list the ready canary pods (0/" in (w.status.message or ""))
    for _ in range(5):  # the pods are ready, the endpoints are not: nothing moves, however often it looks
        w.step()
        w.now += timedelta(seconds=5)
    assert all(weight == 0 and not features.any for weight, features in w.routes[before:])
    assert w.status.phase is Phase.PROGRESSING and w.status.current_weight == 0
    w.canary_serving = 4
    w.run(until=lambda w: w.status.phase is Phase.SUCCEEDED)
    assert any(weight > 0 or features.any for weight, features in w.routes[before:])


def test_a_weight_increase_waits_for_the_new_canary_pods_endpoints() -> None:
    w = released([{"setWeight": 25}, {"setWeight": 50}, {"setWeight": 100}], **NGINX)
    w.set_image("img:2")
    w.canary_serving = 1
    w.run(until=lambda w: w.status.current_weight == 25)
    w.run(until=lambda w: "to list the ready canary pods (1/2)" in (w.status.message or ""))
    assert w.weights[-1] == 25
    w.canary_serving = 2
    w.run(until=lambda w: w.status.current_weight == 50)


def test_unobserved_endpoints_do_not_hold_traffic() -> None:
    """None (the Service router, or no slice seen: an operator without the watch) keeps the old rule."""
    w = released([{"setWeight": 20}, {"setWeight": 100}], **NGINX)
    w.set_image("img:2")
    w.run(until=lambda w: w.status.phase is Phase.SUCCEEDED)
    assert 20 in w.weights


def test_ready_endpoints_count_pods_that_take_traffic() -> None:
    slice_ = {"endpoints": [
        {"addresses": ["10.0.0.1"], "conditions": {"ready": True}, "targetRef": {"name": "a"}},
        {"addresses": ["10.0.0.2"], "conditions": {"ready": False}, "targetRef": {"name": "b"}},
        {"addresses": ["10.0.0.3"], "conditions": {}, "targetRef": {"name": "c"}},  # unset reads as ready
        {"addresses": ["10.0.0.4"]},
    ]}
    assert ready_endpoints(slice_) == {"a", "c", "10.0.0.4"}
    assert ready_endpoints({}) == frozenset()


def test_the_port_counts_a_services_endpoints_over_its_slices() -> None:
    kube = Kube(None)
    assert kube.serving("ns", "m-canary") is None
    labels = {"kubernetes.io/service-name": "m-canary", "modelrollout.io/rollout": "m"}
    one = {"metadata": {"name": "m-canary-a", "labels": labels},
           "endpoints": [{"addresses": ["10.0.0.1"], "targetRef": {"name": "m-r1-x-p1"}}]}
    two = {"metadata": {"name": "m-canary-b", "labels": labels},
           "endpoints": [{"addresses": ["fd00::1"], "targetRef": {"name": "m-r1-x-p1"}},  # dual stack: the same pod
                         {"addresses": ["fd00::2"], "targetRef": {"name": "m-r2-x-p2"}}]}
    kube.saw(("endpointslices", "ns", "m-canary-a"), one)
    assert kube.serving("ns", "m-canary") == 1
    kube.saw(("endpointslices", "ns", "m-canary-b"), two)
    assert kube.serving("ns", "m-canary") == 2
    # only the pods of one Deployment: a Service whose selector just moved may still list the other revision's
    assert kube.serving("ns", "m-canary", "m-r1-") == 1 and kube.serving("ns", "m-canary", "m-r3-") == 0
    kube.saw(("endpointslices", "ns", "m-canary-a"), one, deleted=True)
    kube.saw(("endpointslices", "ns", "m-canary-b"), {**two, "endpoints": []})
    assert kube.serving("ns", "m-canary") == 0
    kube.saw(("endpointslices", "ns", "m-canary-b"), two, deleted=True)
    assert kube.serving("ns", "m-canary") is None


def test_only_a_change_of_the_canary_services_ready_endpoints_wakes_the_rollout() -> None:
    import asyncio
    from types import SimpleNamespace

    import kopf

    from modelrollout.handlers import endpoints_changed

    kube = Kube(None)
    kube.saw(("modelrollouts", "ns", "m"), {"metadata": {"name": "m", "uid": "u1", "resourceVersion": "1"}})
    woken = asyncio.Event()
    memo = kopf.Memo(engine=SimpleNamespace(kube=kube), wakeups={"u1": woken})

    def event(service: str, pods: list[str], ready: bool = True) -> bool:
        body = {"metadata": {"name": f"{service}-x", "namespace": "ns", "labels": {
            "kubernetes.io/service-name": service, "modelrollout.io/rollout": "m"}},
            "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": ready}, "targetRef": {"name": p}}
                          for p in pods]}
        woken.clear()
        asyncio.run(endpoints_changed(body=kopf.Body(body), memo=memo, name=f"{service}-x", namespace="ns",
                                      type="MODIFIED"))
        return woken.is_set()

    assert event("m-canary", ["m-r2-a"])  # first seen: the rollout may be waiting for it
    assert not event("m-canary", ["m-r2-a"])  # rewritten with the same ready pods
    assert event("m-canary", ["m-r2-a", "m-r2-b"])
    assert event("m-canary", ["m-r2-a"], ready=False)  # none ready any more: a change too
    assert not event("m-stable", ["m-r1-a"])  # the stable Service's endpoints decide nothing
