"""Read the world once per reconcile into a frozen :class:`~modelrollout.core.model.Observed` (I/O)."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from modelrollout import api, drills
from modelrollout.context import RolloutContext, deployment_name
from modelrollout.core import analysis as an
from modelrollout.core import routing
from modelrollout.core.approval import CONTROL_ANNOTATIONS, ROLLBACK_TO, annotation_managers
from modelrollout.core.model import Observed
from modelrollout.core.phases import ACTIVE
from modelrollout.core.prewarm import kept, template_images, wanted
from modelrollout.core.queries import TemplateError, render
from modelrollout.core.revision import revision_of
from modelrollout.core.steps import features_at, first_traffic_step, steps_of, weight_at
from modelrollout.core.validate import parse_spec
from modelrollout.kube import ANNOTATION_REVISION, Body, Kube, owner_reference
from modelrollout.metrics.base import MetricSource
from modelrollout.prewarm import dry_run_daemonset, observe_daemonset
from modelrollout.revisions import recorded
from modelrollout.routers.base import Router
from modelrollout.routers.registry import router_for
from modelrollout.workloads import (
    check_contract,
    dry_run_config_map,
    dry_run_deployment,
    find_track,
    pod_failure,
    selected_revision,
    track_state,
)

SourceFor = Callable[[api.Analysis], MetricSource]

POD_LOOKUP_AFTER = 5.0
"""Seconds a track's pods must have been unready (status.progressSince) before their pods are looked at for why
(the rollout's pods as the watch of the operator's labelled pods keeps them: no request; a pod that starts failing
wakes the rollout, ``handlers.pod_changed``)."""
CHECK_TTL = 60.0
"""Seconds a passing router/contract check (the user's Ingress, Services, route, contract) is trusted for one
rollout generation before the objects are read again; a failing check is made again at every reconcile, and a
reconcile whose writes fail forgets the passing one (:func:`recheck`), so a deleted Ingress is named at once."""
ABSENT_TTL = 600.0
"""Seconds a rollout generation without prewarm whose DaemonSet was seen absent is not asked for it again (the
operator creates none while prewarm is off; it reads it only to remove one left from a generation with prewarm)."""
@dataclass(frozen=True)
class Observation:
    spec: api.ModelRolloutSpec | None
    status: api.ModelRolloutStatus
    observed: Observed
    ctx: RolloutContext | None
    router: Router | None


def _checked(meta: Mapping[str, Any]) -> Hashable:
    return (str(meta.get("uid") or ""), int(meta.get("generation") or 0), "checked")


def recheck(kube: Kube, rollout: Body) -> None:
    """Check the user's objects again at the next reconcile (a write just failed: one may be gone or changed)."""
    kube.recent.forget(_checked(rollout["metadata"]))


def parse_status(raw: Any) -> api.ModelRolloutStatus:
    try:
        return api.ModelRolloutStatus.model_validate(raw or {})
    except Exception:
        return api.ModelRolloutStatus()


def observe(kube: Kube, rollout: Body, now: datetime, source_for: SourceFor, *,
            default_prometheus: str | None = None) -> Observation:
    meta = rollout["metadata"]
    name, namespace = meta["name"], meta.get("namespace", "default")
    raw_spec = rollout.get("spec") or {}
    status = parse_status(rollout.get("status"))
    spec, invalid = parse_spec(raw_spec)
    if invalid is None and spec is not None and spec.analysis is not None and spec.analysis.prometheus is None \
            and not default_prometheus:
        invalid = ("spec.analysis.prometheus.address: not set, and the operator has no default "
                   "(modelrollout run --prometheus-address, or MODELROLLOUT_PROMETHEUS_ADDRESS)")
    revision = revision_of(raw_spec.get("template") or {}, raw_spec.get("model"))
    annotations: Mapping[str, str] = meta.get("annotations") or {}
    uid = str(meta.get("uid") or "")
    # listed before any early return: an Invalid spec stops a running drill too
    drill_kinds = drills.kinds_to_list(spec, status)
    base = Observed(
        name=name, namespace=namespace, generation=int(meta.get("generation") or 0), revision=revision,
        stable=None, canary=None, route=None, images=template_images(raw_spec.get("template") or {}),
        annotations={k: v for k, v in annotations.items() if k in CONTROL_ANNOTATIONS},
        annotation_managers=annotation_managers(meta.get("managedFields")), invalid=invalid,
        drills=drills.observe(kube, namespace, name, uid, drill_kinds) if drill_kinds else (),
    )
    if spec is None or invalid is not None:
        return Observation(spec, status, base, None, None)
    stable_rev = status.stable_revision or revision
    canary_rev = revision if status.stable_revision not in (None, revision) else status.canary_revision
    stable_dep = find_track(kube, namespace, name, stable_rev)
    canary_dep = find_track(kube, namespace, name, canary_rev) if canary_rev != stable_rev else None
    ctx = RolloutContext(kube=kube, namespace=namespace, name=name, spec=spec, owner=owner_reference(rollout),
                         stable_deployment=_named(stable_dep, deployment_name(name, stable_rev)),
                         canary_deployment=_named(canary_dep, deployment_name(name, canary_rev or revision)))
    router = router_for(spec)
    if not kube.recent.holds(_checked(meta)):  # a passing check of the user's objects is trusted a while
        problem = router.check(ctx) or check_contract(ctx) or drills.check(ctx)
        if problem is not None:
            return Observation(spec, status, replace(base, invalid=problem), ctx, router)
        kube.recent.note(_checked(meta), CHECK_TTL)
    prewarm = None
    no_daemonset = (uid, base.generation, "no-daemonset")
    if spec.rollback.prewarm.enabled or (status.revision_images and not kube.recent.holds(no_daemonset)):
        prewarm = observe_daemonset(kube, namespace, name)
        if prewarm is None and not spec.rollback.prewarm.enabled:  # the operator creates none while disabled
            kube.recent.note(no_daemonset, ABSENT_TTL)
    stable = track_state(stable_dep)
    canary = track_state(canary_dep)
    if canary is not None and routing.selected(spec.traffic).weight:  # it routes to NAME-canary's endpoints
        canary = replace(canary, serving=kube.serving(namespace, ctx.canary_service, f"{canary.name}-"))
    selects = {track: rev for track in ("stable", "canary")
               for there, rev in [selected_revision(ctx, track)] if there}
    workloads = tuple((dep["metadata"]["name"], (dep["metadata"].get("annotations") or {}).get(ANNOTATION_REVISION))
                      for dep in kube.deployments_of(namespace, name) if _owned_by(dep, uid))
    # The pods are scanned for a reason only once they stay unready a while (POD_LOOKUP_AFTER).
    unready_for = 0.0 if status.progress_since is None else (now - status.progress_since).total_seconds()
    if unready_for >= POD_LOOKUP_AFTER:
        if canary is not None and canary.replicas > 0 and canary.ready < canary.replicas:
            canary = replace(canary, failure=pod_failure(kube, namespace, name, canary.revision))
        if status.stable_revision is None and stable is not None and stable.ready < stable.replicas:
            stable = replace(stable, failure=pod_failure(kube, namespace, name, stable.revision))
    samples = None
    values = {"rollout": name, "namespace": namespace, "revision": revision, "track": "canary"}
    if (spec.analysis is not None and status.canary_revision == revision and status.phase in ACTIVE
            and an.analysis_due(spec.analysis, status.last_analysis_at, status.traffic_started_at, now)):
        samples = query_metrics(spec.analysis, source_for(spec.analysis), now, status.traffic_started_at, values)
    starting = status.stable_revision is not None and revision not in (
        status.stable_revision, status.canary_revision, status.rolled_back_revision)
    if spec.analysis is not None and starting:
        problem = refused_query(spec.analysis, source_for(spec.analysis), values)
        if problem is not None:
            return Observation(spec, status, replace(base, invalid=problem), ctx, router)
    new_template = all(t is None or t.revision != revision for t in (stable, canary))
    if new_template and status.rolled_back_revision != revision:
        problem = (dry_run_config_map(ctx, revision)
                   or dry_run_deployment(ctx, raw_spec.get("template") or {}, "canary" if stable else "stable",
                                         revision)
                   or (dry_run_routes(spec, ctx, router) if stable is not None else None)
                   or (dry_run_daemonset(ctx, raw_spec.get("template") or {},
                                         wanted(base.images, stable.images,
                                                kept(status.revision_images, spec.rollback.prewarm.keep_revisions)))
                       if stable is not None and spec.rollback.prewarm.enabled else None))
        if problem is not None:
            return Observation(spec, status, replace(base, invalid=problem), ctx, router)
    recorded_revisions = recorded(kube, namespace, name) if ROLLBACK_TO in annotations else ()
    route = router.current(ctx)
    return Observation(spec, status, replace(base, stable=stable, canary=canary, prewarm=prewarm,
                                             recorded=recorded_revisions,
                                             route=route,
                                             samples=samples, selects=selects, workloads=workloads),
                       ctx, router)


def _named(dep: Body | None, default: str) -> str:
    return str(dep["metadata"]["name"]) if dep is not None else default


def _owned_by(body: Body, uid: str) -> bool:
    return any(ref.get("uid") == uid for ref in body["metadata"].get("ownerReferences") or [])


def dry_run_routes(spec: api.ModelRolloutSpec, ctx: RolloutContext, router: Router) -> str | None:
    """Why the apiserver would refuse a route object the steps write (a server-side dry run of the first traffic
    step's weight with every header pin and mirror the steps use), or None: checked before any traffic moves."""
    first = first_traffic_step(spec)
    if first is None:
        return None
    steps = steps_of(spec)
    weight = weight_at(spec, first)
    for features in dict.fromkeys(features_at(spec, i) for i in range(first, len(steps))):
        problem = router.dry_run(ctx, weight, features)
        if problem is not None:
            return problem
    return None


def _rendered(metric: api.Metric, values: Mapping[str, str]) -> tuple[str, None] | tuple[None, str]:
    """(the metric's query with its variables filled in, None), or (None, why it cannot be rendered)."""
    try:
        return render(metric.query, values), None
    except TemplateError as exc:
        return None, str(exc)


def refused_query(analysis: api.Analysis, source: MetricSource, values: Mapping[str, str]) -> str | None:
    """Preflight of the queries before any traffic moves: every metric's query asked once; the first one the
    source refuses (a parse error, an unknown function) is named with the source's answer. A source that does
    not answer is no reason to refuse: evaluations judge that later (Inconclusive)."""
    for i, metric in enumerate(analysis.metrics):
        query, error = _rendered(metric, values)
        if query is None:
            return f"spec.analysis.metrics[{i}] ({metric.name}): {error}"
        refusal = source.refused(query)
        if refusal is not None:
            return f"spec.analysis.metrics[{i}] ({metric.name}): {refusal} (query: {query})"
    return None


def query_metrics(analysis: api.Analysis, source: MetricSource, now: datetime, traffic_started_at: datetime | None,
                  values: Mapping[str, str]) -> dict[str, an.Sample]:
    out: dict[str, an.Sample] = {}
    for metric in an.due_metrics(analysis, traffic_started_at, now):
        query, error = _rendered(metric, values)
        out[metric.name] = an.Sample(None, metric.query, error) if query is None else source.query(query)
    return out
