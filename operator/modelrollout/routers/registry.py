"""The router registry: one implementation per kind in :data:`modelrollout.core.routing.KINDS`, by its name."""

from __future__ import annotations

from modelrollout import api
from modelrollout.core.routing import selected
from modelrollout.routers.base import Router
from modelrollout.routers.httproute import GatewayAPIRouter
from modelrollout.routers.ingress_nginx import NginxIngressRouter
from modelrollout.routers.istio import IstioRouter
from modelrollout.routers.service import ServiceRouter

ROUTERS: dict[str, Router] = {
    router.name: router for router in (ServiceRouter(), NginxIngressRouter(), GatewayAPIRouter(), IstioRouter())
}


def router_for(spec: api.ModelRolloutSpec) -> Router:
    """The router of a valid spec."""
    return ROUTERS[selected(spec.traffic).name]
