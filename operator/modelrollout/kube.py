"""Kubernetes clients (I/O): one place that builds them and names the operator's labels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from modelrollout import api

FIELD_MANAGER = "modelrollout"
LABEL_ROLLOUT = "modelrollout.io/rollout"
LABEL_TRACK = "modelrollout.io/track"
LABEL_REVISION = "modelrollout.io/revision"
ANNOTATION_REVISION = "modelrollout.io/revision"
ANNOTATION_WEIGHT = "modelrollout.io/weight"
MANAGED_BY = {"app.kubernetes.io/managed-by": "modelrollout"}

Body = dict[str, Any]


@dataclass(frozen=True)
class Kube:
    """The API groups the operator uses."""

    apps: Any
    core: Any
    networking: Any
    custom: Any
    api_client: Any

    @classmethod
    def connect(cls, kubeconfig: str | None = None) -> Kube:
        """In-cluster config when running in a pod, else the kubeconfig (KUBECONFIG or ~/.kube/config)."""
        cfg = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
        except config.ConfigException:
            config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)  # type: ignore[no-untyped-call]
        cfg.connection_pool_maxsize = 64
        api_client = client.ApiClient(cfg)
        return cls(
            apps=client.AppsV1Api(api_client),
            core=client.CoreV1Api(api_client),
            networking=client.NetworkingV1Api(api_client),
            custom=client.CustomObjectsApi(api_client),
            api_client=api_client,
        )

    def to_dict(self, obj: Any) -> Body:
        """A client model as the plain dict the apiserver sent (camelCase keys)."""
        out = self.api_client.sanitize_for_serialization(obj)
        assert isinstance(out, dict)
        return out

    def get_rollout(self, namespace: str, name: str) -> Body | None:
        out: Body | None = optional(lambda: self.custom.get_namespaced_custom_object(
            api.GROUP, api.VERSION, namespace, api.PLURAL, name))
        return out

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


def optional(call: Any) -> Any:
    """The call's result, or None on 404."""
    try:
        return call()
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


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
