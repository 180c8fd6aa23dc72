"""Fault drills (``chaos`` steps): Chaos Mesh experiments against the canary's pods only. Pure.

A drill is one Chaos Mesh object (``chaos-mesh.org/v1alpha1``) the operator creates at its step, with the
selector it sets itself (the rollout's namespace and the canary pods' labels) and the drill's duration, and
deletes when the duration is over, or at once when the rollout leaves the step any other way (a breach, an
abort, a rollback, a promotion, a new revision). Which experiment may exist is decided from status alone
(:func:`wanted`): every other one found by label is deleted, so an operator killed between creating and
recording an experiment leaves nothing behind.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, TypeGuard

from modelrollout import api
from modelrollout.core.steps import risky_above, steps_of
from modelrollout.durations import format_duration

GROUP = "chaos-mesh.org"
VERSION = "v1alpha1"
PLURALS = {kind: kind.lower() for kind in api.CHAOS_KINDS}
"""The resource (plural) of every supported kind: Chaos Mesh's plurals are the lower-case kind."""
INSTALL = "install Chaos Mesh (its CRDs, chaos-mesh.org/v1alpha1)"
NAME_PREFIX_MAX = 40


def drill_steps(spec: api.ModelRolloutSpec) -> list[tuple[int, api.ChaosSpec]]:
    """The chaos steps of the rollout with their index."""
    return [(i, s.chaos) for i, s in enumerate(steps_of(spec)) if isinstance(s, api.ChaosStep)]


def weight_before(spec: api.ModelRolloutSpec, step: int) -> int:
    """The canary's weight when step ``step`` runs: the last setWeight before it (0 if none)."""
    weight = 0
    for s in steps_of(spec)[:step]:
        if isinstance(s, api.SetWeightStep):
            weight = s.set_weight
    return weight


def gate_reason(spec: api.ModelRolloutSpec, step: int, drill: api.ChaosSpec) -> str | None:
    """Why a drill waits for a person before it starts: its own approval, or a canary above riskyAbove."""
    if drill.approval is not None:
        return drill.approval.reason
    risky, weight = risky_above(spec), weight_before(spec, step)
    if risky is not None and weight > risky:
        return f"chaos {drill.kind} at weight {weight}, above riskyAbove {risky}"
    return None


def describe(drill: api.ChaosSpec) -> str:
    """``chaos PodChaos 1m`` for messages."""
    action = drill.spec.fields().get("action")
    return f"chaos {drill.kind}{f' {action}' if isinstance(action, str) else ''} {format_duration(drill.duration)}"


def problem(spec: api.ModelRolloutSpec) -> str | None:
    """What is wrong with the spec's chaos steps (what the CRD's CEL rules refuse, and what they cannot see)."""
    found = drill_steps(spec)
    if found and spec.strategy.canary is None:
        return "spec.strategy: chaos steps are canary steps"
    for i, drill in found:
        field = f"spec.strategy.canary.steps[{i}].chaos"
        for key in api.CHAOS_SET_BY_OPERATOR:
            if key in drill.spec.fields():
                return (f"{field}.spec.{key} is set by the operator (the canary's pods only, for chaos.duration, in "
                        "this cluster): remove it")
        if drill.kind == "NetworkChaos" and drill.spec.target is not None:
            return (f"{field}.spec.target: a NetworkChaos target selects other pods; a drill reaches the canary's "
                    "pods only (use externalTargets for addresses outside the cluster)")
        if weight_before(spec, i) == 0:
            return (f"{field}: no setWeight above 0 comes before this step, so the canary has no pod to run the "
                    "drill against (and no traffic to judge it by)")
    return None


def experiment_name(rollout: str, revision: str, step: int, started_at: datetime) -> str:
    """A DNS label unique to this run of the drill: a restarted drill (or one re-created after a crash between
    creating and recording it) gets a new name, so the old object is recognised as unwanted."""
    digest = hashlib.sha256(f"{revision}/{step}/{started_at.isoformat()}".encode()).hexdigest()[:8]
    return f"{rollout[:NAME_PREFIX_MAX].rstrip('-.')}-drill-{step}-{digest}"


def selector(namespace: str, pod_labels: Mapping[str, str]) -> dict[str, Any]:
    """The Chaos Mesh selector the operator sets: the rollout's namespace and the canary pods' labels."""
    return {"namespaces": [namespace], "labelSelectors": dict(pod_labels)}


def experiment(drill: api.ChaosSpec, *, name: str, namespace: str, pod_labels: Mapping[str, str],
               labels: Mapping[str, str], annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The Chaos Mesh object of a drill (owner references are added by the caller)."""
    spec = {k: v for k, v in drill.spec.fields().items() if k not in api.CHAOS_SET_BY_OPERATOR}
    spec.setdefault("mode", "one")
    spec["selector"] = selector(namespace, pod_labels)
    spec["duration"] = format_duration(drill.duration)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": drill.kind,
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels),
                     "annotations": dict(annotations or {})},
        "spec": spec,
    }


def running(drill: api.DrillStatus | None) -> TypeGuard[api.DrillStatus]:
    return drill is not None and drill.outcome == "Running"


def wanted(drill: api.DrillStatus | None, *, phase: api.Phase | None, step: int | None,
           canary_revision: str | None, revision: str) -> bool:
    """Whether the running drill may go on: the rollout is progressing at its step, on its revision."""
    return (drill is not None and running(drill) and phase is api.Phase.PROGRESSING and step == drill.step
            and canary_revision == drill.revision == revision)


def with_evaluation(drill: api.DrillStatus, metrics: Sequence[api.MetricStatus],
                    at: datetime | None) -> api.DrillStatus:
    """The drill's metric record with one more evaluation (``metrics`` as status.analysis shows it at ``at``);
    unchanged when that evaluation was counted already or happened before the drill started."""
    if at is None or at == drill.last_analysis_at or at < drill.started_at:
        return drill
    seen = {m.name: m for m in drill.metrics}
    out = []
    for m in metrics:
        if m.at is not None and m.at != at:
            continue  # not evaluated this time (an initialDelay not yet over)
        old = seen.pop(m.name, None) or api.DrillMetric(name=m.name)
        values = [v for v in (old.min, old.max, m.value) if v is not None]
        out.append(old.model_copy(update={
            "evaluations": old.evaluations + 1,
            "failures": old.failures + (m.verdict is api.Verdict.FAIL),
            "min": min(values) if values else None, "max": max(values) if values else None,
            "last": m.value if m.value is not None else old.last}))
    out.extend(seen.values())
    return drill.model_copy(update={"metrics": sorted(out, key=lambda m: m.name), "last_analysis_at": at})


def summary(drill: api.DrillStatus) -> str:
    """What the metrics did during the drill, in words."""
    if not drill.metrics:
        return "no metric was evaluated during the drill"
    parts = []
    for m in drill.metrics:
        span = "no value" if m.min is None or m.max is None else (
            f"{m.min:g}" if m.min == m.max else f"{m.min:g}..{m.max:g}")
        parts.append(f"{m.name} {span} ({m.evaluations} evaluations, {m.failures} failing)")
    return "; ".join(parts)
