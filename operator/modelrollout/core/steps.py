"""The steps a rollout walks through, and what the router carries at each. Pure.

A canary walks ``spec.strategy.canary.steps``. A blue-green rollout walks steps derived from
``spec.strategy.blueGreen``: the preview (the new revision at full size behind ``NAME-canary``, weight 0,
the header pin where the router has one), the pre-promotion analysis, the optional approval, the switch
(``setWeight 100``, one router write) and a pause of ``scaleDownDelay`` during which the old revision stays
at full size for an instant switch-back. Promotion then follows as for a canary.

Header pins and mirrors are router *features*: ``spec.traffic.headerRoute`` / ``spec.traffic.mirror`` are
the defaults from the first traffic step on, and ``setHeaderRoute`` / ``setMirror`` steps change them from
their own step on. Promotion and rollback remove them together with the weight.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from modelrollout import api


@dataclass(frozen=True)
class Features:
    """What the router carries to the new revision besides the weight."""

    header: tuple[str, str] | None = None
    """``(name, value)`` of the header pinned to the new revision."""
    mirror_percent: int | None = None
    """Percent of requests mirrored to the new revision."""

    @property
    def any(self) -> bool:
        return self.header is not None or self.mirror_percent is not None


@dataclass(frozen=True)
class RouteState:
    """What a router carries to the new revision now."""

    weight: int
    features: Features = field(default_factory=Features)


def blue_green(spec: api.ModelRolloutSpec) -> bool:
    return spec.strategy.blue_green is not None


def steps_of(spec: api.ModelRolloutSpec) -> list[api.Step]:
    """The steps the rollout walks, in order (derived for blue-green)."""
    if spec.strategy.canary is not None:
        return list(spec.strategy.canary.steps)
    bg = spec.strategy.blue_green
    assert bg is not None
    steps: list[api.Step] = [api.SetWeightStep(set_weight=0)]
    if spec.analysis is not None:
        passes = bg.pre_promotion_analysis.passes if bg.pre_promotion_analysis is not None else 1
        steps.append(api.AnalysisStep(analysis=api.AnalysisStepSpec(passes=passes)))
    if bg.approval is not None:
        steps.append(api.ApprovalStep(approval=bg.approval))
    steps.append(api.SetWeightStep(set_weight=100))
    steps.append(api.PauseStep(pause=api.PauseSpec(duration=bg.scale_down_delay)))
    return steps


def step_of(index: int, total: int) -> str:
    """The step at 0-based ``index`` as people read it: ``3/7`` (1-based), ``7/7 done`` once all are done.

    This is the one convention of every message, Event, the printer column (``status.stepProgress``) and the
    plugin; ``status.currentStep``, ``status.approval.step`` and approval tokens keep the 0-based index.
    """
    return f"{index + 1}/{total}" if index < total else f"{total}/{total} done"


def risky_above(spec: api.ModelRolloutSpec) -> int | None:
    return spec.strategy.canary.risky_above if spec.strategy.canary is not None else None


def default_features(spec: api.ModelRolloutSpec) -> Features:
    h, m = spec.traffic.header_route, spec.traffic.mirror
    return Features(None if h is None else (h.name, h.value), None if m is None else m.percent)


def features_at(spec: api.ModelRolloutSpec, step: int) -> Features:
    """The features in force once step ``step`` (0-based) has run: the defaults, changed by every
    setHeaderRoute / setMirror step up to and including ``step``."""
    out = default_features(spec)
    for s in steps_of(spec)[: step + 1]:
        if isinstance(s, api.SetHeaderRouteStep):
            h = s.set_header_route
            header = None if h.name is None or h.value is None else (h.name, h.value)
            out = Features(header, out.mirror_percent)
        elif isinstance(s, api.SetMirrorStep):
            out = Features(out.header, s.set_mirror.percent or None)
    return out


def weight_at(spec: api.ModelRolloutSpec, step: int) -> int:
    """The weight in force once step ``step`` (0-based) has run: the last setWeight up to it, else 0."""
    weight = 0
    for s in steps_of(spec)[: step + 1]:
        if isinstance(s, api.SetWeightStep):
            weight = s.set_weight
    return weight


def first_traffic_step(spec: api.ModelRolloutSpec) -> int | None:
    """Index of the first step at which the new revision receives traffic, or None if none does: a route step
    (setWeight, setHeaderRoute, setMirror) after which its weight is above zero or a header pin or mirror is in
    force; for blue-green, the preview (its first step). Preflight gates this step, the router's dry run checks
    the routes from it on, and analysis without such a step could never gather evidence."""
    for i, s in enumerate(steps_of(spec)):
        if not isinstance(s, api.SetWeightStep | api.SetHeaderRouteStep | api.SetMirrorStep):
            continue
        if blue_green(spec) or weight_at(spec, i) > 0 or features_at(spec, i).any:
            return i
    return None


def mirrors(spec: api.ModelRolloutSpec) -> bool:
    """Some step of the rollout mirrors traffic (the router must be able to add a mirror)."""
    return spec.traffic.mirror is not None or any(
        isinstance(s, api.SetMirrorStep) and s.set_mirror.percent > 0 for s in steps_of(spec))


def pins_header(spec: api.ModelRolloutSpec) -> bool:
    return spec.traffic.header_route is not None or any(
        isinstance(s, api.SetHeaderRouteStep) and s.set_header_route.name is not None for s in steps_of(spec))
