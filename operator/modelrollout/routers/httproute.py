"""Gateway API router: edit one rule of the user's HTTPRoute (``gateway.networking.k8s.io/v1``).

The managed rule is ``spec.traffic.httpRoute.rule`` (a ``rules[].name``), or else the first rule whose
backendRefs include the root Service or ``NAME-stable``. At weight ``w`` its backendRefs become exactly
``NAME-stable`` (weight ``100-w``) and ``NAME-canary`` (weight ``w``), ports copied from the backendRef it
had. ``spec.traffic.headerRoute`` adds a rule ``NAME-canary-header`` before it: the managed rule's matches
with the header added, to ``NAME-canary`` only. ``spec.traffic.mirror`` adds a ``RequestMirror`` filter to
``NAME-canary`` with ``percent`` to the managed rule. Reset puts the managed rule back on ``NAME-stable``
alone and removes the canary backendRef, the header rule and the mirror filter in one write.

``rules`` is an atomic list in the HTTPRoute schema, so a server-side apply of one rule would have to send
(and, forced, take ownership of) every rule, overwriting whatever changed since it was read. Writes are
therefore read-modify-write: the whole object is sent back with the ``resourceVersion`` it was read at, and
a 409 Conflict re-reads and re-edits (optimistic concurrency). Nothing else in the route is touched.

The rule-editing functions are pure (dicts in, dicts out); :class:`RouteObjectRouter` is the shared I/O,
also used by the Istio router.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from modelrollout import api
from modelrollout.context import RolloutContext
from modelrollout.core import routing
from modelrollout.core.steps import Features, RouteState
from modelrollout.kube import REJECTED, ApiError, Body, CustomKind, api_message

log = logging.getLogger("modelrollout.routers")

GROUP = "gateway.networking.k8s.io"
VERSION = "v1"
PLURAL = "httproutes"
KIND = "HTTPRoute"
MIRROR = "RequestMirror"
CONFLICT_RETRIES = 5


# --------------------------------------------------------------------------- pure


@dataclass(frozen=True)
class Tracks:
    """The Services a router routes between."""

    root: str
    stable: str
    canary: str
    namespace: str = ""

    @property
    def header_route(self) -> str:
        """The name of the extra rule / route that pins the header to the canary: ``NAME-canary-header``."""
        return f"{self.canary}-header"

    @classmethod
    def of(cls, ctx: RolloutContext) -> Tracks:
        return cls(ctx.spec.traffic.service.name, ctx.stable_service, ctx.canary_service, ctx.namespace)


def _is_service(ref: Body, name: str) -> bool:
    return (ref.get("name") == name and ref.get("kind", "Service") == "Service"
            and ref.get("group", "") in ("", "core"))


def _routes_to(rule: Body, *names: str) -> bool:
    return any(_is_service(ref, n) for ref in rule.get("backendRefs") or [] for n in names)


def is_header_rule(rule: Body, t: Tracks) -> bool:
    """The rule the operator added for header pinning: named ``NAME-canary-header``, or routing only to the
    canary (found without the name too, for CRDs older than v1.4 that prune ``rules[].name``)."""
    refs = rule.get("backendRefs") or []
    return rule.get("name") == t.header_route or (bool(refs) and all(_is_service(r, t.canary) for r in refs))


def _is_our_mirror(f: Body, t: Tracks) -> bool:
    backend = (f.get("requestMirror") or {}).get("backendRef") or {}
    return f.get("type") == MIRROR and _is_service(backend, t.canary)


def find_rule(spec: Body, t: Tracks, rule: str | None) -> int | None:
    """Index in ``spec.rules`` of the managed rule: named ``rule``, or the first routing to root or stable."""
    for i, r in enumerate(spec.get("rules") or []):
        if is_header_rule(r, t):
            continue
        if rule is not None:
            if r.get("name") == rule:
                return i
        elif _routes_to(r, t.root, t.stable):
            return i
    return None


def _base_ref(rule: Body, t: Tracks) -> Body | None:
    refs = rule.get("backendRefs") or []
    for name in (t.stable, t.root, t.canary):
        for ref in refs:
            if _is_service(ref, name):
                return dict(ref)
    return None


def _backend_ref(base: Body, name: str, weight: int | None) -> Body:
    out: Body = {"name": name}
    out.update({k: copy.deepcopy(v) for k, v in base.items() if k not in ("name", "weight")})
    if weight is not None:
        out["weight"] = weight
    return out


def _object_ref(base: Body, name: str) -> Body:
    """A BackendObjectReference (no weight, no filters) to ``name``, port and kind as in ``base``."""
    out: Body = {"name": name}
    out.update({k: base[k] for k in ("group", "kind", "namespace", "port") if k in base})
    return out


def rule_problem(route: str, spec: Body, t: Tracks, rule: str | None) -> str | None:
    """Why the managed rule cannot be found or used, naming the field; None when it can."""
    rules = spec.get("rules") or []
    i = find_rule(spec, t, rule)
    if i is None:
        if rule is not None:
            names = [r.get("name") for r in rules if r.get("name") and not is_header_rule(r, t)]
            return (f"spec.traffic.httpRoute.rule: HTTPRoute {route} has no rule named {rule} "
                    f"(named rules: {names}; rules[].name needs the Gateway API v1.4+ standard CRDs)")
        return (f"spec.traffic.httpRoute.name: HTTPRoute {route} has no rule whose backendRefs include Service "
                f"{t.root} or {t.stable}; point a rule at {t.stable}, or name one in spec.traffic.httpRoute.rule")
    if _base_ref(rules[i], t) is None:
        targets = sorted({str(ref.get("name")) for ref in rules[i].get("backendRefs") or []})
        return (f"spec.traffic.httpRoute.rule: rule {rule} of HTTPRoute {route} routes to {targets}, "
                f"not to Service {t.root} or {t.stable}")
    return None


def header_rule(managed: Body, t: Tracks, header: tuple[str, str]) -> Body:
    """``NAME-canary-header``: the managed rule's matches (hostnames are the route's) plus the header, to the
    canary only, with the managed rule's filters except mirrors."""
    name, value = header
    base = _base_ref(managed, t) or {}
    matches = []
    for match in managed.get("matches") or [{}]:
        m = copy.deepcopy(match)
        headers = [h for h in m.get("headers") or [] if str(h.get("name", "")).lower() != name.lower()]
        m["headers"] = [*headers, {"type": "Exact", "name": name, "value": value}]
        matches.append(m)
    out: Body = {"name": t.header_route, "matches": matches, "backendRefs": [_backend_ref(base, t.canary, 1)]}
    filters = [copy.deepcopy(f) for f in managed.get("filters") or [] if f.get("type") != MIRROR]
    if filters:
        out["filters"] = filters
    if "timeouts" in managed:
        out["timeouts"] = copy.deepcopy(managed["timeouts"])
    return out


