"""NGINX Ingress router: an operator-owned canary Ingress with ``canary-weight``.

The operator copies the user's Ingress into ``NAME-canary`` (owned by the ModelRollout), points every
backend at the ``NAME-canary`` Service and adds ``nginx.ingress.kubernetes.io/canary: "true"`` with
``canary-weight``. The user's Ingress is never edited; it must route to ``NAME-stable``, the Service that selects
the stable revision's pods (pods carry no role label a Service of the user's could select: promotion moves the role,
not the pods).
``spec.traffic.headerRoute`` becomes ``canary-by-header`` / ``canary-by-header-value``. NGINX canary
annotations cannot mirror traffic. Reset deletes the canary Ingress: one write.
"""

from __future__ import annotations

import copy
from typing import Any

from modelrollout.context import RolloutContext
from modelrollout.core import routing
from modelrollout.core.steps import Features, RouteState
from modelrollout.kube import LABEL_ROLLOUT, LABEL_TRACK, MANAGED_BY, Service

PREFIX = "nginx.ingress.kubernetes.io/"
CANARY = PREFIX + "canary"
WEIGHT = PREFIX + "canary-weight"
BY_HEADER = PREFIX + "canary-by-header"
BY_HEADER_VALUE = PREFIX + "canary-by-header-value"


def _backend_services(spec: dict[str, Any]) -> set[str]:
    names = set()
    default = (spec.get("defaultBackend") or {}).get("service")
    if default:
        names.add(default["name"])
    for rule in spec.get("rules") or []:
        for path in (rule.get("http") or {}).get("paths") or []:
            svc = (path.get("backend") or {}).get("service")
            if svc:
                names.add(svc["name"])
    return names


def canary_ingress_spec(user_spec: dict[str, Any], targets: set[str], canary_service: str) -> dict[str, Any]:
    """The user's Ingress spec with every backend in ``targets`` pointed at the canary Service. Pure."""
    spec = copy.deepcopy(user_spec)
    spec.pop("tls", None)  # TLS is served by the primary Ingress for the same host
    default = (spec.get("defaultBackend") or {}).get("service")
    if default and default["name"] in targets:
        default["name"] = canary_service
    for rule in spec.get("rules") or []:
        for path in (rule.get("http") or {}).get("paths") or []:
            svc = (path.get("backend") or {}).get("service")
            if svc and svc["name"] in targets:
                svc["name"] = canary_service
    return spec


def _owned(svc: Service, ctx: RolloutContext) -> bool:
    return ctx.owner.get("uid") in svc.owner_uids


class NginxIngressRouter:
    name = routing.NGINX.name

    def _user_ingress(self, ctx: RolloutContext) -> dict[str, Any] | None:
        assert ctx.spec.traffic.ingress is not None
        name = ctx.spec.traffic.ingress.name
        return ctx.kube.ingress(ctx.namespace, name)

    def check(self, ctx: RolloutContext) -> str | None:
        assert ctx.spec.traffic.ingress is not None
        ing_name = ctx.spec.traffic.ingress.name
        ing = self._user_ingress(ctx)
        if ing is None:
            return f"spec.traffic.ingress.name: Ingress {ing_name} not found in namespace {ctx.namespace}"
        root = ctx.spec.traffic.service.name
        svc = ctx.kube.service(ctx.namespace, root)
        if svc is None:
            return f"spec.traffic.service.name: Service {root} not found in namespace {ctx.namespace}"
        backends = _backend_services(ing.get("spec") or {})
        if ctx.stable_service in backends:
            own = ctx.kube.service(ctx.namespace, ctx.stable_service)
            if own is not None and not _owned(own, ctx):
                return (f"spec.traffic.ingress.name: Ingress {ing_name} routes to Service {ctx.stable_service}, "
                        f"which exists and is not managed by this ModelRollout; delete it so the operator creates it")
            return None
        if root in backends and svc.selector.get(LABEL_TRACK) == "stable":
            return (f"spec.traffic.ingress.name: Ingress {ing_name} routes to Service {root}, which selects "
                    f"{LABEL_TRACK}: stable; pods carry no role label since promotion keeps the analysed pods "
                    f"(docs/routers.md), so point the Ingress at {ctx.stable_service}")
        return (f"spec.traffic.ingress.name: Ingress {ing_name} routes to {sorted(backends)}, not to "
                f"{ctx.stable_service}, the Service that selects the stable revision; point it there")

    def current(self, ctx: RolloutContext) -> RouteState | None:
        ing = ctx.kube.ingress(ctx.namespace, ctx.canary_service)  # the watch cache's copy when current
        if ing is None:
            return None
        annotations = ing["metadata"].get("annotations") or {}
        value = annotations.get(WEIGHT, "0")
        header = annotations.get(BY_HEADER)
        pin = (header, annotations.get(BY_HEADER_VALUE, "")) if header else None
        return RouteState(int(value) if value.isdigit() else 0, Features(header=pin))

    def set_weight(self, ctx: RolloutContext, weight: int, features: Features) -> None:
        ctx.kube.apply_ingress(self._canary_body(ctx, weight, features))

    def dry_run(self, ctx: RolloutContext, weight: int, features: Features) -> str | None:
        body = self._canary_body(ctx, weight, features)
        message = ctx.kube.refused_ingress(body)
        return None if message is None else (
            f"spec.traffic.ingress: the apiserver rejects the canary Ingress {ctx.canary_service} made from Ingress "
            f"{ctx.spec.traffic.ingress.name if ctx.spec.traffic.ingress else ''}: {message}")

    def _canary_body(self, ctx: RolloutContext, weight: int, features: Features) -> dict[str, Any]:
        user = self._user_ingress(ctx)
        if user is None:
            raise RuntimeError("the user's Ingress disappeared")
        annotations = {k: v for k, v in (user["metadata"].get("annotations") or {}).items()
                       if k.startswith(PREFIX) and not k.startswith(CANARY)}
        annotations.update({CANARY: "true", WEIGHT: str(weight)})
        if features.header is not None:
            annotations.update({BY_HEADER: features.header[0], BY_HEADER_VALUE: features.header[1]})
        targets = {ctx.spec.traffic.service.name, ctx.stable_service}
        return {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {
                "name": ctx.canary_service,
                "namespace": ctx.namespace,
                "labels": {LABEL_ROLLOUT: ctx.name, LABEL_TRACK: "canary", **MANAGED_BY},
                "annotations": annotations,
                "ownerReferences": [ctx.owner],
            },
            "spec": canary_ingress_spec(user.get("spec") or {}, targets, ctx.canary_service),
        }

    def reset(self, ctx: RolloutContext) -> None:
        ctx.kube.delete_ingress(ctx.namespace, ctx.canary_service)
