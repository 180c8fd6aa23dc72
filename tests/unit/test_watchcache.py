"""The watch cache trusts a watched body only when it is at least as new as the operator's own writes."""

from __future__ import annotations

from typing import Any

import pytest

from modelrollout.core.approval import annotation_managers
from modelrollout.kube import Kube
from modelrollout.watchcache import ABSENT_MAX, PENDING_TTL, WatchCache, rollout_trimmer, trim_deployment
from modelrollout.workloads import track_state

KEY = ("deployments", "ns", "m-canary")


def body(rv: str, ready: int = 0) -> dict[str, Any]:
    return {"metadata": {"name": "m-canary", "resourceVersion": rv, "managedFields": [{"manager": "x"}]},
            "spec": {"replicas": 1, "template": {"spec": {"containers": [{"image": "i"}]}}},
            "status": {"readyReplicas": ready}}


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class Api:
    """Stands in for the apiserver: counts GETs, answers with its current body."""

    def __init__(self, current: dict[str, Any] | None) -> None:
        self.current, self.gets = current, 0

    def get(self) -> dict[str, Any] | None:
        self.gets += 1
        return self.current


def test_an_object_never_watched_is_read_from_the_api() -> None:
    cache, api = WatchCache(), Api(body("5"))
    assert cache.read(KEY, api.get) == body("5") and api.gets == 1


def test_a_watched_object_is_read_from_memory() -> None:
    cache, api = WatchCache(), Api(body("5"))
    cache.saw(KEY, body("5", ready=1))
    assert cache.read(KEY, api.get) == body("5", ready=1) and api.gets == 0


def test_after_an_own_write_the_api_is_read_until_the_watch_delivers_its_echo() -> None:
    cache, api = WatchCache(), Api(body("7", ready=1))
    cache.saw(KEY, body("5"))
    cache.wrote(KEY, "7")
    cache.saw(KEY, body("6"))  # older than the write: the watch has not caught up
    assert cache.read(KEY, api.get) == body("7", ready=1) and api.gets == 1
    cache.saw(KEY, body("7", ready=1))  # the echo
    cache.saw(KEY, body("8", ready=2))  # newer than the write
    assert cache.read(KEY, api.get) == body("8", ready=2) and api.gets == 1


def test_an_echo_that_arrives_before_the_write_is_recorded_leaves_nothing_pending() -> None:
    cache, api = WatchCache(), Api(body("9"))
    cache.saw(KEY, body("7"))
    cache.wrote(KEY, "7")
    assert cache.read(KEY, api.get) == body("7") and api.gets == 0


def test_a_folded_echo_is_confirmed_by_a_get_with_the_watched_version() -> None:
    # kopf may deliver only the last event of a burst: the echo (7) never comes, 8 does
    cache, api = WatchCache(), Api(body("8", ready=1))
    cache.saw(KEY, body("5"))
    cache.wrote(KEY, "7")
    cache.saw(KEY, body("8", ready=1))
    assert cache.read(KEY, api.get) == body("8", ready=1) and api.gets == 1  # not yet trusted: one GET
    assert cache.read(KEY, api.get) == body("8", ready=1) and api.gets == 1  # the GET matched: trusted again


def test_an_unconfirmed_write_forgets_the_kept_body_after_the_ttl() -> None:
    clock = Clock()
    cache, api = WatchCache(clock=clock), Api(body("9"))
    cache.saw(KEY, body("5"))
    cache.wrote(KEY, "7")
    clock.t = PENDING_TTL + 1
    assert cache.fresh(KEY) is None and len(cache) == 0  # nothing stale is ever trusted
    assert cache.read(KEY, api.get) == body("9") and api.gets == 1


def test_an_object_the_watch_saw_deleted_is_known_absent_until_it_is_seen_again() -> None:
    cache, api = WatchCache(), Api(body("9"))
    cache.saw(KEY, body("5"))
    cache.saw(KEY, body("5"), deleted=True)
    assert cache.read(KEY, api.get) is None and api.gets == 0
    cache.saw(KEY, body("9"))  # made again (ADDED)
    assert cache.read(KEY, api.get) == body("9") and api.gets == 0


def test_a_get_answering_404_makes_the_object_known_absent_until_the_operator_writes_it() -> None:
    cache, api = WatchCache(), Api(None)
    assert cache.read(KEY, api.get) is None and api.gets == 1
    assert cache.read(KEY, api.get) is None and api.gets == 1  # no second GET
    api.current = body("7")
    cache.wrote(KEY, "7")  # the operator created it: read the API until the echo
    assert cache.read(KEY, api.get) == body("7") and api.gets == 2


