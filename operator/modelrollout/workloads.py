"""The stable and canary tracks (I/O): their Deployments and Services.

Each revision runs in its own Deployment, ``NAME-REVISION``, whose pods carry the shared labels plus
``modelrollout.io/rollout`` and ``modelrollout.io/revision``. The ``NAME-stable`` and ``NAME-canary`` Services give
the tracks their roles: each selects the pods of one revision, and promotion switches ``NAME-stable``'s selector to
the revision that passed analysis, so the pods that were judged are the pods that serve. All are owned by the
ModelRollout, so deleting it deletes them.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

from modelrollout.context import LEGACY_DEPLOYMENTS, RolloutContext, deployment_name
from modelrollout.core.compat import CONTAINER as PROBE_CONTAINER
from modelrollout.core.compat import inject
from modelrollout.core.model import Track, TrackState
from modelrollout.core.modelconfig import KEY as CONFIG_KEY
from modelrollout.core.modelconfig import MOUNT as CONFIG_MOUNT
from modelrollout.core.modelconfig import config_map_name, mount, rendered
from modelrollout.core.prewarm import template_images
from modelrollout.kube import (
    ANNOTATION_REVISION,
    LABEL_REVISION,
    LABEL_ROLLOUT,
    LABEL_TRACK,
    MANAGED_BY,
    Body,
    Kube,
)

FAILURE_REASONS = frozenset({
    "ImagePullBackOff", "ErrImagePull", "ErrImageNeverPull", "InvalidImageName", "CrashLoopBackOff",
    "CreateContainerConfigError", "CreateContainerError", "RunContainerError",
})


def pod_selector(ctx: RolloutContext, revision: str) -> dict[str, str]:
    """The labels that select one revision's pods (its Deployment's selector, a per-track Service's). Pure."""
    return {**ctx.spec.selector.match_labels, LABEL_ROLLOUT: ctx.name, LABEL_REVISION: revision}


def deployment_body(ctx: RolloutContext, template: Body, track: Track, revision: str, replicas: int) -> Body:
    """The Deployment of one revision (``track``: the role it starts in, which its compat-probe sidecar reports).
    Pure."""
    labels = pod_selector(ctx, revision)
    pod = copy.deepcopy(template)
    meta = pod.setdefault("metadata", {})
    meta["labels"] = {**(meta.get("labels") or {}), **labels}
    meta["annotations"] = {**(meta.get("annotations") or {}), ANNOTATION_REVISION: revision}
    if ctx.spec.compat_probe is not None:
        inject(pod, ctx.spec.compat_probe, rollout=ctx.name, track=track, revision=revision)
    if ctx.spec.model.config:
        mount(pod, config_map_name(ctx.name, revision))  # every container, the sidecar included
        for container in pod["spec"]["containers"]:
            if container["name"] == PROBE_CONTAINER:
                container["args"] = [*container["args"], "--config-file", f"{CONFIG_MOUNT}/{CONFIG_KEY}"]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": deployment_name(ctx.name, revision),
            "namespace": ctx.namespace,
            "labels": {LABEL_ROLLOUT: ctx.name, LABEL_REVISION: revision, **MANAGED_BY},
            "annotations": {ANNOTATION_REVISION: revision},
            "ownerReferences": [ctx.owner],
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": pod,
        },
    }


