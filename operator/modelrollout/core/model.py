"""The data the pure core works on: what was observed, and what to do about it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from modelrollout import api
from modelrollout.core.actions import Action
from modelrollout.core.actions import Track as Track
from modelrollout.core.analysis import Sample
from modelrollout.core.steps import RouteState


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
    serving: int | None = None
    """Ready endpoints of this Deployment's pods that its Service (``NAME-TRACK``) lists, which is what a router
    sends this track's share to; None when not observed (a router that splits by replica ratio, or no EndpointSlice
    of that Service seen yet)."""
    name: str = ""
    """The Deployment's name (``NAME-REVISION``; ``NAME-stable`` / ``NAME-canary`` made by an operator before
    promotion by role)."""


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
    selects: Mapping[str, str | None] = field(default_factory=dict)
    """The revision each per-track Service (``NAME-stable``, ``NAME-canary``, by track) selects; a Service that
    selects no revision (made by an operator before promotion by role) maps to None, a missing one is absent."""
    workloads: tuple[tuple[str, str | None], ...] = ()
    """``(name, revision)`` of every Deployment this rollout owns."""


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
