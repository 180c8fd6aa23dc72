"""The routers the operator knows and what each can do: one table. Pure data; imports nothing of the package.

Whatever must agree about routers reads :data:`KINDS`: the CRD's CEL rules (:mod:`modelrollout.api`) and
:mod:`modelrollout.core.validate` accept a header pin, a mirror or the blue-green strategy only with a router
that has it, :func:`selected` picks the router a spec asks for, the plan splits traffic by replica ratio where
the router cannot weight a route, and :mod:`modelrollout.routers.registry` holds one implementation per kind,
keyed by :attr:`RouterKind.name`. A new router is a row here, its field in ``api.Traffic`` and a module in
``routers/``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Feature = Literal["header", "mirror", "blue_green"]
"""What a spec can ask of its router beyond moving traffic."""
Capability = Literal["weight"] | Feature


@dataclass(frozen=True)
class RouterKind:
    """One router and what it can do."""

    name: str
    """The registry key (``Router.name``)."""
    title: str
    """How messages call it."""
    field: str | None
    """The ``spec.traffic`` field, as the CRD spells it, whose presence selects this router; None for the default
    router, selected when no router field is set (it needs only ``spec.traffic.service``)."""
    attribute: str | None
    """The same field as an attribute of ``api.Traffic``."""
    weight: bool
    """Splits requests by a weight on a route object; else by the replica ratio of the tracks' pods behind the
    root Service (so stable shrinks as the canary grows)."""
    header: bool
    """Pins requests with a header to the canary (``spec.traffic.headerRoute``, ``setHeaderRoute`` steps)."""
    mirror: bool
    """Mirrors a share of the requests to the canary (``spec.traffic.mirror``, ``setMirror`` steps)."""
    blue_green: bool
    """Switches all traffic at once between two full-size tracks (``spec.strategy.blueGreen``)."""

    def has(self, capability: Capability) -> bool:
        match capability:
            case "weight":
                return self.weight
            case "header":
                return self.header
            case "mirror":
                return self.mirror
            case "blue_green":
                return self.blue_green


SERVICE = RouterKind("service", "Service", None, None, weight=False, header=False, mirror=False, blue_green=False)
NGINX = RouterKind("nginx", "NGINX", "ingress", "ingress", weight=True, header=True, mirror=False, blue_green=True)
GATEWAY_API = RouterKind("gatewayapi", "Gateway API", "httpRoute", "http_route",
                         weight=True, header=True, mirror=True, blue_green=True)
ISTIO = RouterKind("istio", "Istio", "virtualService", "virtual_service",
                   weight=True, header=True, mirror=True, blue_green=True)

KINDS: tuple[RouterKind, ...] = (NGINX, GATEWAY_API, ISTIO, SERVICE)
"""Every router, in the order messages and CEL rules name them; the default (no field) last."""
DEFAULT = SERVICE

NEEDS: dict[Feature, str] = {
    "header": "a router that routes by header",
    "mirror": "a router that mirrors",
    "blue_green": "a router that switches by weight",
}
"""How messages say what a feature asks of the router."""
CANNOT: dict[Feature, str] = {
    "header": "the Service replica-ratio router cannot pin requests",
    "mirror": "NGINX canary annotations and the Service replica-ratio split cannot mirror",
    "blue_green": "behind the Service replica-ratio router a full-size preview would take half the traffic",
}
"""Why the routers without a capability cannot serve it; names every such router by its title (a test checks)."""


def fields(capability: Capability | None = None) -> tuple[str, ...]:
    """The ``spec.traffic`` fields that select a router (with ``capability``, when given), in table order."""
    return tuple(k.field for k in KINDS if k.field is not None and (capability is None or k.has(capability)))


def listed(names: Sequence[str], prefix: str = "") -> str:
    """``a, b or c``, the first name with ``prefix`` (``spec.traffic.ingress, httpRoute or virtualService``)."""
    if not names:
        return ""
    shown = [prefix + names[0], *names[1:]]
    return shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} or {shown[-1]}"


def requirement(capability: Feature, prefix: str = "spec.traffic.") -> str:
    """``a router that mirrors (spec.traffic.httpRoute or virtualService)``."""
    return f"{NEEDS[capability]} ({listed(fields(capability), prefix)})"


def named(traffic: object) -> tuple[RouterKind, ...]:
    """The routers whose field ``traffic`` (an ``api.Traffic``) sets; validation allows at most one."""
    return tuple(k for k in KINDS if k.attribute is not None and getattr(traffic, k.attribute, None) is not None)


def selected(traffic: object) -> RouterKind:
    """The router ``traffic`` (an ``api.Traffic`` that passed validation) selects: the one whose field is set,
    else the default."""
    chosen = named(traffic)
    return chosen[0] if chosen else DEFAULT
