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
    stable_deployment: str = ""
    """The Deployment that runs the stable revision now (as observed; see :func:`deployment_name`)."""
    canary_deployment: str = ""
    """The Deployment that runs the canary revision now (as observed)."""

    @property
    def stable_service(self) -> str:
        return f"{self.name}-stable"

    @property
    def canary_service(self) -> str:
        return f"{self.name}-canary"

    def deployment(self, revision: str) -> str:
        return deployment_name(self.name, revision)


def deployment_name(rollout: str, revision: str) -> str:
    """The Deployment that runs one revision of a rollout: ``NAME-REVISION``. Its pods keep their role for as long as
    they run: promotion switches which revision the per-track Services select, it does not start pods again."""
    return f"{rollout}-{revision}"


LEGACY_DEPLOYMENTS = ("stable", "canary")
"""Suffixes of the per-track Deployments made by operators before promotion by role (``NAME-stable``,
``NAME-canary``): read as the track of whichever revision they run, until that revision's pods are no longer needed."""