def route_with_weight(spec: Body, t: Tracks, rule: str | None, weight: int, features: Features) -> Body:
    """``spec`` with the managed rule at ``weight`` percent to the canary, the header rule before it and the
    mirror filter on it (as ``features`` asks). Raises ValueError when the managed rule is missing."""
    out = copy.deepcopy(spec)
    out["rules"] = [r for r in out.get("rules") or [] if not is_header_rule(r, t)]
    i = find_rule(out, t, rule)
    base = None if i is None else _base_ref(out["rules"][i], t)
    if i is None or base is None:
        raise ValueError(f"no rule to manage ({'named ' + rule if rule else 'routing to ' + t.stable})")
    managed = out["rules"][i]
    managed["backendRefs"] = [_backend_ref(base, t.stable, 100 - weight), _backend_ref(base, t.canary, weight)]
    filters = [f for f in managed.get("filters") or [] if not _is_our_mirror(f, t)]
    if features.mirror_percent is not None:
        filters.append({"type": MIRROR, "requestMirror": {"backendRef": _object_ref(base, t.canary),
                                                          "percent": features.mirror_percent}})
    if filters:
        managed["filters"] = filters
    else:
        managed.pop("filters", None)
    if features.header is not None:
        out["rules"].insert(i, header_rule(managed, t, features.header))
    return out