def test_a_get_answering_404_after_the_watch_showed_the_object_leaves_it_present() -> None:
    # the GET was sent before the object was made, the ADDED event was handled before its answer
    cache = WatchCache()

    def get() -> None:
        cache.saw(KEY, body("3"))
        return None
    assert cache.read(KEY, get) is None
    assert cache.fresh(KEY) == body("3")


def test_a_deleted_event_while_an_own_write_is_unconfirmed_leaves_the_key_to_the_api() -> None:
    # deleted, then created again by the operator: the DELETED event of the old object arrives after the create
    cache, api = WatchCache(), Api(body("12"))
    cache.saw(KEY, body("5"))
    cache.wrote(KEY, "12")
    cache.saw(KEY, body("5"), deleted=True)
    assert cache.read(KEY, api.get) == body("12") and api.gets == 1


def test_after_an_own_delete_older_events_are_ignored_until_the_deleted_echo() -> None:
    clock = Clock()
    cache, api = WatchCache(clock=clock), Api(None)
    cache.saw(KEY, body("5"))
    cache.removed(KEY)
    cache.saw(KEY, body("6"))  # a change from before the delete, delivered late
    assert cache.read(KEY, api.get) is None and api.gets == 0
    cache.saw(KEY, {}, deleted=True)  # the echo
    cache.saw(KEY, body("8"))  # made again by someone: seen
    assert cache.read(KEY, api.get) == body("8") and api.gets == 0
    # an echo folded away: after PENDING_TTL events count again
    cache.removed(KEY)
    clock.t = PENDING_TTL + 1
    cache.saw(KEY, body("9"))
    assert cache.read(KEY, api.get) == body("9") and api.gets == 0


def test_an_own_write_after_an_own_delete_is_read_from_the_api_until_its_echo() -> None:
    cache, api = WatchCache(), Api(body("11"))
    cache.saw(KEY, body("5"))
    cache.removed(KEY)
    cache.wrote(KEY, "11")  # created again before the DELETED echo
    assert cache.read(KEY, api.get) == body("11") and api.gets == 1
    cache.saw(KEY, {}, deleted=True)  # the late echo of the delete proves nothing about the new object
    assert cache.read(KEY, api.get) == body("11") and api.gets == 2
    cache.saw(KEY, body("11"))
    assert cache.read(KEY, api.get) == body("11") and api.gets == 2


def test_known_absent_keys_are_bounded() -> None:
    cache, api = WatchCache(), Api(None)
    for i in range(ABSENT_MAX + 1):
        cache.saw(("ingresses", "ns", f"r{i}"), {}, deleted=True)
    assert cache.read(("ingresses", "ns", "r0"), api.get) is None and api.gets == 1  # forgotten: asked again
    assert cache.read(("ingresses", "ns", f"r{ABSENT_MAX}"), api.get) is None and api.gets == 1


def test_the_kept_body_is_a_copy_a_later_change_of_the_event_does_not_reach() -> None:
    cache, event = WatchCache(), body("5")
    cache.saw(KEY, event)
    event["status"]["readyReplicas"] = 3
    kept = cache.fresh(KEY)
    assert kept is not None and kept["status"]["readyReplicas"] == 0


def test_a_deployment_is_kept_without_what_no_reconcile_reads() -> None:
    kept = trim_deployment(body("5", ready=1))
    assert "managedFields" not in kept["metadata"]
    assert kept["status"] == {"readyReplicas": 1} and kept["spec"]["replicas"] == 1
    assert kept["spec"]["template"]["spec"]["containers"] == [{"image": "i"}]


def test_a_deployment_trimmed_tells_the_same_track_state() -> None:
    dep = body("5", ready=1)
    dep["metadata"]["annotations"] = {"modelrollout.io/revision": "abc"}
    dep["spec"]["template"]["spec"] = {"initContainers": [{"name": "w", "image": "w:1", "env": [{"name": "A"}]}],
                                       "containers": [{"name": "m", "image": "m:2", "args": ["--x"]}]}
    assert track_state(trim_deployment(dep)) == track_state(dep)


