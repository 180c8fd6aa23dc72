"""The data the pure core works on: what was observed, and what to do about it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from modelrollout import api
from modelrollout.core.analysis import Sample
from modelrollout.core.steps import Features, RouteState

Track = Literal["stable", "canary"]


@dataclass(frozen=True)
class TrackState:
    """One track's Deployment as observed."""

    revision: str | None
    """The revision its pod template runs."""
    replicas: int
    """Desired replicas (spec.replicas)."""
    ready: int
    """Ready replicas of the current template."""
    updated: bool = True
    """The Deployment controller has caught up with the latest spec."""
    failure: str | None = None
    """Why pods do not start, when they do not (ImagePullBackOff, CrashLoopBackOff, ...)."""
    images: tuple[str, ...] = ()
    """Container images of its pod template."""


@dataclass(frozen=True)
class PrewarmState:
    """The image pre-pull DaemonSet as observed."""

    images: tuple[str, ...]
    desired: int
    ready: int
    updated: bool
    failures: tuple[str, ...] = ()
    """``node: reason`` for pods that cannot pull."""


@dataclass(frozen=True)
class Observed:
    """The world as read once per reconcile."""

    name: str
    namespace: str
    generation: int
    revision: str
    """The revision the spec asks for."""
    stable: TrackState | None
    canary: TrackState | None
    route: RouteState | None
    """The weight, header pin and mirror the router carries to the canary now; None when it carries none."""
    annotations: Mapping[str, str] = field(default_factory=dict)
    annotation_managers: Mapping[str, str] = field(default_factory=dict)
    """Who last set each control annotation (field manager), where the API tells it."""
    prewarm: PrewarmState | None = None
    """The NAME-prewarm DaemonSet, when there is one."""
    images: tuple[str, ...] = ()
    """Container images of the revision the spec asks for."""
    recorded: tuple[str, ...] = ()
    """Revisions whose template is recorded for rollback-to (read only when that annotation is set)."""
    samples: Mapping[str, Sample] | None = None
    """Metric samples when an evaluation was due and made this time, else None."""
    invalid: str | None = None
    """Why the spec cannot be acted on (a message naming the field), else None."""
    drills: tuple[tuple[str, str], ...] = ()
    """``(kind, name)`` of the Chaos Mesh experiments this rollout owns that exist now (listed only while a drill
    runs or a chaos step is current)."""


@dataclass(frozen=True)
class EnsureServices:
    """Create the per-track Services (NAME-stable, NAME-canary) if missing."""


@dataclass(frozen=True)
class EnsureStable:
    """Create the stable Deployment from spec.template (first release, or recreate the lost stable)."""

    revision: str
    replicas: int


@dataclass(frozen=True)
class ScaleStable:
    replicas: int


@dataclass(frozen=True)
class EnsureCanary:
    """Create or replace the canary Deployment with spec.template at ``revision``."""

    revision: str
    replicas: int


@dataclass(frozen=True)
class ScaleCanary:
    replicas: int


@dataclass(frozen=True)
class PromoteStable:
    """The stable Deployment takes the canary's template (``revision``) at full size."""

    revision: str
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
    EnsureServices | EnsureStable | ScaleStable | EnsureCanary | ScaleCanary | PromoteStable | SetWeight
    | ResetRouter | RemoveAnnotations | EnsurePrewarm | DeletePrewarm | RecordRevision | RestoreRevision
    | EnsureDrill | DeleteDrill
)


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to emit on the ModelRollout."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class Decision:
    """What one reconcile does: actions in order, then the status written once, then events."""

    status: api.ModelRolloutStatus
    actions: tuple[Action, ...] = ()
    events: tuple[Event, ...] = ()
    requeue_after: float | None = None
    """Seconds until the next look even if nothing changes; None: wait for a change."""
