"""Kubernetes clients (I/O): one place that builds them and names the operator's labels."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from modelrollout import api
from modelrollout.core.approval import annotation_managers
from modelrollout.watchcache import Key, WatchCache, rollout_trimmer, trim_deployment, trim_object

FIELD_MANAGER = "modelrollout"
LABEL_ROLLOUT = "modelrollout.io/rollout"
LABEL_TRACK = "modelrollout.io/track"
LABEL_REVISION = "modelrollout.io/revision"
ANNOTATION_REVISION = "modelrollout.io/revision"
ANNOTATION_WEIGHT = "modelrollout.io/weight"
MANAGED_BY = {"app.kubernetes.io/managed-by": "modelrollout"}

Body = dict[str, Any]

REJECTED = frozenset({400, 413, 422})
"""Answers to a server-side dry run that mean the object itself is refused (bad request, too large, invalid)."""


@dataclass(frozen=True)
class Kube:
    """The API groups the operator uses."""

    apps: Any
    core: Any
    networking: Any
    custom: Any
    api_client: Any
    cache: WatchCache | None = None
    """The watched rollouts, Deployments and canary Ingresses (fed by the kopf handlers); None: every read is a
    GET."""

    @classmethod
    def connect(cls, kubeconfig: str | None = None, *, cache: bool = False) -> Kube:
        """In-cluster config when running in a pod, else the kubeconfig (KUBECONFIG or ~/.kube/config)."""
        cfg = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
        except config.ConfigException:
            config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)  # type: ignore[no-untyped-call]
        cfg.connection_pool_maxsize = 64
        api_client = client.ApiClient(cfg)
        apps: Any = client.AppsV1Api(api_client)
        custom: Any = client.CustomObjectsApi(api_client)
        networking: Any = client.NetworkingV1Api(api_client)
        watched = WatchCache(trim={"deployments": trim_deployment, "ingresses": trim_object,
                                   api.PLURAL: rollout_trimmer(annotation_managers)}) if cache else None
        if watched is not None:  # every write to a cached kind tells the cache the version it made
            apps = _Recorded(apps, watched, _named("deployments"))
            networking = _Recorded(networking, watched, _named("ingresses"))
            custom = _Recorded(custom, watched, _rollout_key)
        return cls(apps=apps, core=client.CoreV1Api(api_client), networking=networking, custom=custom,
                   api_client=api_client, cache=watched)

    def to_dict(self, obj: Any) -> Body:
        """A client model as the plain dict the apiserver sent (camelCase keys)."""
        out = self.api_client.sanitize_for_serialization(obj)
        assert isinstance(out, dict)
        return out

    def _read(self, key: Key, call: Callable[[], Any]) -> Body | None:
        """The watch cache's copy of ``key`` when it is current, else ``call()`` (a GET; None on 404) as a dict."""
        def get() -> Body | None:
            obj = optional(call)
            return None if obj is None else obj if isinstance(obj, dict) else self.to_dict(obj)
        return get() if self.cache is None else self.cache.read(key, get)

    def get_rollout(self, namespace: str, name: str) -> Body | None:
        return self._read((api.PLURAL, namespace, name), lambda: self.custom.get_namespaced_custom_object(
            api.GROUP, api.VERSION, namespace, api.PLURAL, name))

    def get_deployment(self, namespace: str, name: str) -> Body | None:
        return self._read(("deployments", namespace, name),
                          lambda: self.apps.read_namespaced_deployment(name, namespace))

    def get_ingress(self, namespace: str, name: str) -> Body | None:
        return self._read(("ingresses", namespace, name),
                          lambda: self.networking.read_namespaced_ingress(name, namespace))

    def patch_rollout_status(self, namespace: str, name: str, status: Body) -> Body:
        out = self.custom.patch_namespaced_custom_object_status(
            api.GROUP, api.VERSION, namespace, api.PLURAL, name, {"status": status})
        assert isinstance(out, dict)
        return out

    def consume_annotation(self, namespace: str, name: str, key: str, seen: str) -> str | None:
        """Remove annotation ``key`` only if it still has the value the decision was made on.

        A JSON patch ``test`` op guards the removal, so a newer value a person set meanwhile is kept.
        """
        path = "/metadata/annotations/" + key.replace("~", "~0").replace("/", "~1")
        try:
            out = self.custom.patch_namespaced_custom_object(
                api.GROUP, api.VERSION, namespace, api.PLURAL, name,
                [{"op": "test", "path": path, "value": seen}, {"op": "remove", "path": path}],
                _content_type="application/json-patch+json")
        except ApiException as exc:
            if exc.status in (404, 409, 422):
                return None
            raise
        return str(out["metadata"]["resourceVersion"]) if isinstance(out, dict) else None

    def apply(self, method: Any, *args: Any, body: Body) -> Any:
        """Server-side apply with the operator's field manager (force: the operator owns these objects)."""
        return method(*args, body=body, field_manager=FIELD_MANAGER, force=True,
                      _content_type="application/apply-patch+yaml")

    def refused_apply(self, method: Any, *args: Any, body: Body) -> str | None:
        """The apiserver's message if it would refuse :meth:`apply` of ``body`` (a server-side dry run: validated,
        nothing stored), else None. Other failures are raised."""
        try:
            method(*args, body=body, field_manager=FIELD_MANAGER, force=True, dry_run="All",
                   _content_type="application/apply-patch+yaml")
        except ApiException as exc:
            message = api_message(exc)
            if exc.status in REJECTED or (exc.status == 500 and "typed" in message):  # 500: a field of a wrong type
                return message
            raise
        return None