def test_a_rollout_is_kept_with_only_who_set_the_control_annotations() -> None:
    approve = "modelrollout.io/approve"
    rollout = {
        "metadata": {"name": "m", "annotations": {approve: "t"}, "managedFields": [
            {"manager": "kubectl-annotate", "operation": "Update",
             "fieldsV1": {"f:metadata": {"f:annotations": {f"f:{approve}": {}, "f:other": {}}}}},
            {"manager": "modelrollout", "subresource": "status",
             "fieldsV1": {"f:status": {"f:phase": {}, "f:history": {}}}},
        ]},
        "spec": {"replicas": 2}, "status": {"phase": "Paused"},
    }
    kept = rollout_trimmer(annotation_managers)(rollout)
    assert annotation_managers(kept["metadata"]["managedFields"]) == \
        annotation_managers(rollout["metadata"]["managedFields"]) == {approve: "kubectl-annotate"}
    assert len(kept["metadata"]["managedFields"]) == 1
    assert kept["spec"] == rollout["spec"] and kept["status"] == rollout["status"]
    kept["spec"]["replicas"] = 3
    assert rollout["spec"]["replicas"] == 2  # a copy


class FakeApps:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.model = False

    def patch_namespaced_deployment(self, name: str, namespace: str, body: Any, **kw: Any) -> Any:
        self.calls.append("patch")
        return Model("11") if self.model else body_rv("11")

    def read_namespaced_deployment(self, name: str, namespace: str, **kw: Any) -> dict[str, Any]:
        self.calls.append("read")
        return body_rv("11")

    def patch_namespaced_daemon_set(self, name: str, namespace: str, body: Any, **kw: Any) -> Any:
        self.calls.append("patch ds")
        return body_rv("11")


class FakeCustom:
    def __init__(self) -> None:
        self.rv = 20

    def _answer(self) -> dict[str, Any]:
        self.rv += 1
        return body_rv(str(self.rv))

    def patch_namespaced_custom_object_status(self, *args: Any, **kw: Any) -> dict[str, Any]:
        return self._answer()

    def patch_namespaced_custom_object(self, *args: Any, **kw: Any) -> dict[str, Any]:
        return self._answer()


def body_rv(rv: str) -> dict[str, Any]:
    return {"metadata": {"resourceVersion": rv}}


class Model:
    """A client model answer (attributes, not a dict), as the typed API groups return."""

    def __init__(self, rv: str) -> None:
        self.metadata = type("Meta", (), {"resource_version": rv})()


DEPLOYMENT = {"metadata": {"name": "m-canary", "namespace": "ns"}}


@pytest.mark.parametrize("write", [
    lambda kube: kube.apply_deployment(DEPLOYMENT),
    lambda kube: kube.scale_deployment("ns", "m-canary", 2),
    lambda kube: kube.scale_deployment("ns", "m-canary", 2, annotations={"a": None}),
])
def test_deployment_writes_are_keyed_by_the_object_they_change(write: Any) -> None:
    kube = Kube(None, apps=FakeApps(), watched=WatchCache())
    kube.saw(KEY, body("10"))
    write(kube)
    assert kube.watched.fresh(KEY) == body_rv("11")


def test_writes_of_unwatched_kinds_and_dry_runs_leave_the_watched_objects_alone() -> None:
    kube = Kube(None, apps=FakeApps(), watched=WatchCache())
    kube.saw(KEY, body("10"))
    kube.apply_daemon_set({"metadata": {"name": "m-canary", "namespace": "ns"}})
    kube.refused_deployment(DEPLOYMENT)
    assert kube.watched.fresh(KEY) == body("10")


def test_rollout_status_and_annotation_writes_are_quiet_echoes_and_spec_writes_are_not() -> None:
    kube = Kube(None, custom=FakeCustom(), watched=WatchCache())
    assert kube.patch_rollout_status("ns", "m", {"phase": "Paused"}) == "21"
    assert kube.consume_annotation("ns", "m", "modelrollout.io/approve", "t") == "22"
    kube.patch_rollout("ns", "m", [{"op": "add", "path": "/spec/template", "value": {}}])
    assert kube.quiet_echo("ns", "m", "21") and kube.quiet_echo("ns", "m", "22")
    assert not kube.quiet_echo("ns", "m", "23") and not kube.quiet_echo("ns", "other", "21")
    assert kube.watched.fresh(("modelrollouts", "ns", "m")) == body_rv("23")  # the answer, read until the echo


