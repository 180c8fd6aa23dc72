"""The image pre-pull DaemonSet ``NAME-prewarm`` (I/O, plus its pure body builder).

One pod per node the model could run on (the pod template's nodeSelector, affinity, tolerations and
imagePullSecrets are copied), with one init container per image that runs a ``true``-like command and exits
at once — pulling the image is the point — and one pause container so the pod stays Ready. The DaemonSet
is owned by the ModelRollout.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from modelrollout.context import RolloutContext
from modelrollout.core.model import PrewarmState
from modelrollout.kube import LABEL_ROLLOUT, MANAGED_BY, Body, Kube
from modelrollout.workloads import FAILURE_REASONS, waiting_states

LABEL_PREWARM = "modelrollout.io/prewarm"
ANNOTATION_IMAGES = "modelrollout.io/images"
TINY = {"requests": {"cpu": "1m", "memory": "4Mi"}, "limits": {"memory": "32Mi"}}


def daemonset_name(rollout: str) -> str:
    return f"{rollout}-prewarm"


def daemonset_body(ctx: RolloutContext, template: Body, images: Sequence[str]) -> Body:
    """The DaemonSet pulling ``images``. Pure."""
    policy = ctx.spec.rollback.prewarm
    pod_spec = template.get("spec") or {}
    labels = {LABEL_ROLLOUT: ctx.name, LABEL_PREWARM: "true"}
    spec: dict[str, Any] = {
        "initContainers": [
            {"name": f"pull-{i}", "image": image, "command": list(policy.command), "imagePullPolicy": "IfNotPresent",
             "resources": TINY}
            for i, image in enumerate(images)
        ],
        "containers": [{"name": "pause", "image": policy.pause_image, "resources": TINY}],
        "terminationGracePeriodSeconds": 0,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
    }
    for key in ("nodeSelector", "affinity", "tolerations", "imagePullSecrets", "priorityClassName",
                "runtimeClassName"):
        if pod_spec.get(key):
            spec[key] = pod_spec[key]
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {
            "name": daemonset_name(ctx.name),
            "namespace": ctx.namespace,
            "labels": {**labels, **MANAGED_BY},
            "annotations": {ANNOTATION_IMAGES: json.dumps(list(images))},
            "ownerReferences": [ctx.owner],
        },
        "spec": {
            "selector": {"matchLabels": labels},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "100%"}},
            "template": {"metadata": {"labels": labels}, "spec": spec},
        },
    }


def apply_daemonset(ctx: RolloutContext, template: Body, images: Sequence[str]) -> None:
    ctx.kube.apply_daemon_set(daemonset_body(ctx, template, images))


def dry_run_daemonset(ctx: RolloutContext, template: Body, images: Sequence[str]) -> str | None:
    """Why the apiserver would refuse the DaemonSet pulling ``images`` (a server-side dry run), or None."""
    body = daemonset_body(ctx, template, images)
    message = ctx.kube.refused_daemon_set(body)
    return None if message is None else (f"spec.rollback.prewarm: the apiserver rejects the DaemonSet "
                                         f"{body['metadata']['name']}: {message}")


def delete_daemonset(ctx: RolloutContext) -> None:
    ctx.kube.delete_daemon_set(ctx.namespace, daemonset_name(ctx.name))


def observe_daemonset(kube: Kube, namespace: str, rollout: str) -> PrewarmState | None:
    body = kube.daemon_set(namespace, daemonset_name(rollout))
    if body is None:
        return None
    status = body.get("status") or {}
    images = tuple(json.loads((body["metadata"].get("annotations") or {}).get(ANNOTATION_IMAGES, "[]")))
    desired = int(status.get("desiredNumberScheduled") or 0)
    ready = int(status.get("numberReady") or 0)
    updated = (int(status.get("observedGeneration") or 0) >= int(body["metadata"].get("generation") or 0)
               and int(status.get("updatedNumberScheduled") or 0) >= desired)
    failures: tuple[str, ...] = ()
    if ready < desired or not updated:
        failures = tuple(_failures(kube, namespace, rollout))
    return PrewarmState(images=images, desired=desired, ready=ready, updated=updated, failures=failures)


def _failures(kube: Kube, namespace: str, rollout: str) -> list[str]:
    out = []
    for pod in kube.pods(namespace, f"{LABEL_ROLLOUT}={rollout},{LABEL_PREWARM}=true"):
        for waiting in waiting_states(pod.get("status") or {}, "initContainerStatuses", "containerStatuses"):
            if waiting.get("reason") in FAILURE_REASONS:
                node = (pod.get("spec") or {}).get("nodeName") or "unscheduled"
                out.append(f"node {node}: {waiting['reason']} pulling {waiting['image']}")
                break
    return sorted(out)