WRITES = ("create_", "patch_", "replace_", "delete_")


def _named(resource: str) -> Callable[[str, tuple[Any, ...], dict[str, Any]], Key | None]:
    """The key of a write to one namespaced object of ``resource`` (plural) by a client method: (name, namespace,
    ...) for the single-object methods and their subresources; create_ has (namespace, body)."""
    marker = "_namespaced_" + {"deployments": "deployment", "ingresses": "ingress"}[resource]

    def key(method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Key | None:
        rest = method.split(marker, 1)[1] if marker in method else None
        if rest is None or rest not in ("", "_scale", "_status") or "collection" in method:
            return None
        if method.startswith("create_"):
            namespace, body = (args[0] if args else kwargs.get("namespace")), (args[1:2] or [kwargs.get("body")])[0]
            name = (body.get("metadata") or {}).get("name") if isinstance(body, dict) else \
                getattr(getattr(body, "metadata", None), "name", None)
        else:
            name, namespace = (args[0] if args else kwargs.get("name")), (args[1:2] or [kwargs.get("namespace")])[0]
        return (resource, str(namespace), str(name)) if name and namespace else None
    return key


def _rollout_key(method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Key | None:
    # (group, version, namespace, plural, name, ...) for the single-object custom-object methods
    if "_namespaced_custom_object" not in method or method.startswith("create_") or len(args) < 5:
        return None
    return (api.PLURAL, str(args[2]), str(args[4])) if args[3] == api.PLURAL else None


class _Recorded:
    """An API group client whose writes of a cached kind report the resourceVersion they made (and, for plain
    dict answers, the object written) to the cache (a delete makes it known absent); everything else passes
    through untouched."""

    def __init__(self, inner: Any, cache: WatchCache,
                 key: Callable[[str, tuple[Any, ...], dict[str, Any]], Key | None]) -> None:
        self._inner, self._cache, self._key = inner, cache, key

    def __getattr__(self, method: str) -> Any:
        call = getattr(self._inner, method)
        if not method.startswith(WRITES):
            return call

        def recorded(*args: Any, **kwargs: Any) -> Any:
            key = None if kwargs.get("dry_run") else self._key(method, args, kwargs)
            events_before = None if key is None else self._cache.events(key)
            out = call(*args, **kwargs)
            if key is not None:
                if method.startswith("delete_"):
                    self._cache.removed(key)
                else:
                    meta = out.get("metadata") if isinstance(out, dict) else getattr(out, "metadata", None)
                    rv = meta.get("resourceVersion") if isinstance(meta, dict) else getattr(meta, "resource_version",
                                                                                            None)
                    # a plain dict answer (custom objects: the rollout) is the object as written, read until the
                    # echo; a client model would cost a conversion per write, so those are read with a GET
                    self._cache.wrote(key, None if rv is None else str(rv), out if isinstance(out, dict) else None,
                                      events_before)
            return out
        return recorded


def optional(call: Any) -> Any:
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
