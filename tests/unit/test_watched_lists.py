"""ConfigMaps, DaemonSets and pods are read from the watches of the objects with the operator's rollout label:
listings match equality selectors against the kept bodies, and absence is trusted only where the watch would
show the object."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from modelrollout.kube import Kube, selector_terms
from modelrollout.watchcache import WatchCache, trim_pod
from modelrollout.workloads import pod_failure


def pod(name: str, rv: str = "1", **labels: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}", "resourceVersion": rv,
                     "labels": labels, "managedFields": [{"manager": "kubelet"}], "annotations": {"a": "b"}},
        "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "img", "env": [{"name": "X"}]}]},
        "status": {
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": "t"}],
            "containerStatuses": [{"name": "c", "image": "img:1", "ready": False, "imageID": "sha",
                                   "state": {"waiting": {"reason": "ImagePullBackOff", "message": "no such image"}}}],
        },
    }


class Core:
    """Stands in for CoreV1Api's ConfigMap calls: counts GETs, answers from ``objects``."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.gets = 0
        self.created: list[str] = []

    def read_namespaced_config_map(self, name: str, namespace: str, **_: Any) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException
        self.gets += 1
        if name not in self.objects:
            raise ApiException(status=404)
        return self.objects[name]

    def create_namespaced_config_map(self, namespace: str, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        out = {**body, "metadata": {**body["metadata"], "resourceVersion": "7"}}
        self.objects[body["metadata"]["name"]] = out
        self.created.append(body["metadata"]["name"])
        return out

    def delete_namespaced_config_map(self, name: str, namespace: str) -> None:
        self.objects.pop(name, None)


@pytest.mark.parametrize(("selector", "terms"), [
    ("modelrollout.io/rollout=m", {"modelrollout.io/rollout": "m"}),
    ("modelrollout.io/rollout=m,modelrollout.io/track=canary",
     {"modelrollout.io/rollout": "m", "modelrollout.io/track": "canary"}),
    ("modelrollout.io/rollout==m, modelrollout.io/prewarm=true",
     {"modelrollout.io/rollout": "m", "modelrollout.io/prewarm": "true"}),
    ("modelrollout.io/revision=abc,modelrollout.io/rollout=m",
     {"modelrollout.io/revision": "abc", "modelrollout.io/rollout": "m"}),
])
def test_equality_selectors_are_parsed(selector: str, terms: dict[str, str]) -> None:
    assert selector_terms(selector) == terms


@pytest.mark.parametrize("selector", [
    "", "modelrollout.io/rollout", "modelrollout.io/rollout!=m", "modelrollout.io/rollout in (m)",
    "!modelrollout.io/rollout", "modelrollout.io/track=canary", "modelrollout.io/rollout=",
    "modelrollout.io/rollout=m,modelrollout.io/rollout=n", "modelrollout.io/rollout=m,,x=y",
    "modelrollout.io/rollout=m,modelrollout.io/track notin (a)",
])
def test_anything_but_equality_terms_naming_a_rollout_is_refused(selector: str) -> None:
    with pytest.raises(ValueError):
        selector_terms(selector)


def test_pods_are_listed_from_the_watch_by_selector_and_namespace() -> None:
    kube = Kube(None)
    kube.saw(("pods", "ns", "a"), pod("a", **{"modelrollout.io/rollout": "m", "modelrollout.io/revision": "r1"}))
    kube.saw(("pods", "ns", "b"), pod("b", **{"modelrollout.io/rollout": "m", "modelrollout.io/revision": "r2"}))
    kube.saw(("pods", "ns", "c"), pod("c", **{"modelrollout.io/rollout": "mm", "modelrollout.io/revision": "r1"}))
    kube.saw(("pods", "other", "d"), pod("d", **{"modelrollout.io/rollout": "m", "modelrollout.io/revision": "r1"}))
    names = [p["metadata"]["name"] for p in kube.pods("ns", "modelrollout.io/rollout=m")]
    assert names == ["a", "b"]
    assert [p["metadata"]["name"] for p in kube.pods(
        "ns", "modelrollout.io/rollout=m,modelrollout.io/revision=r2")] == ["b"]
    assert kube.pods("ns", "modelrollout.io/rollout=m,modelrollout.io/track=canary") == []
    kube.saw(("pods", "ns", "a"), pod("a", "2"), deleted=True)
    assert [p["metadata"]["name"] for p in kube.pods("ns", "modelrollout.io/rollout=m")] == ["b"]
    with pytest.raises(ValueError):
        kube.pods("ns", "modelrollout.io/revision=r1")


def test_a_kept_pod_is_trimmed_to_what_pod_failure_reads() -> None:
    kube = Kube(None)
    full = pod("a", **{"modelrollout.io/rollout": "m", "modelrollout.io/revision": "r2"})
    kube.saw(("pods", "ns", "a"), full)
    [kept] = kube.pods("ns", "modelrollout.io/rollout=m")
    assert kept == trim_pod(full)
    assert "managedFields" not in kept["metadata"] and "annotations" not in kept["metadata"]
    assert kept["spec"] == {"nodeName": "node-1"}
    assert kept["status"]["containerStatuses"] == [
        {"name": "c", "image": "img:1", "ready": False,
         "state": {"waiting": {"reason": "ImagePullBackOff", "message": "no such image"}}}]
    assert pod_failure(kube, "ns", "m", "r2") == \
        "ImagePullBackOff on pod a (node node-1): no such image"
    full["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] = "Changed"
    assert kept["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "ImagePullBackOff"


def test_own_config_maps_are_read_from_the_watch() -> None:
    core = Core()
    kube = Kube(None, core=core)
    labels = {"modelrollout.io/rollout": "m", "modelrollout.io/revision": "r1"}
    cm = {"metadata": {"name": "m-r1-config", "namespace": "ns", "resourceVersion": "3", "labels": labels},
          "data": {"k": "v"}}
    kube.saw(("configmaps", "ns", "m-r1-config"), cm)
    assert kube.config_map("ns", "m-r1-config") == cm
    assert core.gets == 0
    kube.delete_config_map("ns", "m-r1-config")
    assert kube.config_map("ns", "m-r1-config") is None  # absence is asked again: an unlabelled one is not watched


def test_a_config_map_not_on_the_watch_is_asked_for_each_time() -> None:
    """A ConfigMap without the operator's label (the compat-probe contract) never shows on the watch: neither a
    404 nor an earlier DELETED event says it is still missing."""
    core = Core()
    kube = Kube(None, core=core)
    assert kube.config_map("ns", "contract") is None
    core.objects["contract"] = {"metadata": {"name": "contract", "resourceVersion": "5"}, "data": {"c": "x"}}
    assert kube.config_map("ns", "contract") == core.objects["contract"]
    assert kube.config_map("ns", "contract") == core.objects["contract"]
    assert core.gets == 3
    kube.saw(("configmaps", "ns", "was-labelled"), {"metadata": {"name": "was-labelled", "resourceVersion": "6"}},
             deleted=True)
    core.objects["was-labelled"] = {"metadata": {"name": "was-labelled", "resourceVersion": "8"}}
    assert kube.config_map("ns", "was-labelled") == core.objects["was-labelled"]


def test_an_own_config_map_created_is_read_without_a_get() -> None:
    core = Core()
    kube = Kube(None, core=core)
    body = {"metadata": {"name": "m-revisions", "namespace": "ns", "labels": {"modelrollout.io/rollout": "m"}},
            "data": {"r1": "{}"}}
    kube.create_config_map(body)
    assert kube.config_map("ns", "m-revisions") == core.objects["m-revisions"]
    assert core.gets == 0
    kube.saw(("configmaps", "ns", "m-revisions"), core.objects["m-revisions"])  # the echo
    assert kube.config_map("ns", "m-revisions") == core.objects["m-revisions"]
    assert core.gets == 0


def test_listed_leaves_out_what_is_not_current() -> None:
    cache = WatchCache()
    cache.saw(("pods", "ns", "a"), {"metadata": {"name": "a", "resourceVersion": "1"}})
    cache.saw(("pods", "ns", "b"), {"metadata": {"name": "b", "resourceVersion": "1"}})
    cache.wrote(("pods", "ns", "b"), "2")  # an own write without an answer: nothing current to read
    cache.read(("pods", "ns", "gone"), lambda: None)  # known absent
    assert [b["metadata"]["name"] for b in cache.listed("pods", "ns")] == ["a"]
    assert cache.listed("pods", "other") == [] and cache.listed("configmaps", "ns") == []


class Apps:
    """Stands in for AppsV1Api's DaemonSet reads: counts them; ``existing`` are there, anything else is not."""

    def __init__(self, *existing: str) -> None:
        self.existing = set(existing)
        self.calls: list[str] = []

    def read_namespaced_daemon_set(self, name: str, namespace: str, **_: Any) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException
        self.calls.append(f"get {name}")
        if name not in self.existing:
            raise ApiException(status=404)
        return {"metadata": {"name": name, "resourceVersion": "9"}}

    def list_namespaced_daemon_set(self, namespace: str, *, label_selector: str, **_: Any) -> dict[str, Any]:
        assert label_selector == "modelrollout.io/rollout"
        self.calls.append(f"list {namespace}")
        return {"items": [{"metadata": {"name": n}} for n in sorted(self.existing)]}


def test_the_prewarm_daemon_set_is_read_from_the_watch() -> None:
    apps = Apps()
    kube = Kube(None, apps=apps)
    ds = {"metadata": {"name": "m-prewarm", "resourceVersion": "4", "managedFields": [{"manager": "x"}],
                       "labels": {"modelrollout.io/rollout": "m"}}, "status": {"numberReady": 1}}
    kube.saw(("daemonsets", "ns", "m-prewarm"), ds)
    assert kube.daemon_set("ns", "m-prewarm") == {"metadata": {"name": "m-prewarm", "resourceVersion": "4",
                                                               "labels": {"modelrollout.io/rollout": "m"}},
                                                  "status": {"numberReady": 1}}
    kube.saw(("daemonsets", "ns", "m-prewarm"), ds, deleted=True)
    assert kube.daemon_set("ns", "m-prewarm") is None
    assert apps.calls == []


def test_a_daemon_set_the_watch_never_showed_is_looked_up_in_one_list_per_namespace() -> None:
    """Absent prewarm DaemonSets cost one LIST per namespace, not a GET per rollout; one the LIST found but the
    watch has not shown yet is read with a GET."""
    apps = Apps("late-prewarm")
    kube = Kube(None, apps=apps)
    assert [kube.daemon_set("ns", f"r{i}-prewarm") for i in range(5)] == [None] * 5
    assert apps.calls == ["list ns"]
    assert kube.daemon_set("ns", "late-prewarm") == {"metadata": {"name": "late-prewarm", "resourceVersion": "9"}}
    assert kube.daemon_set("other", "r0-prewarm") is None
    assert apps.calls == ["list ns", "get late-prewarm", "list other"]
    kube.saw(("daemonsets", "ns", "r1-prewarm"), {"metadata": {"name": "r1-prewarm", "resourceVersion": "3"}})
    assert kube.daemon_set("ns", "r1-prewarm") == {"metadata": {"name": "r1-prewarm", "resourceVersion": "3"}}
    assert len(apps.calls) == 3


class Raw:
    """A raw answer (``_preload_content=False``): the JSON the apiserver sent."""

    def __init__(self, body: dict[str, Any]) -> None:
        import json
        self.data = json.dumps(body).encode()


def test_a_raw_write_answer_is_read_until_the_echo_without_a_get() -> None:
    class Net:
        def __init__(self) -> None:
            self.calls: list[str] = []

        def patch_namespaced_ingress(self, name: str, namespace: str, body: Any, **kw: Any) -> Raw:
            self.calls.append(f"patch {kw.get('_preload_content')}")
            return Raw({**body, "metadata": {**body["metadata"], "resourceVersion": "30"}})

        def read_namespaced_ingress(self, name: str, namespace: str, **kw: Any) -> dict[str, Any]:
            self.calls.append("read")
            return {"metadata": {"name": name, "resourceVersion": "30"}}

    net = Net()
    kube = Kube(None, networking=net)
    kube.apply_ingress({"metadata": {"name": "m-canary", "namespace": "ns"}, "spec": {"rules": []}})
    got = kube.ingress("ns", "m-canary")
    assert got is not None and got["metadata"]["resourceVersion"] == "30" and got["spec"] == {"rules": []}
    assert net.calls == ["patch False"]


def test_a_deleted_pod_leaves_no_record() -> None:
    """Pods are read only by listing: a DELETED event forgets the pod, it is not kept as known absent."""
    cache = WatchCache(listed_only=frozenset({"pods"}))
    cache.saw(("pods", "ns", "a"), {"metadata": {"name": "a", "resourceVersion": "1"}})
    cache.saw(("pods", "ns", "a"), {"metadata": {"name": "a", "resourceVersion": "2"}}, deleted=True)
    assert not cache.has(("pods", "ns", "a")) and cache.listed("pods", "ns") == []
    cache.saw(("deployments", "ns", "d"), {"metadata": {"name": "d", "resourceVersion": "1"}}, deleted=True)
    assert cache.has(("deployments", "ns", "d")), "a Deployment's absence is kept"
    assert Kube(None).watched.listed("pods", "ns") == []


def test_the_label_scoped_kinds_are_selected_on_the_server() -> None:
    """The operator's startup asks the apiserver for only the labelled pods, ConfigMaps, DaemonSets, Deployments
    and EndpointSlices; Services, Ingresses and rollouts are watched whole."""
    import asyncio

    import kopf
    from kopf._cogs.structs.references import Resource

    from modelrollout.engine import Engine
    from modelrollout.handlers import startup
    settings, memo = kopf.OperatorSettings(), kopf.Memo()
    memo.engine = Engine(Kube(None))  # no connection to make

    async def run() -> None:
        await startup(settings=settings, memo=memo)
    asyncio.run(run())

    def selector(group: str, plural: str) -> list[str]:
        return list(settings.watching.label_selectors.collect(Resource(group=group, version="v1", plural=plural)))
    for group, plural in [("", "pods"), ("", "configmaps"), ("apps", "daemonsets"), ("apps", "deployments")]:
        assert selector(group, plural) == ["modelrollout.io/rollout"], plural
    assert selector("discovery.k8s.io", "endpointslices") == ["modelrollout.io/rollout,modelrollout.io/track=canary"]
    for group, plural in [("", "services"), ("networking.k8s.io", "ingresses"), ("modelrollout.io", "modelrollouts")]:
        assert selector(group, plural) == [], plural


def _labelled(name: str, rv: str, rollout: str | None) -> dict[str, object]:
    labels = {} if rollout is None else {"modelrollout.io/rollout": rollout}
    return {"metadata": {"name": name, "resourceVersion": rv, "labels": labels}}


def test_a_group_listing_holds_exactly_that_rollouts_objects_as_their_labels_change() -> None:
    """listed(plural, ns, group) answers from an index by the rollout label: the same answer as filtering the
    whole namespace, through label changes, own writes, reads, deletes and forgotten pods."""
    cache = WatchCache(listed_only=frozenset({"pods"}), group_label="modelrollout.io/rollout")

    def by_filter(plural: str, group: str) -> list[str]:
        return [b["metadata"]["name"] for b in cache.listed(plural, "ns")
                if b["metadata"]["labels"].get("modelrollout.io/rollout") == group]

    def names(plural: str, group: str) -> list[str]:
        got = [b["metadata"]["name"] for b in cache.listed(plural, "ns", group)]
        assert got == by_filter(plural, group)
        return got

    for i in range(5):
        cache.saw(("deployments", "ns", f"a-{i}"), _labelled(f"a-{i}", "1", "a"))
        cache.saw(("deployments", "ns", f"b-{i}"), _labelled(f"b-{i}", "1", "b"))
    assert names("deployments", "a") == [f"a-{i}" for i in range(5)]
    cache.saw(("deployments", "ns", "a-0"), _labelled("a-0", "2", "b"))  # relabelled: moves to b
    cache.saw(("deployments", "ns", "a-1"), _labelled("a-1", "2", None))  # unlabelled: in no group
    assert names("deployments", "a") == ["a-2", "a-3", "a-4"]
    assert names("deployments", "b") == ["a-0"] + [f"b-{i}" for i in range(5)]
    cache.wrote(("deployments", "ns", "c-0"), "3", _labelled("c-0", "3", "c"), 0)  # an own create, no echo yet
    assert names("deployments", "c") == ["c-0"]
    cache.removed(("deployments", "ns", "a-2"))
    cache.saw(("deployments", "ns", "a-3"), _labelled("a-3", "2", "a"), deleted=True)
    assert names("deployments", "a") == ["a-4"]
    cache.read(("deployments", "ns", "a-9"), lambda: _labelled("a-9", "5", "a"))  # a GET's answer
    assert names("deployments", "a") == ["a-4"], "a GET of an unwatched name is not a watched listing"
    cache.saw(("pods", "ns", "p"), _labelled("p", "1", "a"))
    cache.saw(("pods", "ns", "p"), _labelled("p", "2", "a"), deleted=True)
    assert names("pods", "a") == [] and ("pods", "ns", "a") not in cache._groups
    assert names("deployments", "zzz") == []
    with pytest.raises(ValueError):
        WatchCache().listed("deployments", "ns", "a")


def test_a_kind_listed_in_full_is_not_asked_for_by_a_name_its_watch_never_showed() -> None:
    cache = WatchCache()
    gets: list[str] = []

    def get(name: str) -> Callable[[], dict[str, object] | None]:
        def call() -> dict[str, object] | None:
            gets.append(name)
            return None
        return call
    assert cache.read(("deployments", "ns", "a"), get("a")) is None and gets == ["a"], "not listed in full: a GET"
    cache.listed_in_full("deployments")
    assert cache.read(("deployments", "ns", "b"), get("b")) is None and gets == ["a"], "listed in full: absent"
    cache.saw(("deployments", "ns", "c"), _labelled("c", "1", "x"))
    assert cache.read(("deployments", "ns", "c"), get("c")) == _labelled("c", "1", "x") and gets == ["a"]
    cache.wrote(("deployments", "ns", "d"), "2")  # an own create not yet echoed, without an answer: ask
    assert cache.read(("deployments", "ns", "d"), get("d")) is None and gets == ["a", "d"]
    assert cache.read(("deployments", "ns", "e"), get("e"), absence=False) is None and gets == ["a", "d", "e"]
    assert cache.read(("services", "ns", "f"), get("f")) is None and gets == ["a", "d", "e", "f"], "another kind"


def test_the_operator_keeps_no_diff_base_and_lists_its_deployments_before_any_handler_runs() -> None:
    """kopf gates every handler and daemon behind its indexed watches' initial listing: the operator's Deployments
    are fed to the cache by an index, so the port may treat a name the watch never showed as absent."""
    import asyncio

    import kopf

    from modelrollout.engine import Engine
    from modelrollout.handlers import NoDiffBase, startup
    settings, memo = kopf.OperatorSettings(), kopf.Memo()
    memo.engine = Engine(Kube(None))

    async def run() -> None:
        await startup(settings=settings, memo=memo)
    asyncio.run(run())
    assert isinstance(settings.persistence.diffbase_storage, NoDiffBase)
    assert settings.persistence.diffbase_storage.fetch(body=kopf.Body({})) is None
    assert memo.engine.kube.watched.read(("deployments", "ns", "never-shown"), lambda: pytest.fail("a GET")) is None
    registry = kopf.get_default_registry()
    indexes = [h for h in registry._indexing.get_all_handlers() if h.fn.__name__ == "deployment_listed"]
    assert len(indexes) == 1 and indexes[0].labels == {"modelrollout.io/rollout": kopf.PRESENT}
    # a change handler would need the diff base the operator no longer keeps
    assert not registry._changing.get_all_handlers()
