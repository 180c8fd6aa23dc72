"""Weight math: how many replicas carry a share of traffic."""

from __future__ import annotations

import math


def canary_replicas(replicas: int, weight: int) -> int:
    """Canary replicas needed to carry ``weight`` percent of ``replicas``: ``ceil(replicas * weight / 100)``.

    At least one replica for any weight above zero, never more than ``replicas``.
    """
    if not 0 <= weight <= 100:
        raise ValueError(f"weight {weight} is outside 0..100")
    if weight == 0:
        return 0
    return min(replicas, max(1, math.ceil(replicas * weight / 100)))


def stable_replicas_for_ratio(replicas: int, weight: int) -> int:
    """Stable replicas left when traffic is split by replica ratio (the Service router)."""
    return replicas - canary_replicas(replicas, weight)
