"""Fault drills on the cluster (I/O): the Chaos Mesh experiments of ``chaos`` steps (:mod:`modelrollout.core.chaos`).

Experiments are owned by the ModelRollout (deleting the rollout deletes them) and labelled with it, so that
every reconcile at a chaos step or during a drill finds what exists and deletes what status does not want.
"""

from __future__ import annotations

from modelrollout import api
from modelrollout.context import RolloutContext
from modelrollout.core import chaos
from modelrollout.core.actions import DeleteDrill, EnsureDrill
from modelrollout.kube import LABEL_REVISION, LABEL_ROLLOUT, MANAGED_BY, CustomKind, Kube

LABEL_DRILL_STEP = "modelrollout.io/drill-step"


def experiments(kind: str) -> CustomKind:
    """The custom resource of Chaos Mesh experiments of ``kind``."""
    return CustomKind(chaos.GROUP, chaos.VERSION, chaos.PLURALS[kind])


def served(kube: Kube, kind: str) -> bool:
    """Whether the apiserver serves chaos-mesh.org/v1alpha1 ``kind`` (discovery)."""
    return kube.serves(experiments(kind))


def check(ctx: RolloutContext) -> str | None:
    """Why the rollout's chaos steps cannot run on this cluster (Chaos Mesh's CRDs missing), else None."""
    for i, drill in chaos.drill_steps(ctx.spec):
        if not served(ctx.kube, drill.kind):
            return (f"spec.strategy.canary.steps[{i}].chaos: this cluster does not serve {chaos.GROUP}/"
                    f"{chaos.VERSION} {drill.kind}; {chaos.INSTALL}")
    return None


def kinds_to_list(spec: api.ModelRolloutSpec | None, status: api.ModelRolloutStatus) -> tuple[str, ...]:
    """The kinds whose experiments must be looked for now: at a chaos step (one may have been created and not
    recorded) or while status says a drill runs (also when the spec is invalid now); none otherwise (no LIST for
    rollouts without drills)."""
    kinds: set[str] = set()
    if chaos.running(status.drill) and status.drill is not None:
        kinds.add(status.drill.kind)
    steps = dict(chaos.drill_steps(spec)) if spec is not None else {}
    if status.current_step is not None and status.current_step in steps:
        kinds.add(steps[status.current_step].kind)
    return tuple(sorted(kinds))


def observe(kube: Kube, namespace: str, name: str, uid: str, kinds: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """``(kind, name)`` of the experiments of these kinds the rollout owns."""
    out: list[tuple[str, str]] = []
    for kind in kinds:
        for item in kube.custom_objects(experiments(kind), namespace, f"{LABEL_ROLLOUT}={name}") or []:
            meta = item.get("metadata") or {}
            if any(ref.get("uid") == uid for ref in meta.get("ownerReferences") or []):
                out.append((kind, str(meta["name"])))
    return tuple(out)


def create(ctx: RolloutContext, action: EnsureDrill) -> None:
    """Create the experiment (already there: nothing to do)."""
    pod_labels = {**ctx.spec.selector.match_labels, LABEL_ROLLOUT: ctx.name, LABEL_REVISION: action.revision}
    body = chaos.experiment(action.drill, name=action.name, namespace=ctx.namespace, pod_labels=pod_labels,
                            labels={LABEL_ROLLOUT: ctx.name, LABEL_DRILL_STEP: str(action.step), **MANAGED_BY})
    body["metadata"]["ownerReferences"] = [ctx.owner]
    ctx.kube.create_custom_object(experiments(action.drill.kind), body)


def delete(kube: Kube, namespace: str, action: DeleteDrill) -> None:
    """Delete the experiment (gone already: nothing to do). Needs no valid spec: an Invalid rollout stops its drill."""
    kube.delete_custom_object(experiments(action.kind), namespace, action.name)
