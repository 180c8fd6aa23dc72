"""A pure, in-memory world for driving ``decide`` in unit tests: actions take effect at once."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, assert_never

from modelrollout import api
from modelrollout.core import actions as act
from modelrollout.core import analysis as an
from modelrollout.core.model import Decision, Observed, PrewarmState, TrackState
from modelrollout.core.plan import decide, replica_ratio
from modelrollout.core.prewarm import template_images
from modelrollout.core.revision import revision_of
from modelrollout.core.steps import Features, RouteState
from modelrollout.core.weights import stable_replicas_for_ratio

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def spec_dict(steps: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "replicas": 4,
        "selector": {"matchLabels": {"app": "m"}},
        "template": {"metadata": {"labels": {"app": "m"}}, "spec": {"containers": [{"name": "m", "image": "img:1"}]}},
        "traffic": {"service": {"name": "m"}},
        "strategy": {"canary": {"steps": steps}},
    }
    out.update(extra)
    return out


@dataclass
class World:
    raw: dict[str, Any]
    now: datetime = T0
    deployments: dict[str, TrackState] = field(default_factory=dict)
    """The rollout's Deployments, by the revision they run (``NAME-REVISION``)."""
    selects: dict[str, str] = field(default_factory=dict)
    """The revision each per-track Service selects (absent: no Service yet)."""
    selector_writes: list[tuple[str, str]] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    """Revisions whose Deployment was deleted, in order."""
    router: int | None = None
    features: Features = field(default_factory=Features)
    routes: list[tuple[int, Features]] = field(default_factory=list)
    annotations: dict[str, str] = field(default_factory=dict)
    status: api.ModelRolloutStatus = field(default_factory=api.ModelRolloutStatus)
    canary_ready: bool = True
    canary_serving: int | None = None
    """Ready endpoints the canary's Service lists (None: not observed, as behind the Service router)."""
    metric_values: dict[str, float | None] = field(default_factory=dict)
    metric_times: dict[str, datetime] = field(default_factory=dict)
    """When each metric's sample was scraped (absent: the evaluation time, a new sample every time)."""
    weights: list[int] = field(default_factory=list)
    router_writes: int = 0
    decisions: list[Decision] = field(default_factory=list)
    prewarm: PrewarmState | None = None
    nodes: int = 2
    prewarm_writes: list[tuple[str, ...]] = field(default_factory=list)
    recorded: dict[str, dict[str, Any]] = field(default_factory=dict)
    drills: dict[str, str] = field(default_factory=dict)
    """Chaos Mesh experiments that exist: name -> kind."""
    drill_log: list[tuple[str, str, datetime]] = field(default_factory=list)
    """("create" | "delete", name, when) for every drill action."""

    def _stable_rev(self) -> str:
        return self.status.stable_revision or self.revision

    def _canary_rev(self) -> str | None:
        stable = self.status.stable_revision
        rev = self.revision if stable not in (None, self.revision) else self.status.canary_revision
        return None if rev == self._stable_rev() else rev

    @property
    def stable(self) -> TrackState | None:
        """The Deployment of the stable revision, as observe finds it."""
        return self.deployments.get(self._stable_rev())

    @stable.setter
    def stable(self, value: TrackState | None) -> None:
        self._put(self._stable_rev(), value)

    @property
    def canary(self) -> TrackState | None:
        rev = self._canary_rev()
        return None if rev is None else self.deployments.get(rev)

    @canary.setter
    def canary(self, value: TrackState | None) -> None:
        rev = self._canary_rev()
        assert rev is not None
        self._put(rev, value)

    def _put(self, rev: str, value: TrackState | None) -> None:
        if value is None:
            self.deployments.pop(rev, None)
        else:
            self.deployments[rev] = value

    @property
    def spec(self) -> api.ModelRolloutSpec:
        return api.ModelRolloutSpec.model_validate(self.raw)

    @property
    def revision(self) -> str:
        return revision_of(self.raw["template"], self.raw.get("model"))

    def set_image(self, image: str) -> None:
        self.raw["template"]["spec"]["containers"][0]["image"] = image

    def observe(self, samples: bool) -> Observed:
        spec = self.spec
        got = None
        if (
            samples
            and spec.analysis is not None
            and an.analysis_due(spec.analysis, self.status.last_analysis_at, self.status.traffic_started_at, self.now)
            and self.status.canary_revision == self.revision
        ):
            got = {
                m.name: an.Sample(self.metric_values.get(m.name), m.query, sample_at=self.metric_times.get(m.name))
                for m in an.due_metrics(spec.analysis, self.status.traffic_started_at, self.now)
            }
        return Observed(
            name="m",
            namespace="default",
            generation=1,
            revision=self.revision,
            stable=self.stable,
            canary=self.canary if self.canary is None or self.canary_serving is None
            else replace(self.canary, serving=self.canary_serving),
            route=None if self.router is None else RouteState(self.router, self.features),
            annotations=dict(self.annotations),
            samples=got,
            prewarm=self.prewarm,
            images=template_images(self.raw["template"]),
            recorded=tuple(sorted(self.recorded)),
            drills=tuple((kind, name) for name, kind in sorted(self.drills.items())),
            selects=dict(self.selects),
            workloads=tuple((f"m-{rev}", rev) for rev in self.deployments),
        )

    def step(self, *, samples: bool = True) -> Decision:
        d = decide(self.spec, self.status, self.observe(samples), self.now)
        self.decisions.append(d)
        for a in d.actions:
            self.carry(a)
        self.status = d.status
        return d

    def carry(self, a: act.Action) -> None:
        match a:
            case act.EnsureServices():
                for track in ("stable", "canary"):
                    self.selects.setdefault(track, a.revision)
            case act.SelectRevision():
                self.selects[a.track] = a.revision
                self.selector_writes.append((a.track, a.revision))
            case act.DeleteWorkload():
                assert a.revision is not None
                if replica_ratio(self.spec) and a.revision == self.status.stable_revision:
                    self.router = None  # the Service router's weight was an annotation of that Deployment
                    self.features = Features()
                del self.deployments[a.revision]
                self.deleted.append(a.revision)
            case act.EnsureStable():
                self.deployments[a.revision] = TrackState(a.revision, a.replicas, a.replicas, name=f"m-{a.revision}",
                                                          images=template_images(self.raw["template"]))
            case act.EnsurePrewarm():
                self.prewarm_writes.append(a.images)
                bad = any(i.startswith("unpullable.invalid/") for i in a.images)
                failures = tuple(f"node n{i}: ImagePullBackOff" for i in range(self.nodes)) if bad else ()
                self.prewarm = PrewarmState(a.images, self.nodes, 0 if bad else self.nodes, True, failures)
            case act.DeletePrewarm():
                self.prewarm = None
            case act.RecordRevision():
                entry = {"template": self.raw["template"], "model": self.raw.get("model")}
                self.recorded[a.revision] = copy.deepcopy(entry)
            case act.RestoreRevision():
                entry = copy.deepcopy(self.recorded[a.revision])
                self.raw["template"] = copy.deepcopy(entry["template"])
                if entry["model"] is None:
                    self.raw.pop("model", None)
                else:
                    self.raw["model"] = copy.deepcopy(entry["model"])
            case act.ScaleStable():
                assert self.stable is not None
                self.stable = replace(self.stable, replicas=a.replicas, ready=a.replicas)
            case act.EnsureCanary():
                ready = a.replicas if self.canary_ready else 0
                self.deployments[a.revision] = TrackState(a.revision, a.replicas, ready, name=f"m-{a.revision}",
                                                          images=template_images(self.raw["template"]))
            case act.ScaleCanary():
                assert self.canary is not None
                self.canary = replace(
                    self.canary, replicas=a.replicas, ready=a.replicas if self.canary_ready or a.replicas == 0 else 0
                )
            case act.SetWeight():
                self.router = a.weight
                self.features = a.features
                self.routes.append((a.weight, a.features))
                self.router_writes += 1
                self.weights.append(a.weight)
                if replica_ratio(self.spec) and self.stable is not None:  # the Service router's set_weight
                    n = stable_replicas_for_ratio(self.spec.replicas, a.weight)
                    self.stable = replace(self.stable, replicas=n, ready=n)
            case act.ResetRouter():
                self.router = None
                self.features = Features()
                self.router_writes += 1
                self.weights.append(0)
                if replica_ratio(self.spec) and self.canary is not None:  # the Service router's reset
                    self.canary = replace(self.canary, replicas=0, ready=0)
                if replica_ratio(self.spec) and self.stable is not None:
                    self.stable = replace(self.stable, replicas=self.spec.replicas, ready=self.spec.replicas)
            case act.EnsureDrill():
                self.drills[a.name] = a.drill.kind
                self.drill_log.append(("create", a.name, self.now))
            case act.DeleteDrill():
                assert self.drills.pop(a.name, None) == a.kind
                self.drill_log.append(("delete", a.name, self.now))
            case act.RemoveAnnotations():
                for k in a.keys:
                    self.annotations.pop(k, None)
            case _:
                assert_never(a)

    def run(self, *, limit: int = 200, until: Any = None, tick: timedelta = timedelta(seconds=1)) -> None:
        """Decide repeatedly, advancing the clock by the requeue time (or ``tick``), at most ``limit`` times."""
        for _ in range(limit):
            d = self.step()
            if until is not None and until(self):
                return
            if until is None and d.requeue_after is None and not d.actions:
                return
            wait = d.requeue_after if d.requeue_after is not None else tick.total_seconds()
            self.now += timedelta(seconds=max(wait, 0.001)) if wait > 0 else timedelta(0)
        if until is not None:
            raise AssertionError(f"condition not reached in {limit} decisions; status: {self.status.message}")


def released(steps: list[dict[str, Any]], **extra: Any) -> World:
    """A world whose first revision is already stable."""
    w = World(spec_dict(steps, **extra))
    w.run(until=lambda w: w.status.phase is api.Phase.SUCCEEDED)
    return w
