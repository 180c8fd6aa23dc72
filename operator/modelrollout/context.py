"""The per-rollout context the I/O modules share (routers, workloads, revisions, prewarm, drills)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from modelrollout import api
from modelrollout.kube import Kube


@dataclass(frozen=True)
class RolloutContext:
    """One rollout as the modules that write its objects see it: where it is, its spec, the owner reference its
    objects carry, the cluster client, and the names of the objects the operator makes for it."""

    kube: Kube
    namespace: str
    name: str
    spec: api.ModelRolloutSpec
    owner: dict[str, Any]

    @property
    def stable_service(self) -> str:
        return f"{self.name}-stable"

    @property
    def canary_service(self) -> str:
        return f"{self.name}-canary"

    @property
    def stable_deployment(self) -> str:
        return f"{self.name}-stable"

    @property
    def canary_deployment(self) -> str:
        return f"{self.name}-canary"
