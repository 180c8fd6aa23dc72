"""The router registry: name -> router. A new router is one module and one line here."""

from __future__ import annotations

from modelrollout.routers.base import Router
from modelrollout.routers.httproute import GatewayAPIRouter
from modelrollout.routers.ingress_nginx import NginxIngressRouter
from modelrollout.routers.istio import IstioRouter
from modelrollout.routers.service import ServiceRouter

ROUTERS: dict[str, Router] = {
    ServiceRouter.name: ServiceRouter(),
    NginxIngressRouter.name: NginxIngressRouter(),
    GatewayAPIRouter.name: GatewayAPIRouter(),
    IstioRouter.name: IstioRouter(),
}