def test_a_port_write_reports_its_version_and_passes_reads_and_dry_runs_through() -> None:
    apps = FakeApps()
    kube = Kube(None, apps=apps, watched=WatchCache())
    kube.saw(KEY, body("10"))
    kube.refused_deployment(DEPLOYMENT)
    assert kube.watched.fresh(KEY) is not None  # a dry run writes nothing
    kube.scale_deployment("ns", "m-canary", 1)
    assert kube.watched.fresh(KEY) == body_rv("11")  # a dict answer is the object as written: read until the echo
    apps.model = True
    kube.scale_deployment("ns", "m-canary", 1)
    assert kube.watched.fresh(KEY) is None  # a model answer is not kept: the API is read until the echo of 11
    kube.deployment("ns", "m-canary")
    assert apps.calls == ["patch", "patch", "patch", "read"]
    kube.saw(KEY, body("11"))
    assert kube.watched.fresh(KEY) == body("11")


def test_until_the_echo_the_answer_to_the_own_write_is_read_instead_of_the_api() -> None:
    cache, api = WatchCache(), Api(body("9"))
    cache.saw(KEY, body("5"))
    cache.wrote(KEY, "7", body("7", ready=1), cache.events(KEY))
    assert cache.read(KEY, api.get) == body("7", ready=1) and api.gets == 0
    cache.saw(KEY, body("6"))  # not an own write's echo: another writer's change, maybe newer than 7
    assert cache.read(KEY, api.get) == body("9") and api.gets == 1
    assert cache.read(KEY, api.get) == body("9") and api.gets == 1  # the GET's answer is newer than both
    cache.saw(KEY, body("7", ready=1))  # the echo: the watch is trusted again
    cache.saw(KEY, body("8", ready=2))
    assert cache.read(KEY, api.get) == body("8", ready=2) and api.gets == 1


def test_late_echoes_of_earlier_own_writes_leave_the_answer_trusted() -> None:
    cache, api = WatchCache(), Api(body("9"))
    cache.saw(KEY, body("3"))
    cache.wrote(KEY, "5", body("5"), cache.events(KEY))
    cache.wrote(KEY, "7", body("7"), cache.events(KEY))
    cache.saw(KEY, body("5"))  # the watch lags: the echo of the write before
    assert cache.read(KEY, api.get) == body("7") and api.gets == 0


def test_an_event_that_arrives_while_the_write_is_in_flight_distrusts_the_answer() -> None:
    cache, api = WatchCache(), Api(body("9"))
    cache.saw(KEY, body("5"))
    before = cache.events(KEY)
    cache.saw(KEY, body("8"))  # another writer, maybe after the write: the answer could be older than this
    cache.wrote(KEY, "7", body("7"), before)
    assert cache.read(KEY, api.get) == body("9") and api.gets == 1


def test_a_get_answer_is_not_kept_when_an_event_arrived_while_it_was_in_flight() -> None:
    cache = WatchCache()
    cache.saw(KEY, body("5"))
    cache.wrote(KEY, "7")  # no answer kept: read the API
    gets = 0

    def get() -> dict[str, Any]:
        nonlocal gets
        gets += 1
        cache.saw(KEY, body("8"))  # arrives while the GET is on its way
        return body("7")
    assert cache.read(KEY, get) == body("7")
    assert cache.read(KEY, get) == body("7") and gets == 2  # not adopted: the event may be newer


