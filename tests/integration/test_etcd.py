"""The control plane on etcd 3.6 (hack/etcd/build.sh) serves the apiserver's watch cache, as production clusters
do, and a rollout runs end to end on it.

A control plane of its own (etcd chosen explicitly, whatever MODELROLLOUT_ETCD says for the rest of the run).
What could fail: etcd without progress notifications leaves the cache of an unchanged resource behind the
cluster's resourceVersion, and a consistent LIST then falls back to etcd (or waits); etcd 3.4 with the cache on
stalls watches (docs/testing.md).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from devenv.localenv.controlplane import ControlPlane, ControlPlaneError, select_etcd, start_control_plane
from devenv.localenv.operatorproc import operator_process
from devenv.localenv.procs import wait_until
from modelrollout.crdgen import render

from .kube import Kubectl, Watch, track_deployment
from .manifests import ingress, rollout, service

pytestmark = pytest.mark.integration

METRIC = re.compile(r"^(?P<name>[a-z_]+)\{(?P<labels>[^}]*)\} (?P<value>\S+)$")


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    try:
        etcd = select_etcd("built")
    except ControlPlaneError as e:
        if os.environ.get("MODELROLLOUT_REQUIRE_CLUSTER") == "1":
            pytest.fail(f"{e} (MODELROLLOUT_REQUIRE_CLUSTER=1)", pytrace=False)
        pytest.skip(str(e))
    cp = start_control_plane(tmp_path_factory.mktemp("etcd36"), nodes=1, etcd=etcd)
    try:
        yield cp
    finally:
        cp.stop()


def metrics(cp: ControlPlane, name: str) -> dict[str, float]:
    """The apiserver's samples of metric ``name``, keyed by their label text."""
    out: dict[str, float] = {}
    for line in cp.kubectl("get", "--raw=/metrics").stdout.splitlines():
        m = METRIC.match(line)
        if m and m["name"] == name:
            out[m["labels"]] = float(m["value"])
    return out


def sample(cp: ControlPlane, name: str, **labels: str) -> float:
    """The sum of ``name`` over the samples carrying every one of ``labels``."""
    want = {f'{k}="{v}"' for k, v in labels.items()}
    return sum(v for text, v in metrics(cp, name).items() if want <= set(text.split(",")))


def test_the_control_plane_says_which_etcd_and_cache(plane: ControlPlane) -> None:
    assert plane.etcd is not None and plane.etcd.source == "built"
    assert plane.etcd.version.startswith("3.6.")
    state = json.loads((plane.workdir / "etcd.json").read_text())
    assert state["version"] == plane.etcd.version and state["watch_cache"] is True
    etcd_log = (plane.workdir / "logs" / "etcd.log").read_text()
    assert "--watch-progress-notify-interval=5s" in etcd_log
    assert "deprecated" not in etcd_log  # no flag of ours is on its way out
    assert "--watch-cache=true" in (plane.workdir / "logs" / "kube-apiserver.log").read_text()


def test_progress_notifications_keep_an_unchanged_resource_cache_current(plane: ControlPlane) -> None:
    """limitranges never change here; their cache's resourceVersion still reaches a newer write elsewhere, and
    only through etcd's progress notifications (the apiserver counts them as etcd bookmarks)."""
    ns = "progress"
    plane.kubectl("create", "namespace", ns)
    created = json.loads(plane.kubectl("create", "configmap", "mark", "-n", ns, "-o", "json").stdout)
    rv = int(created["metadata"]["resourceVersion"])
    bookmarks = sample(plane, "etcd_bookmark_total", resource="limitranges")

    def caught_up() -> bool:
        return sample(plane, "apiserver_watch_cache_resource_version", resource="limitranges") >= rv

    wait_until(caught_up, 30, 0.5, what=f"the limitranges cache at resourceVersion {rv}")
    assert sample(plane, "etcd_bookmark_total", resource="limitranges") > bookmarks


def test_lists_are_consistent_reads_from_the_cache(plane: ControlPlane) -> None:
    """A LIST without resourceVersion right after writes has every write, and the cache served it (no fallback
    to etcd)."""
    ns = "lists"
    plane.kubectl("create", "namespace", ns)
    before = sample(plane, "apiserver_watch_cache_consistent_read_total", resource="configmaps",
                    fallback="false", success="true")
    fallbacks = sample(plane, "apiserver_watch_cache_consistent_read_total", resource="configmaps", fallback="true")
    for i in range(5):
        plane.kubectl("create", "configmap", f"c{i}", "-n", ns)
        listed = json.loads(plane.kubectl("get", "configmaps", "-n", ns, "-o", "json").stdout)["items"]
        assert {f"c{j}" for j in range(i + 1)} <= {c["metadata"]["name"] for c in listed}
    served = sample(plane, "apiserver_watch_cache_consistent_read_total", resource="configmaps",
                    fallback="false", success="true")
    assert served - before >= 5
    assert sample(plane, "apiserver_watch_cache_consistent_read_total", resource="configmaps",
                  fallback="true") == fallbacks


def test_a_rollout_runs_end_to_end_on_the_cache(plane: ControlPlane, tmp_path: Path) -> None:
    """The operator's watches of ModelRollouts are served from the watch cache, and a canary over NGINX runs
    every weight to Succeeded."""
    plane.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=render())
    plane.wait_established("modelrollouts.modelrollout.io")
    ns = "rollout"
    plane.kubectl("create", "namespace", ns)
    wait_until(lambda: plane.kubectl("get", "serviceaccount", "default", "-n", ns, check=False).returncode == 0,
               30, what=f"ServiceAccount {ns}/default")
    k = Kubectl(plane, ns)
    proc = operator_process(plane.kubeconfig, tmp_path / "operator.log", namespaces=[ns])
    proc.start()
    try:
        steps = [{"setWeight": 10}, {"setWeight": 30}, {"setWeight": 60}, {"setWeight": 100}]
        spec = {"traffic": {"service": {"name": "m"}, "ingress": {"name": "m"}}}
        k.apply(service("m") + "\n---\n" + ingress("m", "m-stable"))
        k.apply(rollout("m", steps=steps, **spec))
        first = k.wait_phase("m", "Succeeded", 90)["stableRevision"]
        with Watch(k, ["ingress", "-l", "modelrollout.io/track=canary"],
                   "{.metadata.annotations.nginx\\.ingress\\.kubernetes\\.io/canary-weight}") as w:
            k.apply(rollout("m", image="model:2", steps=steps, **spec))
            st = k.wait(name="m", timeout=120,
                        predicate=lambda s: s.get("phase") == "Succeeded" and s.get("stableRevision") != first)
        assert w.distinct() == ["10", "30", "60", "100"]
        assert [h["outcome"] for h in st["history"]][-1] == "Succeeded"
        stable = track_deployment(k, "m", "stable")
        assert stable is not None and stable["spec"]["template"]["spec"]["containers"][0]["image"] == "model:2"
        assert sample(plane, "apiserver_watch_cache_events_dispatched_total", resource="modelrollouts") > 0
    finally:
        proc.stop()
        print(f"--- operator log tail ({proc.log})\n{proc.log_tail(60)}")
