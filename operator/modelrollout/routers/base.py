"""The router Protocol, the context routers get, and the registry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from modelrollout import api
from modelrollout.core.steps import Features, RouteState
from modelrollout.kube import Kube


@dataclass(frozen=True)
class RouterContext:
    """What a router needs to know about one rollout."""

    kube: Kube
    namespace: str
    name: str
    spec: api.ModelRolloutSpec
    owner: dict[str, Any]

    @property
    def stable_service(self) -> str:
        return f"{self.name}-stable"

    @property
    def canary_service(self) -> str:
        return f"{self.name}-canary"

    @property
    def stable_deployment(self) -> str:
        return f"{self.name}-stable"

    @property
    def canary_deployment(self) -> str:
        return f"{self.name}-canary"


class Router(Protocol):
    """Moves traffic between the stable and canary tracks."""

    name: str

    def check(self, ctx: RouterContext) -> str | None:
        """Why this router cannot work with the objects in the cluster (a message naming the field), or None."""
        ...

    def current(self, ctx: RouterContext) -> RouteState | None:
        """The canary's weight, header pin and mirror as the router carries them now; None when it carries
        nothing to the canary."""
        ...

    def set_weight(self, ctx: RouterContext, weight: int, features: Features) -> None:
        """Send ``weight`` percent to the canary, pin ``features.header`` to it and mirror
        ``features.mirror_percent`` to it (each only where the router supports it; absent ones are removed)."""
        ...

    def reset(self, ctx: RouterContext) -> None:
        """Send everything to stable at once and remove what the router added."""
        ...

    def dry_run(self, ctx: RouterContext, weight: int, features: Features) -> str | None:
        """Why the apiserver would refuse the route object ``set_weight(weight, features)`` writes (a server-side
        dry run, before any traffic moves), or None."""
        ...


def router_name(spec: api.ModelRolloutSpec) -> str:
    """The registry key of the router a spec selects. Pure."""
    if spec.traffic.http_route is not None:
        return "gatewayapi"
    if spec.traffic.virtual_service is not None:
        return "istio"
    if spec.traffic.ingress is not None:
        return "nginx"
    return "service"


def router_for(spec: api.ModelRolloutSpec) -> Router:
    from modelrollout.routers.registry import ROUTERS

    return ROUTERS[router_name(spec)]
