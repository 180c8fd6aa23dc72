"""What the spec says about how the two tracks share traffic and pods (router kind, blue-green, sizes)."""

from __future__ import annotations

from modelrollout import api
from modelrollout.core import routing
from modelrollout.core.scale import Sizes, sizes
from modelrollout.core.steps import blue_green
from modelrollout.durations import format_duration


def replica_ratio(spec: api.ModelRolloutSpec) -> bool:
    """Traffic is split by replica ratio: the spec's router cannot weight a route (the Service router)."""
    return not routing.selected(spec.traffic).weight


def dynamic_stable(spec: api.ModelRolloutSpec) -> bool:
    """Stable is scaled down as the canary grows (only meaningful with a router that splits by weight)."""
    return spec.rollback.dynamic_stable_scale and not replica_ratio(spec)


def sizes_at(spec: api.ModelRolloutSpec, weight: int, features: bool) -> Sizes:
    """The replicas of both tracks at ``weight`` (``features``: a header route or a mirror is on)."""
    return sizes(spec.replicas, weight, preview=blue_green(spec), features=features, ratio=replica_ratio(spec),
                 dynamic=dynamic_stable(spec), stable_floor=spec.rollback.stable_min_ready)


def switch_back_window(spec: api.ModelRolloutSpec) -> str:
    """How long stable stays at full size after a blue-green switch, for messages."""
    bg = spec.strategy.blue_green
    return format_duration(bg.scale_down_delay) if bg is not None else "the pause"
