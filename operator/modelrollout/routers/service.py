"""Service router: split traffic by replica ratio behind the user's root Service.

The root Service selects the pods of both tracks by the shared labels, so each track gets a share of
requests close to its share of ready pods. For weight ``w`` of ``R`` replicas the canary runs
``ceil(R*w/100)`` pods and stable the rest. It is an approximation: the share is quantised to
``1/R`` (with 4 replicas, weight 10 becomes 25%), and kube-proxy balances connections, not requests.
Header pinning and mirroring are not possible with a Service and are rejected at validation.
The weight is recorded in the ``modelrollout.io/weight`` annotation of the stable Deployment, written in
the same patch as its replicas, so one write moves traffic.
"""

from __future__ import annotations

from modelrollout.context import RolloutContext
from modelrollout.core import routing
from modelrollout.core.steps import Features, RouteState
from modelrollout.core.weights import stable_replicas_for_ratio
from modelrollout.kube import ANNOTATION_WEIGHT, LABEL_TRACK


class ServiceRouter:
    name = routing.SERVICE.name

    def check(self, ctx: RolloutContext) -> str | None:
        svc_name = ctx.spec.traffic.service.name
        svc = ctx.kube.service(ctx.namespace, svc_name)
        if svc is None:
            return f"spec.traffic.service.name: Service {svc_name} not found in namespace {ctx.namespace}"
        selector = svc.selector
        labels = ctx.spec.selector.match_labels
        if LABEL_TRACK in selector:
            return (f"spec.traffic.service.name: Service {svc_name} selects {LABEL_TRACK}={selector[LABEL_TRACK]}, "
                    "so it cannot split traffic by replica ratio; remove that label from its selector")
        if not selector or any(labels.get(k) != v for k, v in selector.items()):
            return (f"spec.traffic.service.name: Service {svc_name} selector {selector} must be a subset of "
                    f"spec.selector.matchLabels {dict(labels)} to reach both tracks")
        return None

    def current(self, ctx: RolloutContext) -> RouteState | None:
        dep = ctx.kube.deployment(ctx.namespace, ctx.stable_deployment)  # the watch cache's copy when current
        if dep is None:
            return None
        value = (dep["metadata"].get("annotations") or {}).get(ANNOTATION_WEIGHT)
        weight = int(value) if value and value.isdigit() else 0
        return RouteState(weight) if weight else None

    def set_weight(self, ctx: RolloutContext, weight: int, features: Features) -> None:
        ctx.kube.scale_deployment(ctx.namespace, ctx.stable_deployment,
                                  stable_replicas_for_ratio(ctx.spec.replicas, weight),
                                  annotations={ANNOTATION_WEIGHT: str(weight)})

    def reset(self, ctx: RolloutContext) -> None:
        # Stable back to full size first, then the canary out of the root Service.
        ctx.kube.scale_deployment(ctx.namespace, ctx.stable_deployment, ctx.spec.replicas,
                                  annotations={ANNOTATION_WEIGHT: None})
        ctx.kube.scale_deployment(ctx.namespace, ctx.canary_deployment, 0, missing_ok=True)

    def dry_run(self, ctx: RolloutContext, weight: int, features: Features) -> str | None:
        return None  # it writes replicas and an annotation of the operator's own Deployments, checked as they are made