def route_reset(spec: Body, t: Tracks, rule: str | None) -> Body:
    """``spec`` with the managed rule on ``NAME-stable`` alone and the header rule and mirror filter gone."""
    out = copy.deepcopy(spec)
    out["rules"] = [r for r in out.get("rules") or [] if not is_header_rule(r, t)]
    i = find_rule(out, t, rule)
    if i is not None:
        managed = out["rules"][i]
        base = _base_ref(managed, t)
        if base is not None:
            managed["backendRefs"] = [_backend_ref(base, t.stable, None)]
        filters = [f for f in managed.get("filters") or [] if not _is_our_mirror(f, t)]
        if filters:
            managed["filters"] = filters
        else:
            managed.pop("filters", None)
    return out


def route_weight(spec: Body, t: Tracks, rule: str | None) -> int | None:
    """The canary backendRef's weight in the managed rule; 0 when only the header rule or mirror reaches the
    canary; None when nothing does."""
    rules = spec.get("rules") or []
    pinned = any(is_header_rule(r, t) for r in rules)
    i = find_rule(spec, t, rule)
    weight, mirrored = 0, False
    if i is not None:
        for ref in rules[i].get("backendRefs") or []:
            if _is_service(ref, t.canary):
                weight = int(ref.get("weight", 1))
        mirrored = any(_is_our_mirror(f, t) for f in rules[i].get("filters") or [])
    return weight if weight > 0 or pinned or mirrored else None


def route_features(spec: Body, t: Tracks, rule: str | None) -> Features:
    """The header pinned by the header rule (the last header of its first match, as :func:`header_rule` adds
    it) and the percent of the operator's mirror filter on the managed rule."""
    rules = spec.get("rules") or []
    header = None
    for r in rules:
        if is_header_rule(r, t):
            headers = ((r.get("matches") or [{}])[0].get("headers") or [])
            if headers:
                header = (str(headers[-1].get("name")), str(headers[-1].get("value")))
            break
    mirror = None
    i = find_rule(spec, t, rule)
    if i is not None:
        for f in rules[i].get("filters") or []:
            if _is_our_mirror(f, t):
                mirror = int((f.get("requestMirror") or {}).get("percent", 100))
    return Features(header, mirror)


# --------------------------------------------------------------------------- I/O


