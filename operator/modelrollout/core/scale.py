"""The scale of a rollout: what ``spec.replicas`` (written by people, ``kubectl scale``, an HPA or KEDA through the
scale subresource) means for each track, and what the scale subresource reads back. Pure.

A change of ``spec.replicas`` is not a new revision (the revision hashes ``spec.template`` and ``spec.model``)
and restarts no step: the tracks are resized at the weight the router carries now, and traffic does not move.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from modelrollout.core.actions import Action, ScaleCanary, ScaleStable
from modelrollout.core.model import Observed
from modelrollout.core.weights import canary_replicas


@dataclass(frozen=True)
class Sizes:
    """Replicas of each track at one weight."""

    canary: int
    stable: int


def sizes(replicas: int, weight: int, *, preview: bool, features: bool, ratio: bool, dynamic: bool,
          stable_floor: int | None) -> Sizes:
    """The size of both tracks for ``replicas`` at ``weight``: the canary ``ceil(replicas x weight / 100)`` (at
    least one while a header pin or mirror reaches it; ``replicas`` for a blue-green preview); stable all of
    ``replicas``, or the rest when traffic splits by replica ratio (``ratio``), or ``replicas`` minus the canary
    but at least ``stable_floor`` (default 1) with dynamicStableScale (``dynamic``)."""
    canary = replicas if preview else max(canary_replicas(replicas, weight), 1 if features else 0)
    if ratio:
        stable = replicas - canary
    elif dynamic:
        stable = max(stable_floor if stable_floor is not None else 1, replicas - canary)
    else:
        stable = replicas
    return Sizes(canary, stable)


def follow(obs: Observed, want: Sizes, *, grow_only: bool) -> list[Action]:
    """Resize the tracks of a rollout in progress to ``want`` (only upwards while ``grow_only``: a step that moves
    traffic is sizing the canary for its own weight and resizes both tracks itself)."""
    out: list[Action] = []
    canary, stable = obs.canary, obs.stable
    if canary is not None and canary.revision == obs.revision and canary.replicas > 0 and (
            canary.replicas < want.canary or (canary.replicas > want.canary and not grow_only)):
        out.append(ScaleCanary(want.canary))
    if stable is not None and (stable.replicas < want.stable or (stable.replicas > want.stable and not grow_only)):
        out.append(ScaleStable(want.stable))
    return out


def pods(obs: Observed) -> int:
    """The pods of both tracks (the scale subresource's ``status.replicas``)."""
    return sum(t.replicas for t in (obs.stable, obs.canary) if t is not None)


def selector(match_labels: Mapping[str, str]) -> str:
    """``spec.selector.matchLabels`` as a label selector string (the scale subresource's ``status.selector``):
    the labels both tracks share, so an HPA averages its metrics over every pod serving traffic."""
    return ",".join(f"{k}={v}" for k, v in sorted(match_labels.items()))