def service_body(ctx: RolloutContext, track: Track, revision: str, ports: list[Body]) -> Body:
    """The Service of one track, selecting the pods of ``revision``. Pure."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": f"{ctx.name}-{track}",
            "namespace": ctx.namespace,
            "labels": {LABEL_ROLLOUT: ctx.name, LABEL_TRACK: track, **MANAGED_BY},
            "ownerReferences": [ctx.owner],
        },
        "spec": {"selector": pod_selector(ctx, revision), "ports": ports},
    }


def selected_revision(ctx: RolloutContext, track: Track) -> tuple[bool, str | None]:
    """Whether the per-track Service exists, and the revision it selects (None: it selects no revision of this
    rollout, as the Services of an operator before promotion by role, which select ``modelrollout.io/track``)."""
    svc = ctx.kube.service(ctx.namespace, f"{ctx.name}-{track}")
    if svc is None:
        return False, None
    revision = svc.selector.get(LABEL_REVISION)
    return True, revision if revision is not None and svc.selector == pod_selector(ctx, revision) else None


def select_revision(ctx: RolloutContext, track: Track, revision: str) -> None:
    """Point the per-track Service at the pods of ``revision``: one write of its selector (labels it selected and
    no longer does are removed)."""
    name = f"{ctx.name}-{track}"
    svc = ctx.kube.service(ctx.namespace, name)
    want = pod_selector(ctx, revision)
    dropped: dict[str, str | None] = {k: None for k in (svc.selector if svc is not None else {}) if k not in want}
    ctx.kube.patch_service_selector(ctx.namespace, name, {**dropped, **want})


def apply_deployment(ctx: RolloutContext, template: Body, track: Track, revision: str, replicas: int) -> None:
    ctx.kube.apply_deployment(deployment_body(ctx, template, track, revision, replicas))


def scale(ctx: RolloutContext, track: Track, replicas: int) -> None:
    name = ctx.stable_deployment if track == "stable" else ctx.canary_deployment
    ctx.kube.scale_deployment(ctx.namespace, name, replicas)


def delete_deployment(ctx: RolloutContext, name: str) -> None:
    ctx.kube.delete_deployment(ctx.namespace, name)


def ensure_services(ctx: RolloutContext, revision: str) -> None:
    """Create the per-track Services when missing, with the root Service's ports, selecting ``revision``."""
    root = ctx.kube.service(ctx.namespace, ctx.spec.traffic.service.name)
    ports: list[Body] = []
    if root is not None:
        for port in root.ports:
            ports.append({k: v for k, v in port.items() if k in ("name", "port", "targetPort", "protocol")})
    if not ports:
        ports = [{"name": "http", "port": 80, "targetPort": 8080}]
    for track in ("stable", "canary"):
        if ctx.kube.service(ctx.namespace, f"{ctx.name}-{track}") is None:
            ctx.kube.create_service(service_body(ctx, track, revision, ports))


def find_track(kube: Kube, namespace: str, rollout: str, revision: str | None) -> Body | None:
    """The Deployment that runs ``revision``: ``NAME-REVISION``, else one made by an operator before promotion by
    role (``NAME-stable``, then ``NAME-canary``) whose template runs it; None when none does."""
    if revision is None:
        return None
    own = kube.deployment(namespace, deployment_name(rollout, revision))
    if own is not None:
        return own
    legacy = {dep["metadata"]["name"]: dep for dep in kube.deployments_of(namespace, rollout)
              if (dep["metadata"].get("annotations") or {}).get(ANNOTATION_REVISION) == revision}
    return next((legacy[n] for n in (f"{rollout}-{s}" for s in LEGACY_DEPLOYMENTS) if n in legacy), None)


def track_state(dep: Body | None) -> TrackState | None:
    """What a Deployment says about its track. Pure."""
    if dep is None:
        return None
    spec = dep.get("spec") or {}
    status = dep.get("status") or {}
    replicas = int(spec.get("replicas") or 0)
    caught_up = int(status.get("observedGeneration") or 0) >= int(dep["metadata"].get("generation") or 0)
    updated_n = int(status.get("updatedReplicas") or 0)
    ready_n = int(status.get("readyReplicas") or 0)
    total = int(status.get("replicas") or 0)
    updated = caught_up and updated_n >= replicas and total == replicas
    ready = min(ready_n, updated_n) if caught_up else 0
    return TrackState(
        name=dep["metadata"]["name"],
        revision=(dep["metadata"].get("annotations") or {}).get(ANNOTATION_REVISION),
        replicas=replicas,
        ready=ready,
        updated=updated,
        images=template_images(spec.get("template") or {}),
    )


def pod_failure(kube: Kube, namespace: str, name: str, revision: str | None) -> str | None:
    """Why pods of a revision do not start, from their containers' waiting reasons, or None."""
    if revision is None:
        return None
    for pod in kube.pods(namespace, f"{LABEL_ROLLOUT}={name},{LABEL_REVISION}={revision}"):
        for _, why in _failures(pod):
            return why
    return None


def failing(pod: Body) -> tuple[str, ...]:
    """What :func:`pod_failure` would name of one pod: its containers' failure reasons and whether it is
    unschedulable; () for a pod that is fine or still starting. Pure."""
    return tuple(reason for reason, _ in _failures(pod))