class RouteObjectRouter:
    """A router that edits part of a user-owned custom object (read-modify-write with resourceVersion)."""

    name = ""
    group = ""
    version = ""
    plural = ""
    kind = ""
    field = ""
    """The spec field that names the object, e.g. ``spec.traffic.httpRoute``."""
    install = ""
    """What to install when the apiserver does not serve the resource."""

    # pure hooks
    def object_name(self, ctx: RolloutContext) -> str:
        raise NotImplementedError

    def problem(self, ctx: RolloutContext, spec: Body) -> str | None:
        raise NotImplementedError

    def weight_of(self, ctx: RolloutContext, spec: Body) -> int | None:
        raise NotImplementedError

    def features_of(self, ctx: RolloutContext, spec: Body) -> Features:
        raise NotImplementedError

    def with_weight(self, ctx: RolloutContext, spec: Body, weight: int, features: Features) -> Body:
        raise NotImplementedError

    def without_canary(self, ctx: RolloutContext, spec: Body) -> Body:
        raise NotImplementedError

    # I/O
    @property
    def resource(self) -> CustomKind:
        return CustomKind(self.group, self.version, self.plural)

    def _get(self, ctx: RolloutContext) -> Body:
        return ctx.kube.custom_object(self.resource, ctx.namespace, self.object_name(ctx))

    def _optional(self, ctx: RolloutContext) -> Body | None:
        try:
            return self._get(ctx)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def served(self, ctx: RolloutContext) -> bool:
        """Whether the apiserver serves ``group/version`` with this resource (discovery)."""
        return ctx.kube.serves(self.resource)

    def check(self, ctx: RolloutContext) -> str | None:
        name = self.object_name(ctx)
        try:
            obj = self._get(ctx)
        except ApiError as exc:
            if exc.status == 404:
                if not self.served(ctx):
                    return (f"{self.field}: this cluster does not serve {self.group}/{self.version} {self.kind}; "
                            f"{self.install}")
                return f"{self.field}.name: {self.kind} {name} not found in namespace {ctx.namespace}"
            if exc.status == 403:
                return (f"{self.field}.name: the operator may not read {self.kind} {name} ({exc.reason}); grant it "
                        f"get and update on {self.plural}.{self.group}")
            raise
        return self.problem(ctx, obj.get("spec") or {})

    def current(self, ctx: RolloutContext) -> RouteState | None:
        obj = self._optional(ctx)
        spec = {} if obj is None else obj.get("spec") or {}
        weight = None if obj is None else self.weight_of(ctx, spec)
        return None if weight is None else RouteState(weight, self.features_of(ctx, spec))

    def set_weight(self, ctx: RolloutContext, weight: int, features: Features) -> None:
        self._write(ctx, lambda spec: self.with_weight(ctx, spec, weight, features), missing_ok=False)

    def reset(self, ctx: RolloutContext) -> None:
        self._write(ctx, lambda spec: self.without_canary(ctx, spec), missing_ok=True)

    def dry_run(self, ctx: RolloutContext, weight: int, features: Features) -> str | None:
        try:
            self._write(ctx, lambda spec: self.with_weight(ctx, spec, weight, features), missing_ok=False,
                        dry_run=True)
        except ApiError as exc:
            if exc.status in REJECTED:
                return (f"{self.field}: the apiserver rejects {self.kind} {self.object_name(ctx)} as the operator "
                        f"would edit it (weight {weight}): {api_message(exc)}")
            raise
        return None

    def _write(self, ctx: RolloutContext, edit: Callable[[Body], Body], *, missing_ok: bool,
               dry_run: bool = False) -> None:
        """Edit the spec and write the whole object back at the resourceVersion it was read at; on a 409
        Conflict (someone else wrote meanwhile) read and edit again. No write when the edit changes nothing.
        ``dry_run``: the apiserver only validates the write (nothing is stored)."""
        name = self.object_name(ctx)
        for attempt in range(CONFLICT_RETRIES):
            obj = self._optional(ctx)
            if obj is None:
                if missing_ok:
                    return
                raise RuntimeError(f"{self.kind} {ctx.namespace}/{name} disappeared")
            spec = obj.get("spec") or {}
            try:
                new = edit(spec)
            except ValueError as exc:
                raise RuntimeError(f"{self.kind} {ctx.namespace}/{name}: {exc}") from None
            if new == spec:
                return
            metadata: dict[str, Any] = {k: v for k, v in obj["metadata"].items() if k != "managedFields"}
            body = {**obj, "metadata": metadata, "spec": new}
            try:
                ctx.kube.replace_custom_object(self.resource, body, dry_run=dry_run)
                return
            except ApiError as exc:
                if exc.status != 409 or attempt == CONFLICT_RETRIES - 1:
                    raise
                log.info("%s %s/%s changed while being edited; retrying", self.kind, ctx.namespace, name)


class GatewayAPIRouter(RouteObjectRouter):
    name = routing.GATEWAY_API.name
    group = GROUP
    version = VERSION
    plural = PLURAL
    kind = KIND
    field = "spec.traffic.httpRoute"
    install = "install Gateway API CRDs (gateway.networking.k8s.io/v1 HTTPRoute)"

    @staticmethod
    def _ref(ctx: RolloutContext) -> api.HTTPRouteRef:
        ref = ctx.spec.traffic.http_route
        assert ref is not None
        return ref

    def object_name(self, ctx: RolloutContext) -> str:
        return self._ref(ctx).name

    def problem(self, ctx: RolloutContext, spec: Body) -> str | None:
        ref = self._ref(ctx)
        return rule_problem(ref.name, spec, Tracks.of(ctx), ref.rule)

    def weight_of(self, ctx: RolloutContext, spec: Body) -> int | None:
        return route_weight(spec, Tracks.of(ctx), self._ref(ctx).rule)

    def features_of(self, ctx: RolloutContext, spec: Body) -> Features:
        return route_features(spec, Tracks.of(ctx), self._ref(ctx).rule)

    def with_weight(self, ctx: RolloutContext, spec: Body, weight: int, features: Features) -> Body:
        return route_with_weight(spec, Tracks.of(ctx), self._ref(ctx).rule, weight, features)

    def without_canary(self, ctx: RolloutContext, spec: Body) -> Body:
        return route_reset(spec, Tracks.of(ctx), self._ref(ctx).rule)