SERVICE = {"metadata": {"name": "m", "namespace": "ns", "resourceVersion": "5", "uid": "u", "labels": {"a": "b"},
                        "annotations": {"big": "x" * 1000}, "managedFields": [{"manager": "kubectl"}],
                        "ownerReferences": [{"uid": "owner"}]},
           "spec": {"selector": {"app": "m"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
                    "clusterIP": "10.0.0.1", "type": "ClusterIP"},
           "status": {"loadBalancer": {}}}


class FakeCore:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def read_namespaced_service(self, name: str, namespace: str, **kw: Any) -> dict[str, Any]:
        self.calls.append(f"read {name}")
        return {**SERVICE, "metadata": {**SERVICE["metadata"], "name": name, "resourceVersion": "9"}}

    def create_namespaced_service(self, namespace: str, body: Any, **kw: Any) -> Any:
        self.calls.append(f"create {body['metadata']['name']}")
        return Model("10")


def test_services_are_read_from_the_watch_trimmed_to_what_the_port_reads() -> None:
    """A watched Service answers without a GET, and the trimmed copy gives the same ``Service`` as the whole."""
    core = FakeCore()
    kube = Kube(None, core=core)  # the port's own cache, with its trims
    kube.saw(("services", "ns", "m"), SERVICE)
    svc = kube.service("ns", "m")
    assert core.calls == []
    assert svc is not None and svc.selector == {"app": "m"} and svc.owner_uids == ("owner",)
    assert svc.ports == ({"name": "http", "port": 80, "targetPort": 8080},)
    kept = kube.watched.fresh(("services", "ns", "m"))
    assert kept is not None and "annotations" not in kept["metadata"] and "clusterIP" not in kept["spec"]
    assert Kube(None, core=FakeCore(), watched=WatchCache()).service("ns", "m") is not None  # unwatched: a GET


def test_a_created_service_is_read_from_the_api_until_its_echo_and_known_absence_ends() -> None:
    """A Service read as absent and then created by the operator is not answered 'absent' from the cache: reads
    go to the API until the watch brings the version the create made."""
    core = FakeCore()
    kube = Kube(None, core=core, watched=WatchCache())
    key = ("services", "ns", "m-canary")
    kube.saw(key, {**SERVICE, "metadata": {**SERVICE["metadata"], "name": "m-canary"}}, deleted=True)
    assert kube.service("ns", "m-canary") is None and core.calls == []  # known absent, no GET
    kube.create_service({"metadata": {"name": "m-canary", "namespace": "ns"}})
    assert kube.service("ns", "m-canary") is not None
    assert core.calls == ["create m-canary", "read m-canary"]
    kube.saw(key, {**SERVICE, "metadata": {**SERVICE["metadata"], "name": "m-canary", "resourceVersion": "10"}})
    assert kube.service("ns", "m-canary") is not None
    assert core.calls == ["create m-canary", "read m-canary"]  # the echo came: from the watch again


def test_a_users_ingress_is_read_from_the_watch_without_its_managed_fields() -> None:
    """Every Ingress is watched: the user's Ingress the NGINX router copies answers from memory, and a write
    of the operator's own canary Ingress is read from the API until its echo."""
    class FakeNetworking:
        def __init__(self) -> None:
            self.calls: list[str] = []

        def read_namespaced_ingress(self, name: str, namespace: str, **kw: Any) -> dict[str, Any]:
            self.calls.append(f"read {name}")
            return {"metadata": {"name": name, "resourceVersion": "31"}}

        def patch_namespaced_ingress(self, name: str, namespace: str, body: Any, **kw: Any) -> dict[str, Any]:
            self.calls.append(f"patch {name}")
            return {**body, "metadata": {**body["metadata"], "resourceVersion": "30"}}

    net = FakeNetworking()
    kube = Kube(None, networking=net)
    user = {"metadata": {"name": "m", "namespace": "ns", "resourceVersion": "7", "managedFields": [{"m": 1}]},
            "spec": {"rules": [{"host": "h"}]}}
    kube.saw(("ingresses", "ns", "m"), user)
    got = kube.ingress("ns", "m")
    assert got is not None and got["spec"] == {"rules": [{"host": "h"}]} and "managedFields" not in got["metadata"]
    assert net.calls == []
    kube.apply_ingress({"metadata": {"name": "m-canary", "namespace": "ns"}, "spec": {}})
    assert kube.ingress("ns", "m-canary") is not None  # the write's own answer, until the echo
    assert net.calls == ["patch m-canary"]


def test_listed_gives_the_kept_bodies_of_one_kind_in_one_namespace() -> None:
    cache = WatchCache()
    dep = {"metadata": {"name": "m-a", "resourceVersion": "1"}}
    cache.saw(("deployments", "ns", "m-a"), dep)
    cache.saw(("deployments", "ns", "m-b"), {"metadata": {"name": "m-b", "resourceVersion": "2"}})
    cache.saw(("deployments", "other", "m-c"), {"metadata": {"name": "m-c", "resourceVersion": "3"}})
    cache.saw(("services", "ns", "m-a"), {"metadata": {"name": "m-a", "resourceVersion": "4"}})
    assert sorted(b["metadata"]["name"] for b in cache.listed("deployments", "ns")) == ["m-a", "m-b"]
    cache.saw(("deployments", "ns", "m-a"), dep, deleted=True)
    cache.removed(("deployments", "ns", "m-b"))
    assert cache.listed("deployments", "ns") == [] and len(cache.listed("deployments", "other")) == 1