def _failures(pod: Body) -> Iterator[tuple[str, str]]:
    """(reason, what :func:`pod_failure` says of it) for each container of ``pod`` waiting in a failure reason,
    then for the pod being unschedulable. Pure."""
    status, name = pod.get("status") or {}, (pod.get("metadata") or {}).get("name")
    for waiting in waiting_states(status, "containerStatuses", "initContainerStatuses"):
        if waiting.get("reason") in FAILURE_REASONS:
            node = (pod.get("spec") or {}).get("nodeName") or "unscheduled"
            detail = f": {waiting['message']}" if waiting.get("message") else ""
            yield waiting["reason"], f"{waiting['reason']} on pod {name} (node {node}){detail}"
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            yield "Unschedulable", f"Unschedulable: pod {name}: {cond.get('message')}"


def waiting_states(pod_status: Body, *fields: str) -> list[Body]:
    """The ``state.waiting`` of every container status in ``fields`` of a pod's status (in that order), with the
    container's ``image``; a running or terminated container has none. Pure."""
    out = []
    for field in fields:
        for cs in pod_status.get(field) or []:
            waiting = (cs.get("state") or {}).get("waiting")
            if waiting is not None:
                out.append({**waiting, "image": cs.get("image")})
    return out


def check_contract(ctx: RolloutContext) -> str | None:
    """Why the compat-probe's contract ConfigMap cannot be used, or None (also None without a probe)."""
    probe = ctx.spec.compat_probe
    if probe is None:
        return None
    cm = ctx.kube.config_map(ctx.namespace, probe.contract.name)
    if cm is None:
        return f"spec.compatProbe.contract.name: ConfigMap {probe.contract.name} not found in namespace {ctx.namespace}"
    if probe.contract_key not in (cm.get("data") or {}):
        return (f"spec.compatProbe.contractKey: ConfigMap {probe.contract.name} has no key {probe.contract_key} "
                f"(keys: {sorted(cm.get('data') or {})})")
    return None


def config_map_body(ctx: RolloutContext, revision: str) -> Body:
    """The immutable ConfigMap with the revision's effective model config. Pure."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": config_map_name(ctx.name, revision), "namespace": ctx.namespace,
                     "ownerReferences": [ctx.owner],
                     "labels": {LABEL_ROLLOUT: ctx.name, LABEL_REVISION: revision, **MANAGED_BY}},
        "immutable": True,
        "data": {CONFIG_KEY: rendered(ctx.spec.model)},
    }


def ensure_config_map(ctx: RolloutContext, revision: str) -> None:
    """Create the immutable ConfigMap with the revision's effective model config (when it has one)."""
    if not ctx.spec.model.config:
        return
    if ctx.kube.config_map(ctx.namespace, config_map_name(ctx.name, revision)) is not None:
        return
    ctx.kube.create_config_map(config_map_body(ctx, revision))


def delete_config_map(ctx: RolloutContext, revision: str) -> None:
    """Delete the model-config ConfigMap of a revision no Deployment runs any more (none: nothing to do)."""
    ctx.kube.delete_config_map(ctx.namespace, config_map_name(ctx.name, revision))


def dry_run_deployment(ctx: RolloutContext, template: Body, track: Track, revision: str) -> str | None:
    """Why the apiserver would reject the Deployment for this template (a server-side dry run), or None."""
    body = deployment_body(ctx, template, track, revision, 0)
    message = ctx.kube.refused_deployment(body)
    return None if message is None else f"spec.template: the apiserver rejects the {track} Deployment: {message}"


def dry_run_config_map(ctx: RolloutContext, revision: str) -> str | None:
    """Why the apiserver would reject the revision's model-config ConfigMap (a server-side dry run of its
    create: the 1 MiB object limit, say), or None (also when there is none, or it exists already)."""
    if not ctx.spec.model.config:
        return None
    body = config_map_body(ctx, revision)
    message = ctx.kube.refused_config_map(body)  # None also when it is there (immutable, from the same revision)
    return None if message is None else (f"spec.model.config: the apiserver rejects the ConfigMap "
                                         f"{body['metadata']['name']} it renders to: {message}")
