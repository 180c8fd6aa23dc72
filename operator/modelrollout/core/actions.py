"""The actions a decision asks for, one frozen dataclass each, and :data:`Action`, the union of them all.

:mod:`modelrollout.apply` carries them out and ``tests/unit/sim.py`` simulates them, each with one ``match``
that ends in ``assert_never``: an action added here and missed there is a mypy error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from modelrollout import api
from modelrollout.core.steps import Features

Track = Literal["stable", "canary"]
"""The role of a revision's pods: stable (all traffic but the canary's share) or canary (the revision under test)."""


@dataclass(frozen=True)
class EnsureServices:
    """Create the per-track Services (NAME-stable, NAME-canary) if missing, each selecting ``revision``."""

    revision: str


@dataclass(frozen=True)
class SelectRevision:
    """The per-track Service ``NAME-TRACK`` selects the pods of ``revision`` (one write of its selector)."""

    track: Track
    revision: str


@dataclass(frozen=True)
class DeleteWorkload:
    """Delete a Deployment of this rollout that no track runs any more (``name``, running ``revision``)."""

    name: str
    revision: str | None


@dataclass(frozen=True)
class EnsureStable:
    """Create the stable revision's Deployment (NAME-REVISION) from spec.template (first release, or recreate the
    lost stable)."""

    revision: str
    replicas: int


@dataclass(frozen=True)
class ScaleStable:
    replicas: int


@dataclass(frozen=True)
class EnsureCanary:
    """Create the canary revision's Deployment (NAME-REVISION) from spec.template."""

    revision: str
    replicas: int


@dataclass(frozen=True)
class ScaleCanary:
    replicas: int


@dataclass(frozen=True)
class SetWeight:
    """The router sends ``weight`` percent to the canary, with the header pin and mirror of ``features``."""

    weight: int
    features: Features = field(default_factory=Features)


@dataclass(frozen=True)
class ResetRouter:
    """The router sends everything to stable and removes what it added."""


@dataclass(frozen=True)
class EnsurePrewarm:
    """Create or update the NAME-prewarm DaemonSet to pull exactly these images."""

    images: tuple[str, ...]


@dataclass(frozen=True)
class DeletePrewarm:
    """Remove the NAME-prewarm DaemonSet."""


@dataclass(frozen=True)
class RecordRevision:
    """Keep the stable revision's template and model (in NAME-revisions) for a later rollback-to."""

    revision: str
    keep: int


@dataclass(frozen=True)
class RestoreRevision:
    """Put a recorded revision's template and model back into the spec (rollback after promotion)."""

    revision: str


@dataclass(frozen=True)
class EnsureDrill:
    """Create the Chaos Mesh experiment of the chaos step ``step`` against the canary's pods."""

    name: str
    step: int
    drill: api.ChaosSpec
    revision: str
    """The canary revision, whose pods it selects."""


@dataclass(frozen=True)
class DeleteDrill:
    """Delete a Chaos Mesh experiment of this rollout (its drill is over, stopped, or was never recorded)."""

    kind: str
    name: str


@dataclass(frozen=True)
class RemoveAnnotations:
    """Consume control annotations so a re-sync cannot replay them."""

    keys: tuple[str, ...]


Action = (
    EnsureServices | SelectRevision | DeleteWorkload | EnsureStable | ScaleStable | EnsureCanary | ScaleCanary
    | SetWeight | ResetRouter | RemoveAnnotations | EnsurePrewarm | DeletePrewarm | RecordRevision
    | RestoreRevision | EnsureDrill | DeleteDrill
)
