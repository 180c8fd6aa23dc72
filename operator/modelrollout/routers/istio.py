"""Istio router: edit one HTTP route of the user's VirtualService (``networking.istio.io/v1``).

The managed route is the ``http[]`` entry named ``spec.traffic.virtualService.route``. At weight ``w`` its
destinations become exactly host ``NAME-stable`` (weight ``100-w``) and host ``NAME-canary`` (weight ``w``),
the per-track Services the operator owns, with the port of the destination it had. DestinationRule subsets
of one Service are the other Istio idiom; they are not used, so nothing but the VirtualService is edited and
the operator needs no DestinationRule. ``spec.traffic.headerRoute`` adds an HTTP route ``NAME-canary-header``
before the managed one (Istio matches routes in order): the managed route's matches with
``headers: {name: {exact: value}}`` (the name lowercased, as Istio requires), to ``NAME-canary`` only.
``spec.traffic.mirror`` sets ``mirror: {host: NAME-canary}`` and ``mirrorPercentage: {value: P}`` on the managed
route. Reset puts the managed route back on ``NAME-stable`` alone, removing the canary destination, the header
route and the mirror in one write. Writes are read-modify-write with resourceVersion, as for the HTTPRoute
(``http`` is an atomic list too).
"""

from __future__ import annotations

import copy

from modelrollout import api
from modelrollout.context import RolloutContext
from modelrollout.core import routing
from modelrollout.core.steps import Features, mirrors
from modelrollout.kube import Body
from modelrollout.routers.httproute import RouteObjectRouter, Tracks

GROUP = "networking.istio.io"
VERSION = "v1"
PLURAL = "virtualservices"
KIND = "VirtualService"
MIRROR_KEYS = ("mirror", "mirrorPercentage", "mirrorPercent", "mirror_percent")
NOT_COPIED_TO_HEADER_ROUTE = ("name", "match", "route", "mirrors", *MIRROR_KEYS)


# --------------------------------------------------------------------------- pure


def host_is(host: str, service: str, namespace: str = "") -> bool:
    """Whether a destination host names ``service`` in the VirtualService's namespace (short or FQDN)."""
    parts = host.split(".")
    return parts[0] == service and (len(parts) == 1 or not namespace or parts[1] == namespace)


def _to(entry: Body, service: str, t: Tracks) -> bool:
    return host_is(str((entry.get("destination") or {}).get("host", "")), service, t.namespace)


def find_route(spec: Body, t: Tracks, route: str) -> int | None:
    """Index in ``spec.http`` of the HTTP route named ``route`` (never the header route)."""
    for i, r in enumerate(spec.get("http") or []):
        if r.get("name") == route and r.get("name") != t.header_route:
            return i
    return None


def _base_entry(managed: Body, t: Tracks) -> Body | None:
    entries = managed.get("route") or []
    for name in (t.stable, t.root, t.canary):
        for entry in entries:
            if _to(entry, name, t):
                return dict(entry)
    return None


def _destination(base: Body, host: str) -> Body:
    out: Body = {"host": host}
    port = (base.get("destination") or {}).get("port")
    if port is not None:
        out["port"] = copy.deepcopy(port)
    return out


def _entry(base: Body, host: str, weight: int | None) -> Body:
    out: Body = {"destination": _destination(base, host)}
    out.update({k: copy.deepcopy(v) for k, v in base.items() if k not in ("destination", "weight")})
    if weight is not None:
        out["weight"] = weight
    return out


def _mirrors_canary(managed: Body, t: Tracks) -> bool:
    return host_is(str((managed.get("mirror") or {}).get("host", "")), t.canary, t.namespace)


def _drop_our_mirror(managed: Body, t: Tracks) -> None:
    if _mirrors_canary(managed, t):
        for key in MIRROR_KEYS:
            managed.pop(key, None)


def route_problem(vs: str, spec: Body, t: Tracks, route: str, features: Features) -> str | None:
    """Why the managed HTTP route cannot be found or used, naming the field; None when it can."""
    http = spec.get("http") or []
    i = find_route(spec, t, route)
    if i is None:
        names = [r.get("name") for r in http if r.get("name") and r.get("name") != t.header_route]
        return (f"spec.traffic.virtualService.route: VirtualService {vs} has no http route named {route} "
                f"(named http routes: {names})")
    managed = http[i]
    if _base_entry(managed, t) is None:
        hosts = sorted({str((e.get("destination") or {}).get("host")) for e in managed.get("route") or []})
        return (f"spec.traffic.virtualService.route: http route {route} of VirtualService {vs} routes to {hosts}, "
                f"not to Service {t.root} or {t.stable}")
    if features.mirror_percent is not None and (
            managed.get("mirrors") or (managed.get("mirror") and not _mirrors_canary(managed, t))):
        return (f"spec.traffic.mirror: http route {route} of VirtualService {vs} already mirrors elsewhere "
                "(mirror or mirrors); Istio cannot add a second mirror there: remove it or spec.traffic.mirror")
    return None


