"""bench.peer's pure parts: the audit log counted by user agent, and the ratio/target table."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

from bench.common import BENCH_AGENT, now
from bench.peer import (
    ARGO_AGENTS,
    ARGO_DEFAULT,
    MODELROLLOUT,
    ScaleRun,
    Target,
    argo_promoted,
    excess_by_kind,
    tally,
    target_rows,
)


def stamp(at: float) -> str:
    """An audit timestamp ``at`` seconds from now (the apiserver writes µs, wall clock)."""
    return datetime.fromtimestamp(time.time() + at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def line(agent: str, verb: str, resource: str, *, namespace: str = "ns", sub: str = "", at: float = -1.0,
         stage: str = "ResponseComplete", uri: str = "/apis/x") -> bytes:
    ref = {"resource": resource, "namespace": namespace, "name": "x"}
    if sub:
        ref["subresource"] = sub
    return json.dumps({"stage": stage, "verb": verb, "userAgent": agent, "objectRef": ref, "requestURI": uri,
                       "requestReceivedTimestamp": stamp(at), "stageTimestamp": stamp(at)}).encode() + b"\n"


ARGO = "rollouts-controller/v0.0.0 (linux/amd64) kubernetes/$Format"


def test_the_controllers_requests_are_told_apart_by_user_agent_and_namespace() -> None:
    lines = [
        line(ARGO, "patch", "rollouts", sub="status"),
        line(ARGO, "patch", "ingresses"),
        line(ARGO, "patch", "ingresses"),
        line(ARGO, "create", "events"),                         # Events: counted apart, not in the figure
        line(ARGO, "get", "services", namespace="other"),       # another namespace: all clients only
        line("OpenAPI-Generator/35.0.0/python", "patch", "modelrollouts", sub="status"),  # another controller
        line("kube-controller-manager/v1.36.3", "update", "replicasets"),
        line(f"{BENCH_AGENT}/1", "list", "rollouts"),           # the benchmark's own watch: never counted
        line(ARGO, "patch", "ingresses", stage="RequestReceived"),  # not a completed request
        line(ARGO, "patch", "ingresses", at=60.0),              # after the window's end
        b'{"stage":"ResponseComplete","verb":"get"',            # a line still being written
    ]
    t = tally(lines, namespace="ns", agents=ARGO_AGENTS, until=now())
    assert t.controller == 3
    assert t.controller_events == 1
    assert t.controller_by == {"patch ingresses": 2, "patch rollouts/status": 1}
    assert t.all_clients == 7


def test_dry_runs_are_counted_apart_by_kind() -> None:
    agent = "OpenAPI-Generator/35.0.0/python"
    lines = [line(agent, "patch", "deployments", uri="/apis/apps/v1/namespaces/ns/deployments/x?dryRun=All&force=true"),
             line(agent, "patch", "deployments", uri="/apis/apps/v1/namespaces/ns/deployments/x?force=true")]
    t = tally(lines, namespace="ns", agents=("OpenAPI-Generator",), until=now())
    assert t.controller_by == {"patch deployments (dry run)": 1, "patch deployments": 1} and t.controller == 2


def test_several_agent_prefixes_make_one_controller() -> None:
    lines = [line("OpenAPI-Generator/35.0.0/python", "get", "services"), line("kopf/1.38", "patch", "modelrollouts"),
             line(ARGO, "get", "services")]
    t = tally(lines, namespace="ns", agents=("OpenAPI-Generator", "kopf"), until=now())
    assert (t.controller, t.all_clients) == (2, 3)


def test_a_target_is_met_at_or_below_its_ratio_and_missed_by_the_excess_over_it() -> None:
    met = Target("time", 13.4, 20.0, 0.67, "s")
    missed = Target("requests per rollout", 30.5, 20.0, 1.0)
    assert met.met and met.verdict() == "met"
    assert not missed.met
    assert missed.verdict() == "missed by 52% (ratio 1.52, target ≤ 1)"
    assert Target("time", 24.7, 21.5, 0.67, "s").verdict() == "missed by 71% (ratio 1.15, target ≤ 0.67)"


def test_the_target_table_shows_both_values_the_ratio_and_the_verdict() -> None:
    rows = target_rows([Target("controller RSS at the end", 129.0, 106.0, 1.0, "MiB"),
                        Target("breach → stable p99", 0.871, 1.014, 1.0, "ms"),
                        Target("CPU", 1.0, 0.0, 1.0, "s")])
    assert rows[0] == ["controller RSS at the end", "129 MiB", "106 MiB", "1.22", "≤ 1",
                       "missed by 22% (ratio 1.22, target ≤ 1)"]
    assert rows[1] == ["breach → stable p99", "871 ms", "1014 ms", "0.86", "≤ 1", "met"]
    assert rows[2][3:] == ["n/a", "≤ 1", "n/a"]   # nothing to divide by: no verdict


def test_argo_counts_as_promoted_only_once_it_saw_the_latest_spec() -> None:
    healthy = {"metadata": {"generation": 2},
               "status": {"observedGeneration": "2", "phase": "Healthy", "stableRS": "abc", "currentPodHash": "abc"}}
    assert argo_promoted(healthy)
    stale = {**healthy, "metadata": {"generation": 3}}
    assert not argo_promoted(stale)
    canary = {**healthy, "status": {**healthy["status"], "currentPodHash": "def"}}
    assert not argo_promoted(canary)


def test_where_ours_sends_more_is_per_rollout_with_the_custom_resources_compared_as_one() -> None:
    ours = ScaleRun(MODELROLLOUT, 10, requests_by={"patch modelrollouts/status": 100, "get services": 70,
                                                     "patch ingresses": 20})
    argo = ScaleRun(ARGO_DEFAULT, 10, requests_by={"patch rollouts/status": 70, "patch ingresses": 30})
    assert excess_by_kind(ours, argo) == [("get services", 7.0), ("patch rollouts/status", 3.0)]
