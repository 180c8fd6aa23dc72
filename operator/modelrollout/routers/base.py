"""The router Protocol: what every router module implements."""

from __future__ import annotations

from typing import Protocol

from modelrollout.context import RolloutContext
from modelrollout.core.steps import Features, RouteState


class Router(Protocol):
    """Moves traffic between the stable and canary tracks."""

    name: str
    """The name of its kind in :data:`modelrollout.core.routing.KINDS` (the registry key)."""

    def check(self, ctx: RolloutContext) -> str | None:
        """Why this router cannot work with the objects in the cluster (a message naming the field), or None."""
        ...

    def current(self, ctx: RolloutContext) -> RouteState | None:
        """The canary's weight, header pin and mirror as the router carries them now; None when it carries
        nothing to the canary."""
        ...

    def set_weight(self, ctx: RolloutContext, weight: int, features: Features) -> None:
        """Send ``weight`` percent to the canary, pin ``features.header`` to it and mirror
        ``features.mirror_percent`` to it (each only where the router supports it; absent ones are removed)."""
        ...

    def reset(self, ctx: RolloutContext) -> None:
        """Send everything to stable at once and remove what the router added."""
        ...

    def dry_run(self, ctx: RolloutContext, weight: int, features: Features) -> str | None:
        """Why the apiserver would refuse the route object ``set_weight(weight, features)`` writes (a server-side
        dry run, before any traffic moves), or None."""
        ...