def header_route(managed: Body, t: Tracks, header: tuple[str, str]) -> Body:
    """``NAME-canary-header``: the managed route's matches plus the header, to the canary only, with the managed
    route's other settings (rewrite, timeout, retries, ...) but no mirror."""
    name, value = header
    key = name.lower()
    base = _base_entry(managed, t) or {"destination": {}}
    matches = []
    for match in managed.get("match") or [{}]:
        m = copy.deepcopy(match)
        headers = {k: v for k, v in (m.get("headers") or {}).items() if k.lower() != key}
        headers[key] = {"exact": value}
        m["headers"] = headers
        matches.append(m)
    out: Body = {"name": t.header_route, "match": matches, "route": [_entry(base, t.canary, None)]}
    out.update({k: copy.deepcopy(v) for k, v in managed.items() if k not in NOT_COPIED_TO_HEADER_ROUTE})
    return out


def vs_with_weight(spec: Body, t: Tracks, route: str, weight: int, features: Features) -> Body:
    """``spec`` with the managed route at ``weight`` percent to the canary, the header route before it and the
    mirror on it (as ``features`` asks). Raises ValueError when the managed route is missing."""
    out = copy.deepcopy(spec)
    out["http"] = [r for r in out.get("http") or [] if r.get("name") != t.header_route]
    i = find_route(out, t, route)
    base = None if i is None else _base_entry(out["http"][i], t)
    if i is None or base is None:
        raise ValueError(f"no http route named {route} routing to {t.root} or {t.stable}")
    managed = out["http"][i]
    managed["route"] = [_entry(base, t.stable, 100 - weight), _entry(base, t.canary, weight)]
    _drop_our_mirror(managed, t)
    if features.mirror_percent is not None:
        managed["mirror"] = _destination(base, t.canary)
        managed["mirrorPercentage"] = {"value": features.mirror_percent}
    if features.header is not None:
        out["http"].insert(i, header_route(managed, t, features.header))
    return out


def vs_reset(spec: Body, t: Tracks, route: str) -> Body:
    """``spec`` with the managed route on ``NAME-stable`` alone and the header route and mirror gone."""
    out = copy.deepcopy(spec)
    out["http"] = [r for r in out.get("http") or [] if r.get("name") != t.header_route]
    i = find_route(out, t, route)
    if i is not None:
        managed = out["http"][i]
        base = _base_entry(managed, t)
        if base is not None:
            managed["route"] = [_entry(base, t.stable, None)]
        _drop_our_mirror(managed, t)
    return out


def vs_weight(spec: Body, t: Tracks, route: str) -> int | None:
    """The canary destination's weight in the managed route; 0 when only the header route or the mirror reaches
    the canary; None when nothing does."""
    http = spec.get("http") or []
    pinned = any(r.get("name") == t.header_route for r in http)
    i = find_route(spec, t, route)
    weight, mirrored = 0, False
    if i is not None:
        entries = http[i].get("route") or []
        for entry in entries:
            if _to(entry, t.canary, t):
                weight = int(entry.get("weight", 100 if len(entries) == 1 else 0))
        mirrored = _mirrors_canary(http[i], t)
    return weight if weight > 0 or pinned or mirrored else None


def vs_features(spec: Body, t: Tracks, route: str) -> Features:
    """The header the header route adds to the managed route's match (see :func:`header_route`) and the
    mirror percent on the managed route when it mirrors to the canary."""
    http = spec.get("http") or []
    i = find_route(spec, t, route)
    managed = http[i] if i is not None else {}
    own = ((managed.get("match") or [{}])[0].get("headers") or {})
    header = None
    for r in http:
        if r.get("name") == t.header_route:
            pinned = ((r.get("match") or [{}])[0].get("headers") or {})
            extra = [(k, v) for k, v in pinned.items() if own.get(k) != v]
            if extra:
                header = (str(extra[-1][0]), str((extra[-1][1] or {}).get("exact", "")))
    mirror = None
    if _mirrors_canary(managed, t):
        mirror = int(float((managed.get("mirrorPercentage") or {}).get("value", 100)))
    return Features(header, mirror)


# --------------------------------------------------------------------------- I/O


class IstioRouter(RouteObjectRouter):
    name = routing.ISTIO.name
    group = GROUP
    version = VERSION
    plural = PLURAL
    kind = KIND
    field = "spec.traffic.virtualService"
    install = "install Istio CRDs (networking.istio.io/v1 VirtualService)"

    @staticmethod
    def _ref(ctx: RolloutContext) -> api.VirtualServiceRef:
        ref = ctx.spec.traffic.virtual_service
        assert ref is not None
        return ref

    def object_name(self, ctx: RolloutContext) -> str:
        return self._ref(ctx).name

    def problem(self, ctx: RolloutContext, spec: Body) -> str | None:
        ref = self._ref(ctx)
        return route_problem(ref.name, spec, Tracks.of(ctx), ref.route,
                             Features(mirror_percent=100 if mirrors(ctx.spec) else None))

    def weight_of(self, ctx: RolloutContext, spec: Body) -> int | None:
        return vs_weight(spec, Tracks.of(ctx), self._ref(ctx).route)

    def features_of(self, ctx: RolloutContext, spec: Body) -> Features:
        return vs_features(spec, Tracks.of(ctx), self._ref(ctx).route)

    def with_weight(self, ctx: RolloutContext, spec: Body, weight: int, features: Features) -> Body:
        return vs_with_weight(spec, Tracks.of(ctx), self._ref(ctx).route, weight, features)

    def without_canary(self, ctx: RolloutContext, spec: Body) -> Body:
        return vs_reset(spec, Tracks.of(ctx), self._ref(ctx).route)
