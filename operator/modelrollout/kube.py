"""The port to the cluster (I/O): the one module that talks to the apiserver.

:class:`Kube` has one method per read and write the operator makes. It owns every fact about the cluster the
operator keeps between requests (:mod:`modelrollout.watchcache`): the bodies its watches deliver, objects known
absent, the echoes of its own writes and time-bounded answers. Each write of a watched kind (rollouts, Deployments,
Services, canary Ingresses, DaemonSets, ConfigMaps) records the version it made in the method that makes it, so a
read after it is never answered from a body older than the write. Listings (ConfigMaps, pods) are answered from
the watches of the objects with the operator's rollout label, matched against equality selectors. Reads answer
plain JSON-shaped dicts (camelCase keys, as the apiserver sent them) or the port's own dataclasses; nothing outside
this module sees a client model or imports ``kubernetes``.
:class:`Leases` is the leader election's door (its own connection pool); :class:`Rollouts` is the door of the
tools that act with the user's kubeconfig (the kubectl plugin, the dashboard).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypedDict, TypeVar

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from modelrollout import api
from modelrollout.core.approval import annotation_managers
from modelrollout.watchcache import (
    Key,
    Recent,
    WatchCache,
    rollout_trimmer,
    trim_deployment,
    trim_object,
    trim_pod,
    trim_service,
)

FIELD_MANAGER = "modelrollout"
LABEL_ROLLOUT = "modelrollout.io/rollout"
LABEL_TRACK = "modelrollout.io/track"
LABEL_REVISION = "modelrollout.io/revision"
ANNOTATION_REVISION = "modelrollout.io/revision"
ANNOTATION_WEIGHT = "modelrollout.io/weight"
MANAGED_BY = {"app.kubernetes.io/managed-by": "modelrollout"}

Body = dict[str, Any]

ApiError = ApiException
"""A failure answer of the apiserver (``status``, ``reason``, ``body``, ``headers``)."""

REJECTED = frozenset({400, 413, 422})
"""Answers to a server-side dry run that mean the object itself is refused (bad request, too large, invalid)."""

DEPLOYMENTS = "deployments"
INGRESSES = "ingresses"
SERVICES = "services"
ENDPOINT_SLICES = "endpointslices"
CONFIG_MAPS = "configmaps"
DAEMON_SETS = "daemonsets"
PODS = "pods"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"

T = TypeVar("T")


class JsonPatchOp(TypedDict, total=False):
    """One operation of a JSON patch (RFC 6902)."""

    op: str
    path: str
    value: Any


@dataclass(frozen=True)
class CustomKind:
    """A custom resource the operator reads or writes: group, version and plural."""

    group: str
    version: str
    plural: str


@dataclass(frozen=True)
class Service:
    """What the operator reads of a Service."""

    name: str
    selector: Mapping[str, str]
    owner_uids: tuple[str, ...]
    ports: tuple[Body, ...]
    """``spec.ports`` as JSON (camelCase keys)."""


WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class FencedClient(client.ApiClient):
    """An API client that calls ``fence`` before every request with a write verb: a leader whose Lease may have
    passed to another replica (``leader.LeaderElector.fence``) ends instead of writing. Reads go through."""

    def __init__(self, configuration: client.Configuration, fence: Callable[[], None]) -> None:
        super().__init__(configuration)
        self.fence = fence

    def call_api(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if method.upper() in WRITE_METHODS:
            self.fence()
        return super().call_api(method, *args, **kwargs)


def _connect(kubeconfig: str | None = None, fence: Callable[[], None] | None = None) -> client.ApiClient:
    """In-cluster config when running in a pod, else the kubeconfig (KUBECONFIG or ~/.kube/config); with
    ``fence``, every write asks it first (:class:`FencedClient`)."""
    cfg = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)  # type: ignore[no-untyped-call]
    cfg.connection_pool_maxsize = 64
    return client.ApiClient(cfg) if fence is None else FencedClient(cfg, fence)


class Kube:
    """The operator's reads and writes of the cluster, and what it knows of the cluster between them."""

    def __init__(self, api_client: client.ApiClient, *, apps: client.AppsV1Api | None = None,
                 core: client.CoreV1Api | None = None, networking: client.NetworkingV1Api | None = None,
                 custom: client.CustomObjectsApi | None = None, watched: WatchCache | None = None,
                 recent: Recent | None = None) -> None:
        # The client groups are held untyped: the operator sends JSON bodies (dicts, JSON patches), which the
        # client accepts but its annotations (model classes only) do not declare.
        self._client: Any = api_client
        self._apps: Any = apps if apps is not None else client.AppsV1Api(api_client)
        self._core: Any = core if core is not None else client.CoreV1Api(api_client)
        self._networking: Any = networking if networking is not None else client.NetworkingV1Api(api_client)
        self._custom: Any = custom if custom is not None else client.CustomObjectsApi(api_client)
        self.watched = watched if watched is not None else WatchCache(trim={
            DEPLOYMENTS: trim_deployment, INGRESSES: trim_object, SERVICES: trim_service,
            CONFIG_MAPS: trim_object, DAEMON_SETS: trim_object, PODS: trim_pod,
            api.PLURAL: rollout_trimmer(annotation_managers)}, listed_only=frozenset({PODS}), group_label=LABEL_ROLLOUT)
        """The watched objects (fed by the kopf handlers through :meth:`saw`): rollouts, every Service and
        Ingress, and the Deployments, DaemonSets, ConfigMaps and pods that carry the operator's rollout label;
        their known absence and the echoes of the operator's own writes."""
        self.recent = recent if recent is not None else Recent()
        """Time-bounded answers about rollouts (a passing check, a pod listing's reason, an absent DaemonSet)."""
        self._listed: dict[str, frozenset[str]] = {}
        """namespace -> the names of the DaemonSets with the operator's label one LIST found there (see
        :meth:`daemon_set`)."""
        self._slices: dict[tuple[str, str], dict[str, frozenset[str]]] = {}
        """(namespace, Service) -> EndpointSlice name -> its ready endpoints: the per-track Services' slices (fed
        by a watch of the slices that carry the operator's label, which they copy from their Service)."""

    @classmethod
    def connect(cls, kubeconfig: str | None = None, *, fence: Callable[[], None] | None = None) -> Kube:
        """``fence``: called before every write (a leader's check that it still holds the Lease)."""
        return cls(_connect(kubeconfig, fence))

    # ------------------------------------------------------------------ watch events and own-write echoes

    def saw(self, key: Key, body: Mapping[str, Any], *, deleted: bool = False) -> None:
        """A watch event of a watched kind (``key``: plural, namespace, name)."""
        if key[0] == ENDPOINT_SLICES:
            self._saw_slice(key, body, deleted)
            return
        self.watched.saw(key, body, deleted=deleted)

    def _saw_slice(self, key: Key, body: Mapping[str, Any], deleted: bool) -> None:
        _, namespace, name = key
        service = ((body.get("metadata") or {}).get("labels") or {}).get(SERVICE_NAME_LABEL)
        if not service:
            return
        slices = self._slices.setdefault((namespace, service), {})
        if deleted:
            slices.pop(name, None)
            if not slices:
                del self._slices[(namespace, service)]
            return
        slices[name] = ready_endpoints(body)

    def ready_endpoints_of(self, namespace: str, service: str | None) -> frozenset[str] | None:
        """The ready endpoints the Service's EndpointSlices list (pods by name), None when no slice was seen."""
        slices = self._slices.get((namespace, service or ""))
        return None if slices is None else frozenset().union(*slices.values())

    def serving(self, namespace: str, service: str, pods: str = "") -> int | None:
        """How many ready endpoints the Service's EndpointSlices list (a watch of the operator's labelled slices),
        counting only pods whose name starts with ``pods`` (a Deployment's pods: ``NAME-``); None when no slice of
        it has been seen."""
        ready = self.ready_endpoints_of(namespace, service)
        return None if ready is None else sum(1 for endpoint in ready if endpoint.startswith(pods))

    def quiet_echo(self, namespace: str, name: str, resource_version: str | None) -> bool:
        """A rollout's watch event is the echo of one of the operator's own last status or annotation writes
        (nothing changed that the operator does not know)."""
        return self.watched.quiet_echo((api.PLURAL, namespace, name), resource_version)

    def _read(self, key: Key, call: Callable[[], object], *, absence: bool = True) -> Body | None:
        """The watch's copy of ``key`` when it is current, else ``call()`` (a GET; None on 404) as a dict.
        ``absence``: :meth:`WatchCache.read`'s."""
        def get() -> Body | None:
            obj = optional(call)
            return None if obj is None else self._body(obj)
        return self.watched.read(key, get, absence=absence)

    def _wrote(self, key: Key, call: Callable[[], T], *, quiet: bool = False) -> T:
        """Make the write ``call()`` to ``key`` and record the version it made and, for a plain dict answer or a raw
        one (``_preload_content=False``, parsed here), the object as written, read until the echo instead of a
        GET; a client model would cost a conversion per write, so those are read with a GET until the echo."""
        before = self.watched.events(key)
        out = call()
        raw = getattr(out, "data", None) if not isinstance(out, dict) else None
        if isinstance(out, dict) or isinstance(raw, bytes | str):
            answer: Body | None = out if isinstance(out, dict) else self._body(out)
            rv = ((answer or {}).get("metadata") or {}).get("resourceVersion")
        else:
            rv = getattr(getattr(out, "metadata", None), "resource_version", None)
            answer = None
        self.watched.wrote(key, None if rv is None else str(rv), answer, before, quiet=quiet)
        return out

    def _deleted(self, key: Key, call: Callable[[], object]) -> None:
        """Make the delete ``call()`` of ``key`` (gone already: nothing to do); a delete made is recorded."""
        try:
            call()
        except ApiException as exc:
            if exc.status == 404:
                return
            raise
        self.watched.removed(key)

    def _body(self, obj: object) -> Body:
        """An answer as the plain dict the apiserver sent (camelCase keys): a read made with
        ``_preload_content=False`` is parsed from its JSON as is (no client model built and converted back); a
        client model (a write's answer) is converted."""
        if isinstance(obj, dict):
            return obj
        data = getattr(obj, "data", None)
        if isinstance(data, bytes | str):
            return _json(data)
        out = self._client.sanitize_for_serialization(obj)
        assert isinstance(out, dict)
        return out

    def _apply(self, method: Callable[..., object], body: Body, *, watched: str | None = None,
               dry_run: bool = False) -> None:
        """Server-side apply with the operator's field manager (force: the operator owns these objects); a write
        of a ``watched`` kind (its plural) records its echo."""
        meta = body["metadata"]
        extra = {"dry_run": "All"} if dry_run else {}

        def call(**raw: bool) -> object:
            return method(meta["name"], meta["namespace"], body=body, field_manager=FIELD_MANAGER, force=True,
                          _content_type="application/apply-patch+yaml", **extra, **raw)
        if watched is None or dry_run:
            call()
        else:
            self._wrote((watched, meta["namespace"], meta["name"]), lambda: call(_preload_content=False))

    def _refused(self, method: Callable[..., object], body: Body) -> str | None:
        """The apiserver's message if it would refuse :meth:`_apply` of ``body`` (a server-side dry run: validated,
        nothing stored), else None. Other failures are raised."""
        try:
            self._apply(method, body, dry_run=True)
        except ApiException as exc:
            message = api_message(exc)
            if exc.status in REJECTED or (exc.status == 500 and "typed" in message):  # 500: a field of a wrong type
                return message
            raise
        return None

    # ------------------------------------------------------------------ ModelRollouts

    def rollout(self, namespace: str, name: str) -> Body | None:
        return self._read((api.PLURAL, namespace, name), lambda: self._custom.get_namespaced_custom_object(
            api.GROUP, api.VERSION, namespace, api.PLURAL, name))

    def patch_rollout_status(self, namespace: str, name: str, status: Body) -> str:
        """Merge ``status`` into the rollout's status; the resourceVersion written."""
        out = self._wrote((api.PLURAL, namespace, name), lambda: self._custom.patch_namespaced_custom_object_status(
            api.GROUP, api.VERSION, namespace, api.PLURAL, name, {"status": status}), quiet=True)
        assert isinstance(out, dict)
        return str(out["metadata"]["resourceVersion"])

    def consume_annotation(self, namespace: str, name: str, key: str, seen: str) -> str | None:
        """Remove annotation ``key`` only if it still has the value the decision was made on; the resourceVersion
        written, or None when it was not removed.

        A JSON patch ``test`` op guards the removal, so a newer value a person set meanwhile is kept.
        """
        path = "/metadata/annotations/" + key.replace("~", "~0").replace("/", "~1")
        try:
            out = self._wrote((api.PLURAL, namespace, name), lambda: self._custom.patch_namespaced_custom_object(
                api.GROUP, api.VERSION, namespace, api.PLURAL, name,
                [{"op": "test", "path": path, "value": seen}, {"op": "remove", "path": path}],
                _content_type="application/json-patch+json"), quiet=True)
        except ApiException as exc:
            if exc.status in (404, 409, 422):
                return None
            raise
        return str(out["metadata"]["resourceVersion"]) if isinstance(out, dict) else None

    def patch_rollout(self, namespace: str, name: str, ops: list[JsonPatchOp]) -> None:
        """A JSON patch of the rollout (its spec: a change the reconciler reacts to)."""
        self._wrote((api.PLURAL, namespace, name), lambda: self._custom.patch_namespaced_custom_object(
            api.GROUP, api.VERSION, namespace, api.PLURAL, name, ops, _content_type="application/json-patch+json"))

    # ------------------------------------------------------------------ Deployments (the operator's, watched)

    def deployment(self, namespace: str, name: str) -> Body | None:
        return self._read((DEPLOYMENTS, namespace, name),
                          lambda: self._apps.read_namespaced_deployment(name, namespace, _preload_content=False))

    def apply_deployment(self, body: Body) -> None:
        self._apply(self._apps.patch_namespaced_deployment, body, watched=DEPLOYMENTS)

    def refused_deployment(self, body: Body) -> str | None:
        """Why the apiserver would refuse :meth:`apply_deployment` of ``body``, or None."""
        return self._refused(self._apps.patch_namespaced_deployment, body)

    def scale_deployment(self, namespace: str, name: str, replicas: int, *,
                         annotations: Mapping[str, str | None] | None = None, missing_ok: bool = False) -> None:
        """Set the replicas (and, in the same patch, ``annotations``; None removes one). ``missing_ok``: a
        Deployment that does not exist is left so."""
        patch: Body = {"spec": {"replicas": replicas}}
        if annotations is not None:
            patch = {"metadata": {"annotations": dict(annotations)}, **patch}
        try:
            self._wrote((DEPLOYMENTS, namespace, name),
                        lambda: self._apps.patch_namespaced_deployment(name, namespace, patch,
                                                                       _preload_content=False))
        except ApiException as exc:
            if not (missing_ok and exc.status == 404):
                raise

    def delete_deployment(self, namespace: str, name: str) -> None:
        """Delete a Deployment the operator owns (gone already: nothing to do)."""
        self._deleted((DEPLOYMENTS, namespace, name),
                      lambda: self._apps.delete_namespaced_deployment(name, namespace))

    def deployments_of(self, namespace: str, rollout: str) -> list[Body]:
        """The Deployments of one rollout (label ``modelrollout.io/rollout``) the watch shows."""
        return self.watched.listed(DEPLOYMENTS, namespace, rollout)

    # ------------------------------------------------------------------ Ingresses

    def ingress(self, namespace: str, name: str) -> Body | None:
        """An Ingress, a user's or the operator's own (watched: every Ingress, without its managedFields)."""
        return self._read((INGRESSES, namespace, name),
                          lambda: self._networking.read_namespaced_ingress(name, namespace, _preload_content=False))

    def delete_ingress(self, namespace: str, name: str) -> None:
        """Delete an Ingress the operator owns (gone already: nothing to do)."""
        self._deleted((INGRESSES, namespace, name),
                      lambda: self._networking.delete_namespaced_ingress(name, namespace))

    def apply_ingress(self, body: Body) -> None:
        self._apply(self._networking.patch_namespaced_ingress, body, watched=INGRESSES)

    def refused_ingress(self, body: Body) -> str | None:
        return self._refused(self._networking.patch_namespaced_ingress, body)

    # ------------------------------------------------------------------ Services

    def service(self, namespace: str, name: str) -> Service | None:
        """A Service (watched: every Service, trimmed to what this reads)."""
        body = self._read((SERVICES, namespace, name),
                          lambda: self._core.read_namespaced_service(name, namespace, _preload_content=False))
        if body is None:
            return None
        spec, meta = body.get("spec") or {}, body.get("metadata") or {}
        return Service(name=name, selector=dict(spec.get("selector") or {}),
                       owner_uids=tuple(str(ref.get("uid")) for ref in meta.get("ownerReferences") or []),
                       ports=tuple(spec.get("ports") or []))

    def patch_service_selector(self, namespace: str, name: str, selector: Mapping[str, str | None]) -> None:
        """Set a Service's selector labels (None removes one) in one patch."""
        patch: Body = {"spec": {"selector": dict(selector)}}
        self._wrote((SERVICES, namespace, name),
                    lambda: self._core.patch_namespaced_service(name, namespace, patch))

    def create_service(self, body: Body) -> None:
        meta = body["metadata"]
        self._wrote((SERVICES, meta["namespace"], meta["name"]),
                    lambda: self._core.create_namespaced_service(meta["namespace"], body, _preload_content=False))

    # ------------------------------------------------------------------ ConfigMaps

    def config_map(self, namespace: str, name: str) -> Body | None:
        """A ConfigMap: the operator's own (watched: those with its rollout label) from the watch; any other (the
        compat-probe contract, which the caller rechecks only every so often) and one not known to exist with a
        GET, since the watch never shows a ConfigMap without the label."""
        return self._read((CONFIG_MAPS, namespace, name),
                          lambda: self._core.read_namespaced_config_map(name, namespace, _preload_content=False),
                          absence=False)

    def existing_config_map(self, namespace: str, name: str) -> Body:
        """The ConfigMap as the apiserver has it now (a GET: read before a write its resourceVersion guards); a
        failure answer (404 included) is raised."""
        return self._body(self._core.read_namespaced_config_map(name, namespace, _preload_content=False))

    def create_config_map(self, body: Body) -> None:
        meta = body["metadata"]
        self._wrote((CONFIG_MAPS, meta["namespace"], meta["name"]),
                    lambda: self._core.create_namespaced_config_map(meta["namespace"], body,
                                                                    _preload_content=False))

    def refused_config_map(self, body: Body) -> str | None:
        """The apiserver's message if it would refuse to create ``body`` (a server-side dry run), else None (also
        when it exists already). Other failures are raised."""
        try:
            self._core.create_namespaced_config_map(body["metadata"]["namespace"], body, dry_run="All")
        except ApiException as exc:
            if exc.status in REJECTED:
                return api_message(exc)
            if exc.status == 409:
                return None
            raise
        return None

    def replace_config_map(self, body: Body) -> None:
        """Replace the ConfigMap with ``body`` (its resourceVersion guards the write)."""
        meta = body["metadata"]
        self._wrote((CONFIG_MAPS, meta["namespace"], meta["name"]),
                    lambda: self._core.replace_namespaced_config_map(meta["name"], meta["namespace"], body,
                                                                     _preload_content=False))

    def delete_config_map(self, namespace: str, name: str) -> None:
        self._deleted((CONFIG_MAPS, namespace, name),
                      lambda: self._core.delete_namespaced_config_map(name, namespace))

    # ------------------------------------------------------------------ DaemonSets, Pods, Events

    def daemon_set(self, namespace: str, name: str) -> Body | None:
        """The operator's DaemonSet (watched: those with its rollout label, as every DaemonSet it reads has).

        A name the watch never showed is looked up in one LIST of the namespace's labelled DaemonSets, made at the
        first such read: one that LIST did not find is absent (its creation comes on the watch, or is the
        operator's own write), so the prewarm DaemonSet of a rollout without prewarm costs no GET; one it found
        is read with a GET (the LIST's bodies are not kept: one deleted before the watch listed it would never be
        seen going away).
        """
        key = (DAEMON_SETS, namespace, name)
        if not self.watched.has(key):
            listed = self._listed.get(namespace)
            if listed is None:
                answer = self._body(self._apps.list_namespaced_daemon_set(
                    namespace, label_selector=LABEL_ROLLOUT, _preload_content=False))
                listed = self._listed[namespace] = frozenset(
                    str((item.get("metadata") or {}).get("name")) for item in answer.get("items") or [])
            if name not in listed and not self.watched.has(key):
                return None
        return self._read(key, lambda: self._apps.read_namespaced_daemon_set(name, namespace,
                                                                             _preload_content=False))

    def apply_daemon_set(self, body: Body) -> None:
        self._apply(self._apps.patch_namespaced_daemon_set, body, watched=DAEMON_SETS)

    def refused_daemon_set(self, body: Body) -> str | None:
        return self._refused(self._apps.patch_namespaced_daemon_set, body)

    def delete_daemon_set(self, namespace: str, name: str) -> None:
        self._deleted((DAEMON_SETS, namespace, name),
                      lambda: self._apps.delete_namespaced_daemon_set(name, namespace))

    def pods(self, namespace: str, label_selector: str) -> list[Body]:
        """The pods that match ``label_selector`` (equality terms, one of them the rollout label:
        :func:`selector_terms`), from the watch of the pods with the rollout label (trimmed: ``trim_pod``)."""
        terms = selector_terms(label_selector)
        return _matching(self.watched.listed(PODS, namespace, terms[LABEL_ROLLOUT]), terms)

    def create_event(self, body: Body) -> None:
        self._core.create_namespaced_event(body["metadata"]["namespace"], body)

    # ------------------------------------------------------------------ other custom resources (routes, drills)

    def serves(self, kind: CustomKind) -> bool:
        """Whether the apiserver serves ``kind`` (discovery)."""
        try:
            resources = self._custom.get_api_resources(kind.group, kind.version)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return any(r.name == kind.plural for r in resources.resources or [])

    def custom_object(self, kind: CustomKind, namespace: str, name: str) -> Body:
        """The object; a failure answer (404 included) is raised."""
        out = self._custom.get_namespaced_custom_object(kind.group, kind.version, namespace, kind.plural, name)
        assert isinstance(out, dict)
        return out

    def custom_objects(self, kind: CustomKind, namespace: str, label_selector: str) -> list[Body] | None:
        """The objects with the labels; None when the apiserver does not serve ``kind`` (404)."""
        listed = optional(lambda: self._custom.list_namespaced_custom_object(
            kind.group, kind.version, namespace, kind.plural, label_selector=label_selector))
        return None if listed is None else list(listed.get("items") or [])

    def replace_custom_object(self, kind: CustomKind, body: Body, *, dry_run: bool = False) -> None:
        """Replace the object with ``body`` (its resourceVersion guards the write; 409 when it changed)."""
        meta = body["metadata"]
        self._custom.replace_namespaced_custom_object(
            kind.group, kind.version, meta["namespace"], kind.plural, meta["name"], body,
            field_manager=FIELD_MANAGER, **({"dry_run": "All"} if dry_run else {}))

    def create_custom_object(self, kind: CustomKind, body: Body) -> None:
        """Create the object (already there: nothing to do)."""
        try:
            self._custom.create_namespaced_custom_object(kind.group, kind.version, body["metadata"]["namespace"],
                                                         kind.plural, body)
        except ApiException as exc:
            if exc.status != 409:
                raise

    def delete_custom_object(self, kind: CustomKind, namespace: str, name: str) -> None:
        """Delete the object (gone already: nothing to do)."""
        optional(lambda: self._custom.delete_namespaced_custom_object(kind.group, kind.version, namespace,
                                                                     kind.plural, name))


class Leases:
    """Reads and conditionally writes Leases as raw JSON (times stay the strings the apiserver sent), on a client
    (and connection pool) of its own, so a busy operator cannot starve the renewals."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self._api: Any = client.CoordinationV1Api(api_client)  # raw JSON in and out (see Kube.__init__)

    @classmethod
    def connect(cls, kubeconfig: str | None = None) -> Leases:
        return cls(_connect(kubeconfig))

    def read(self, namespace: str, name: str, timeout: float) -> Body | None:
        """The Lease; None when there is none."""
        try:
            resp = self._api.read_namespaced_lease(name, namespace, _preload_content=False, _request_timeout=timeout)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return _json(resp.data)

    def create(self, body: Body, timeout: float) -> Body | None:
        """The Lease created; None when it exists already (someone was faster)."""
        return self._conflict_none(lambda: self._api.create_namespaced_lease(
            body["metadata"]["namespace"], body, _preload_content=False, _request_timeout=timeout))

    def replace(self, body: Body, timeout: float) -> Body | None:
        """The Lease replaced; None on a conflict (``body``'s resourceVersion is not the current one)."""
        meta = body["metadata"]
        return self._conflict_none(lambda: self._api.replace_namespaced_lease(
            meta["name"], meta["namespace"], body, _preload_content=False, _request_timeout=timeout))

    @staticmethod
    def _conflict_none(call: Callable[[], Any]) -> Body | None:
        try:
            resp = call()
        except ApiException as exc:
            if exc.status == 409:
                return None
            raise
        return _json(resp.data)


class KubeconfigError(Exception):
    """No kubeconfig (or in-cluster configuration) could be loaded; the message says why."""


SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


class Rollouts:
    """ModelRollouts and their Events as the user's tools read and annotate them (plain JSON answers; failure
    answers raised as :data:`ApiError`)."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self._custom: Any = client.CustomObjectsApi(api_client)  # JSON bodies (see Kube.__init__)
        self._core: Any = client.CoreV1Api(api_client)

    @classmethod
    def connect(cls, kubeconfig: str | None, context: str | None,
                namespace: str | None) -> tuple[Rollouts, str]:
        """The door and the namespace (``namespace``, else the kubeconfig context's, else the pod's, else
        ``default``), loading the kubeconfig like kubectl does: ``kubeconfig`` or KUBECONFIG or ~/.kube/config,
        and in a pod without one (when neither ``kubeconfig`` nor ``context`` is given) the in-cluster config."""
        cfg = client.Configuration()
        try:
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig, context=context, client_configuration=cfg)
            if namespace is None:
                contexts, active = config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
                    config_file=kubeconfig)
                chosen = next((c for c in contexts if c.get("name") == context), None) if context else active
                namespace = ((chosen or {}).get("context") or {}).get("namespace")
        except config.ConfigException as exc:
            if kubeconfig is not None or context is not None:
                raise KubeconfigError(f"cannot load kubeconfig: {exc}") from None
            try:  # like kubectl in a pod without a kubeconfig
                config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
            except config.ConfigException:
                raise KubeconfigError(f"cannot load kubeconfig: {exc}") from None
            if namespace is None:
                try:
                    with open(SERVICE_ACCOUNT_NAMESPACE) as f:
                        namespace = f.read().strip() or None
                except OSError:
                    pass
        return cls(client.ApiClient(cfg)), namespace or "default"

    def get(self, namespace: str, name: str) -> Body:
        out = self._custom.get_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.PLURAL, name)
        assert isinstance(out, dict)
        return out

    def annotate(self, namespace: str, name: str, key: str, value: str, *, field_manager: str) -> None:
        """Set one annotation with a merge patch under ``field_manager``."""
        self._custom.patch_namespaced_custom_object(
            api.GROUP, api.VERSION, namespace, api.PLURAL, name, {"metadata": {"annotations": {key: value}}},
            field_manager=field_manager, _content_type="application/merge-patch+json")

    def _list_call(self, namespace: str | None) -> tuple[Callable[..., Any], tuple[str, ...]]:
        if namespace is None:
            return self._custom.list_cluster_custom_object, (api.GROUP, api.VERSION, api.PLURAL)
        return self._custom.list_namespaced_custom_object, (api.GROUP, api.VERSION, namespace, api.PLURAL)

    def listing(self, namespace: str | None, *, request_timeout: tuple[float, float]) -> Body:
        """The rollouts of ``namespace`` (None: of every namespace) as the list answer (``items``, and
        ``metadata.resourceVersion`` to watch from)."""
        fn, args = self._list_call(namespace)
        out = fn(*args, _request_timeout=request_timeout)
        assert isinstance(out, dict)
        return out

    def watch(self, namespace: str | None, *, resource_version: str, timeout_seconds: int,
              request_timeout: tuple[float, float], name: str | None = None,
              bookmarks: bool = False) -> Iterator[Body]:
        """The watch events (``type``, ``raw_object``) of the rollouts of ``namespace`` (None: every namespace),
        or of the one named ``name``, from ``resource_version`` until ``timeout_seconds`` have passed."""
        fn, args = self._list_call(namespace)
        extra: dict[str, Any] = {"field_selector": f"metadata.name={name}"} if name is not None else {}
        if bookmarks:
            extra["allow_watch_bookmarks"] = True
        events: Iterator[Body] = watch.Watch().stream(  # type: ignore[no-untyped-call]
            fn, *args, resource_version=resource_version, timeout_seconds=timeout_seconds,
            _request_timeout=request_timeout, **extra)
        yield from events

    def events(self, namespace: str, name: str, *, request_timeout: tuple[float, float]) -> list[Body]:
        """The Events about the rollout (raw JSON)."""
        out = self._core.list_namespaced_event(
            namespace, field_selector=f"involvedObject.name={name},involvedObject.kind={api.KIND}",
            _preload_content=False, _request_timeout=request_timeout)
        return list(_json(out.data).get("items") or [])


def selector_terms(label_selector: str) -> dict[str, str]:
    """The equality terms (``k=v`` or ``k==v``, comma-separated) of a label selector that names a rollout
    (``modelrollout.io/rollout=NAME``): what the watch-fed listings can answer, since their watches hold only
    objects with that label. Anything else (``!=``, ``in``, ``notin``, existence, no rollout term) raises
    ValueError. Pure."""
    terms: dict[str, str] = {}
    for term in label_selector.split(","):
        key, sep, value = term.strip().partition("=")
        value = value[1:] if value.startswith("=") else value
        key, value = key.strip(), value.strip()
        if not sep or not key or key.endswith("!") or " " in key or "=" in value or key in terms:
            raise ValueError(f"label selector {label_selector!r}: only distinct equality terms k=v are supported")
        terms[key] = value
    if not terms.get(LABEL_ROLLOUT):
        raise ValueError(f"label selector {label_selector!r}: must name the rollout ({LABEL_ROLLOUT}=NAME)")
    return terms


def _matching(bodies: list[Body], terms: Mapping[str, str]) -> list[Body]:
    """The bodies whose labels have every one of the equality ``terms`` (:func:`selector_terms`). Pure."""
    out = []
    for body in bodies:
        labels = (body.get("metadata") or {}).get("labels") or {}
        if all(labels.get(k) == v for k, v in terms.items()):
            out.append(body)
    return out


def ready_endpoints(slice_body: Mapping[str, Any]) -> frozenset[str]:
    """The endpoints of an EndpointSlice that take traffic (``conditions.ready`` not false: unset reads as ready),
    each named by its pod (``targetRef.name``) or else its first address. Pure."""
    out = set()
    for ep in slice_body.get("endpoints") or []:
        if (ep.get("conditions") or {}).get("ready") is False:
            continue
        ref = (ep.get("targetRef") or {}).get("name")
        addresses = ep.get("addresses") or []
        if ref or addresses:
            out.add(str(ref or addresses[0]))
    return frozenset(out)


def _json(data: bytes | str) -> Body:
    out = json.loads(data)
    assert isinstance(out, dict)
    return out


def optional(call: Callable[[], T]) -> T | None:
    """The call's result, or None on 404."""
    try:
        return call()
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def api_message(exc: ApiException) -> str:
    """The apiserver's message in a failure answer (its ``metav1.Status``), else the HTTP reason."""
    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.reason)[:500]
    except (ValueError, AttributeError):
        return str(exc.reason)


def api_reason(exc: ApiException) -> str:
    """The ``metav1.Status`` reason (``Forbidden``, ``Invalid``, ...) of a failure answer, else the HTTP reason."""
    try:
        return str(json.loads(exc.body or "{}").get("reason") or exc.reason or "")
    except (ValueError, AttributeError):
        return str(exc.reason or "")


def retry_after(exc: BaseException) -> float | None:
    """The seconds a 429/503 answer asked the client to wait (its Retry-After header), or None."""
    if not isinstance(exc, ApiException) or exc.status not in (429, 503):
        return None
    value = (exc.headers or {}).get("Retry-After")
    try:
        return max(float(value), 0.0) if value is not None else None
    except ValueError:
        return None


def owner_reference(rollout: Body) -> Body:
    meta = rollout["metadata"]
    return {
        "apiVersion": f"{api.GROUP}/{api.VERSION}",
        "kind": api.KIND,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
