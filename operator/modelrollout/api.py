"""The ModelRollout API (``modelrollout.io/v1alpha1``): the contract between users and the operator.

These pydantic models are the single source of truth. ``modelrollout crd`` turns them into the CRD in
``crds/`` (see :mod:`modelrollout.crdgen`); attribute docstrings become the CRD's field descriptions,
``Field`` bounds become schema bounds and the ``x-kubernetes-validations`` in ``json_schema_extra``
become CEL rules the apiserver enforces. The operator parses every object it reads through
:class:`ModelRollout`; what the schema cannot express is checked in :mod:`modelrollout.core.validate`.

Pure: no I/O.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag
from pydantic.alias_generators import to_camel

from modelrollout.core import routing
from modelrollout.durations import Duration, at_least, schema_at_least
from modelrollout.imageref import PATTERN as IMAGE_PATTERN

GROUP = "modelrollout.io"
VERSION = "v1alpha1"
KIND = "ModelRollout"
PLURAL = "modelrollouts"
SINGULAR = "modelrollout"
SHORT_NAMES = ["mro"]
CATEGORIES = ["all", "modelrollout"]

QUERY_VARIABLES = ("rollout", "namespace", "revision", "track")
"""The variables a metric query may use as ``{{name}}``."""

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
HEADER_NAME = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"


Image = Annotated[str, Field(min_length=1, max_length=512, json_schema_extra={"pattern": IMAGE_PATTERN})]
"""A container image reference ([HOST[:PORT]/]PATH[:TAG][@ALGORITHM:HEX], the distribution/reference grammar):
the CRD refuses what a kubelet would refuse, and core.validate says why in words."""

LabelValue = Annotated[str, Field(max_length=63)]
"""A Kubernetes label value (at most 63 characters)."""


def _cel(rule: str, message: str, field_path: str | None = None) -> Any:
    out: dict[str, str] = {"rule": rule, "message": message}
    if field_path:
        out["fieldPath"] = field_path
    return out


def _has_router(traffic: str, feature: routing.Feature) -> str:
    """CEL: the traffic object at ``traffic`` selects a router with ``feature`` (:mod:`modelrollout.core.routing`)."""
    return " || ".join(f"has({traffic}.{field})" for field in routing.fields(feature))


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=True,
        frozen=True,
    )


# --------------------------------------------------------------------------- workload


class LabelSelector(_Model):
    """Which pods belong to this ModelRollout (both tracks)."""

    match_labels: dict[str, LabelValue] = Field(min_length=1, max_length=16)
    """Labels every pod of both tracks carries; the root Service selects pods by these."""


class TemplateMetadata(_Model):
    """Labels and annotations of the pods."""

    labels: dict[str, LabelValue] = Field(default_factory=dict, max_length=64)
    """Pod labels; must include spec.selector.matchLabels."""
    annotations: dict[str, str] = Field(default_factory=dict, max_length=64)
    """Pod annotations."""


class Container(_Model):
    """A container of the model server pod (the rest of the Kubernetes Container fields are kept as given)."""

    model_config = ConfigDict(extra="allow")
    name: str = Field(pattern=DNS_LABEL, max_length=63)
    """Container name."""
    image: Image
    """Container image ([HOST[:PORT]/]PATH[:TAG][@DIGEST], path lower-case); a new image is a new revision."""


class PodSpec(_Model):
    """A Kubernetes PodSpec; only containers is checked here, the apiserver checks the rest on the Deployment."""

    model_config = ConfigDict(extra="allow")
    containers: list[Container] = Field(min_length=1, max_length=32)
    """The pod's containers; at least one."""


class PodTemplate(_Model):
    """A PodTemplateSpec. A change here (or in spec.model) is a new revision and starts a rollout."""

    metadata: TemplateMetadata = Field(default_factory=TemplateMetadata)
    """Pod metadata."""
    spec: PodSpec
    """Pod spec."""


class ConfigMigration(_Model):
    """A config key renamed between revisions (``max_seq_len`` -> ``max_length``)."""

    from_: str = Field(alias="from", min_length=1, max_length=253)
    """The old key."""
    to: str = Field(min_length=1, max_length=253)
    """The new key."""


class ModelInfo(_Model):
    """What the compatibility checks know about this revision of the model."""

    version: str | None = Field(default=None, max_length=128)
    """The model's version, shown in status and events."""
    config: dict[str, Any] = Field(default_factory=dict)
    """The model server's effective configuration."""
    config_migrations: list[ConfigMigration] = Field(
        default_factory=list, max_length=64,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["from"]})
    """Config keys renamed from earlier revisions (one rule per old key; rules chain: a -> b and b -> c put a's
    value under c; a cycle is refused)."""
    dependencies: dict[str, str] = Field(default_factory=dict, max_length=128)
    """Package versions the revision runs with (torch, transformers, ...)."""


# --------------------------------------------------------------------------- traffic


class ObjectRef(_Model):
    """A reference to an object in the ModelRollout's namespace."""

    name: str = Field(pattern=DNS_SUBDOMAIN, max_length=253)
    """The object's name."""


class HeaderRoute(_Model):
    """Requests carrying this header value go to the new revision at every step."""

    name: str = Field(pattern=HEADER_NAME, max_length=128)
    """HTTP header name."""
    value: str = Field(min_length=1, max_length=256)
    """Exact header value."""


class HTTPRouteRef(_Model):
    """A Gateway API HTTPRoute (gateway.networking.k8s.io/v1) in the ModelRollout's namespace."""

    name: str = Field(pattern=DNS_SUBDOMAIN, max_length=253)
    """The HTTPRoute's name."""
    rule: str | None = Field(default=None, pattern=DNS_SUBDOMAIN, max_length=253)
    """The rules[].name of the rule to manage; default: the first rule routing to the root Service or NAME-stable."""


class VirtualServiceRef(_Model):
    """An Istio VirtualService (networking.istio.io/v1) in the ModelRollout's namespace."""

    name: str = Field(pattern=DNS_SUBDOMAIN, max_length=253)
    """The VirtualService's name."""
    route: str = Field(min_length=1, max_length=253)
    """The name (http[].name) of the HTTP route in the VirtualService the operator manages."""


class MirrorSpec(_Model):
    """Copy a share of the stable traffic to the new revision; the copies' responses are discarded."""

    percent: int = Field(default=100, ge=0, le=100)
    """Percent of the managed route's requests mirrored to NAME-canary."""


class Traffic(_Model):
    """How traffic reaches the model. With only a Service, traffic splits by replica ratio."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    " + ".join(f"(has(self.{field}) ? 1 : 0)" for field in routing.fields()) + " <= 1",
                    f"spec.traffic: set at most one router ({routing.listed(routing.fields())})",
                ),
                _cel(
                    f"!has(self.headerRoute) || {_has_router('self', 'header')}",
                    f"spec.traffic.headerRoute needs {routing.requirement('header')}: {routing.CANNOT['header']}",
                    ".headerRoute",
                ),
                _cel(
                    f"!has(self.mirror) || {_has_router('self', 'mirror')}",
                    f"spec.traffic.mirror needs {routing.requirement('mirror', '')}; {routing.CANNOT['mirror']}",
                    ".mirror",
                ),
            ]
        }
    )
    service: ObjectRef
    """The root Service users call. With no other router it selects both tracks (replica-ratio split)."""
    ingress: ObjectRef | None = None
    """An NGINX Ingress: the operator adds an owned canary Ingress with canary-weight; this one is never edited."""
    http_route: HTTPRouteRef | None = None
    """A Gateway API HTTPRoute: the operator edits one rule's backendRefs (NAME-stable / NAME-canary weights)."""
    virtual_service: VirtualServiceRef | None = None
    """An Istio VirtualService: the operator edits one HTTP route's destinations (NAME-stable / NAME-canary)."""
    header_route: HeaderRoute | None = None
    """Pin requests with this header to the new revision (NGINX: canary-by-header; else a NAME-canary-header route)."""
    mirror: MirrorSpec | None = None
    """Mirror requests to the new revision (httpRoute: a RequestMirror filter; virtualService: mirrorPercentage)."""


# --------------------------------------------------------------------------- steps


class PauseSpec(_Model):
    """Hold the current weight."""

    duration: Duration | None = None
    """How long; absent means until approved."""


class ApprovalSpec(_Model):
    """Wait for a person to approve with the token shown in status."""

    reason: str = Field(default="approval required", max_length=256)
    """Why this step needs a person; shown in status and events."""


class AnalysisStepSpec(_Model):
    """Wait until every metric in spec.analysis passed this many evaluations in a row."""

    passes: int = Field(default=1, ge=1, le=100)
    """Consecutive passing evaluations needed."""


class SetWeightStep(_Model):
    """Send this percentage of traffic to the new revision."""

    set_weight: int = Field(ge=0, le=100)
    """Percent of traffic for the new revision, 0..100."""


class PauseStep(_Model):
    """Hold for a duration, or until approved."""

    pause: PauseSpec
    """The pause."""


class ApprovalStep(_Model):
    """A gate that waits for ``modelrollout.io/approve=TOKEN``."""

    approval: ApprovalSpec
    """The gate."""


class AnalysisStep(_Model):
    """Wait for passing analysis."""

    analysis: AnalysisStepSpec
    """The analysis to wait for."""


class SetHeaderRouteSpec(_Model):
    """Pin requests carrying a header to the new revision; with neither field, remove the pin."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel("has(self.name) == has(self.value)",
                     "setHeaderRoute: set both name and value to pin a header, or neither to remove the pin"),
            ]
        }
    )
    name: str | None = Field(default=None, pattern=HEADER_NAME, max_length=128)
    """HTTP header name (case-insensitive match)."""
    value: str | None = Field(default=None, min_length=1, max_length=256)
    """Exact header value."""


class SetMirrorSpec(_Model):
    """Mirror a share of the traffic to the new revision; percent 0 removes the mirror."""

    percent: int = Field(ge=0, le=100)
    """Percent of the managed route's requests copied to NAME-canary (responses discarded); 0 removes it."""


class SetHeaderRouteStep(_Model):
    """From this step on, requests with the header go to the new revision (until changed, promoted or rolled back)."""

    set_header_route: SetHeaderRouteSpec
    """The header pin; ``{}`` removes it."""


class SetMirrorStep(_Model):
    """From this step on, mirror this share of traffic to the new revision (until changed, promoted or rolled back)."""

    set_mirror: SetMirrorSpec
    """The mirror; ``percent: 0`` removes it."""


CHAOS_KINDS = ("PodChaos", "NetworkChaos", "StressChaos", "HTTPChaos", "IOChaos", "TimeChaos")
"""The Chaos Mesh kinds (chaos-mesh.org/v1alpha1) a chaos step can run."""
CHAOS_SET_BY_OPERATOR = ("selector", "duration", "remoteCluster")
"""Fields of a Chaos Mesh spec the operator sets (the canary's pods only, the drill's duration, this cluster)."""


class ChaosExperimentSpec(_Model):
    """A Chaos Mesh experiment's spec as for Chaos Mesh (action, mode, delay, stressors, ...; kept as given), without
    the fields the operator sets: it selects the canary's pods itself and runs the experiment for chaos.duration."""

    model_config = ConfigDict(extra="allow")
    selector: dict[str, Any] | None = None
    """Refused: the operator sets it to the rollout's namespace and the canary pods' labels."""
    duration: str | None = None
    """Refused: the operator sets it from chaos.duration."""
    remote_cluster: str | None = None
    """Refused: a drill runs in this cluster."""
    target: dict[str, Any] | None = None
    """Refused for NetworkChaos: a target selects other pods (use externalTargets for addresses outside)."""

    def fields(self) -> dict[str, Any]:
        """The spec as written (extra fields included), without unset fields."""
        out = self.model_dump(by_alias=True, exclude_none=True)
        assert isinstance(out, dict)
        return out


class ChaosSpec(_Model):
    """A Chaos Mesh experiment against the canary's pods only, for ``duration``, while analysis runs at its
    interval; deleted when the duration is over, or at once on a breach, abort, rollback or promotion."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                *(_cel(f"!has(self.spec) || !has(self.spec.{f})",
                       f"chaos.spec.{f} is set by the operator (the canary's pods only, for chaos.duration, in this "
                       "cluster): remove it", ".spec")
                  for f in CHAOS_SET_BY_OPERATOR),
                _cel("self.kind != 'NetworkChaos' || !has(self.spec) || !has(self.spec.target)",
                     "chaos.spec.target: a NetworkChaos target selects other pods; a drill reaches the canary's "
                     "pods only (use externalTargets for addresses outside the cluster)", ".spec"),
            ]
        }
    )
    kind: Literal["PodChaos", "NetworkChaos", "StressChaos", "HTTPChaos", "IOChaos", "TimeChaos"]
    """The Chaos Mesh kind (chaos-mesh.org/v1alpha1)."""
    spec: ChaosExperimentSpec = Field(default_factory=ChaosExperimentSpec)
    """The experiment's spec as for Chaos Mesh (action, mode, delay, stressors, ...), without selector, duration and
    remoteCluster: the operator sets the selector to the canary's pods and the duration; mode defaults to one."""
    duration: Annotated[Duration, at_least("1s"), schema_at_least("1s")]
    """How long the experiment runs; the step is done when it is over (a restarted operator resumes with the
    remaining time)."""
    approval: ApprovalSpec | None = None
    """Wait for a person (modelrollout.io/approve=TOKEN) before the experiment starts."""


class ChaosStep(_Model):
    """A fault drill: a Chaos Mesh experiment against the canary's pods while analysis watches."""

    chaos: ChaosSpec
    """The drill."""


STEP_KINDS = ("setWeight", "pause", "approval", "analysis", "setHeaderRoute", "setMirror", "chaos")


def _step_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        present = [k for k in STEP_KINDS if k in value]
        return present[0] if len(present) == 1 else None
    for kind, cls in _STEP_CLASSES.items():
        if isinstance(value, cls):
            return kind
    return None


_STEP_CLASSES: dict[str, type[_Model]] = {
    "setWeight": SetWeightStep,
    "pause": PauseStep,
    "approval": ApprovalStep,
    "analysis": AnalysisStep,
    "setHeaderRoute": SetHeaderRouteStep,
    "setMirror": SetMirrorStep,
    "chaos": ChaosStep,
}

Step = Annotated[
    Annotated[SetWeightStep, Tag("setWeight")]
    | Annotated[PauseStep, Tag("pause")]
    | Annotated[ApprovalStep, Tag("approval")]
    | Annotated[AnalysisStep, Tag("analysis")]
    | Annotated[SetHeaderRouteStep, Tag("setHeaderRoute")]
    | Annotated[SetMirrorStep, Tag("setMirror")]
    | Annotated[ChaosStep, Tag("chaos")],
    Discriminator(
        _step_kind,
        custom_error_type="step_kind",
        custom_error_message="a step sets exactly one of setWeight, pause, approval, analysis, setHeaderRoute, "
                             "setMirror, chaos",
    ),
]
"""One step of a canary: exactly one of setWeight, pause, approval, analysis, setHeaderRoute, setMirror, chaos."""


class CanaryStrategy(_Model):
    """Move traffic to the new revision step by step."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "self.steps.filter(s, has(s.setWeight)).map(s, s.setWeight).isSorted()",
                    "spec.strategy.canary.steps: setWeight values must not decrease from one step to the next",
                    ".steps",
                )
            ]
        }
    )
    steps: list[Step] = Field(min_length=1, max_length=64)
    """The steps, in order. After the last one the new revision is promoted."""
    risky_above: int | None = Field(default=None, ge=0, le=100)
    """Any setWeight above this waits for approval first."""
    scale_down_delay: Duration = Field(default="30s", validate_default=True)
    """After promotion, how long the previous stable revision's pods stay up (at the size they had) for an instant
    switch back; then its Deployment is deleted. Not with the Service router: there the previous revision would
    share the root Service, so it is scaled down at the switch."""


class BlueGreenStrategy(_Model):
    """Run the new revision at full size behind the preview Service NAME-canary, judge it, then switch at once."""

    pre_promotion_analysis: AnalysisStepSpec | None = None
    """Passing evaluations of spec.analysis on the preview before the switch (default 1 when spec.analysis is set)."""
    approval: ApprovalSpec | None = None
    """Wait for a person (``modelrollout.io/approve=TOKEN``) before the switch; absent: switch automatically."""
    scale_down_delay: Duration = Field(default="30s", validate_default=True)
    """After the switch, how long the old revision stays at full size for an instant switch-back."""


class Strategy(_Model):
    """How a new revision is released: exactly one of canary or blueGreen."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel("has(self.canary) != has(self.blueGreen)",
                     "spec.strategy: set exactly one of canary or blueGreen"),
            ]
        }
    )
    canary: CanaryStrategy | None = None
    """Canary: traffic moves through the steps."""
    blue_green: BlueGreenStrategy | None = None
    """Blue-green: full-size preview, analysis and an optional approval on it, then one switch of 100%."""


# --------------------------------------------------------------------------- analysis


class PrometheusSource(_Model):
    """Where metrics are read."""

    address: str = Field(pattern=r"^https?://[^\s]+$", max_length=512)
    """Prometheus base URL, e.g. http://prometheus.monitoring:9090."""
    timeout: Annotated[Duration, at_least("1ms"), schema_at_least("1ms")] = Field(default="5s", validate_default=True)
    """Per-query timeout (Prometheus is asked to stop at it too); a query that takes longer is Inconclusive."""


class InconclusivePolicy(_Model):
    """What happens when metrics give no answer (no data, NaN, Prometheus unreachable)."""

    limit: int = Field(default=3, ge=1, le=1000)
    """Inconclusive evaluations in a row before the action applies."""
    action: Literal["pause", "rollback"] = "pause"
    """pause (default) holds and waits; rollback sends all traffic back to stable."""


_QUERY_VARS_CEL = (
    "self.query.findAll('[{][{][^}]*[}][}]').all(v, v in ["
    + ", ".join("'{{" + name + "}}'" for name in QUERY_VARIABLES)
    + "])"
)


class Metric(_Model):
    """A PromQL query and its thresholds, evaluated every analysis interval."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel("has(self.min) || has(self.max)", "a metric needs min, max or both"),
                _cel(
                    "!has(self.min) || !has(self.max) || self.min <= self.max",
                    "min must be less than or equal to max",
                    ".min",
                ),
                _cel(
                    _QUERY_VARS_CEL,
                    "query uses an unknown template variable; allowed: "
                    + ", ".join("{{" + v + "}}" for v in QUERY_VARIABLES),
                    ".query",
                ),
            ]
        }
    )
    name: str = Field(pattern=DNS_LABEL, max_length=63)
    """Metric name, shown in status and events."""
    query: str = Field(min_length=1, max_length=4096)
    """PromQL returning one number; may use {{rollout}}, {{namespace}}, {{revision}}, {{track}}."""
    min: float | None = None
    """The value must be at least this."""
    max: float | None = None
    """The value must be at most this."""
    failure_limit: int = Field(default=0, ge=0, le=100)
    """Failing evaluations tolerated in a row; the next one acts (0: the first failure acts)."""
    on_failure: Literal["rollback", "pause", "alert"] = "rollback"
    """rollback: all traffic to stable; pause: hold for a person; alert: Warning event only."""
    initial_delay: Duration | None = None
    """Do not evaluate this metric until this long after the first traffic step."""


class Analysis(_Model):
    """Metrics judged at every interval from the first traffic step until promotion."""

    interval: Annotated[Duration, at_least("1s"), schema_at_least("1s")] = Field(default="15s", validate_default=True)
    """How often every metric is evaluated (at least 1s)."""
    prometheus: PrometheusSource | None = None
    """The Prometheus to query (default: the operator's --prometheus-address / MODELROLLOUT_PROMETHEUS_ADDRESS)."""
    inconclusive: InconclusivePolicy = Field(default_factory=InconclusivePolicy)
    """What to do when there is no data."""
    metrics: list[Metric] = Field(
        default_factory=list, max_length=20, json_schema_extra={"x-kubernetes-list-type": "map",
                                                         "x-kubernetes-list-map-keys": ["name"]}
    )
    """The metrics; names are unique. May be empty when spec.compatProbe adds the default ones."""
    passes: int = Field(default=1, ge=1, le=100)
    """Evaluations in a row in which every metric passed, each on new samples taken while the canary received
    traffic, that promotion needs. No step list and no promote annotation skips them (see
    modelrollout.io/promote)."""


class CompatProbeMetrics(_Model):
    """Thresholds for the default metrics spec.compatProbe adds to the analysis."""

    min_score: float = Field(default=0.99, ge=0, le=1)
    """api-compatibility: the canary's model_api_compatibility_score must be at least this (else roll back)."""
    max_latency_impact_ms: float | None = Field(default=None, ge=0)
    """latency-impact-ms: p50 latency of the golden set over the stable baseline must stay under this (else pause)."""
    max_shadow_mismatch_rate: float | None = Field(default=None, ge=0, le=1)
    """shadow-mismatch-rate: share of mirrored requests with a different top-1 label (else pause)."""


class CompatProbe(_Model):
    """Inject the compat-probe sidecar into both tracks and judge the canary by its metrics."""

    contract: ObjectRef
    """The ConfigMap holding the contract (golden requests and the expected response shape)."""
    contract_key: str = Field(default="contract.yaml", max_length=253)
    """The key of the contract in the ConfigMap."""
    image: Image = "modelrollout/compat-probe:0.1.0"
    """The sidecar image."""
    target_port: int = Field(default=8080, ge=1, le=65535)
    """The model server's port in the pod."""
    port: int = Field(default=9109, ge=1, le=65535)
    """The port the sidecar serves /metrics on (Prometheus scrapes it; pods are annotated prometheus.io/*)."""
    interval: Duration = Field(default="15s", validate_default=True)
    """How often the contract is replayed."""
    baseline_ms: float | None = Field(default=None, ge=0)
    """Latency baseline of the golden set on the stable revision, for model_compat_latency_impact_ms."""
    metrics: CompatProbeMetrics = Field(default_factory=CompatProbeMetrics)
    """Thresholds of the default metrics (a metric of the same name in spec.analysis.metrics wins)."""


class PrewarmPolicy(_Model):
    """Pre-pull the canary's and stable's images on the nodes before any traffic moves."""

    enabled: bool = False
    """Create the NAME-prewarm DaemonSet and wait (phase Prewarming) until every node pulled the images."""
    keep_revisions: int = Field(default=2, ge=0, le=10)
    """Images of the last N successful revisions stay pre-pulled, so rolling back after promotion pulls nothing."""
    timeout: Duration = Field(default="10m", validate_default=True)
    """How long pre-pulling may take; then the rollout fails before any traffic moves, naming the nodes."""
    command: list[str] = Field(default_factory=lambda: ["true"], min_length=1, max_length=8)
    """Entrypoint each pull container runs (it must exit 0 at once); override for images without `true`."""
    pause_image: Image = "registry.k8s.io/pause:3.10"
    """The image of the one long-running container that keeps the DaemonSet's pods ready."""


class RollbackPolicy(_Model):
    """How the operator goes back to stable."""

    automatic: bool = True
    """true: a breach rolls back at once; false: a breach pauses and waits for approval to roll back."""
    scale_down_delay: Duration = Field(default="30s", validate_default=True)
    """The rolled-back canary is kept this long (for inspection) before it is scaled to zero."""
    prewarm: PrewarmPolicy = Field(default_factory=PrewarmPolicy)
    """Image pre-pull on the nodes, so a rollback never waits for an image."""
    stable_min_ready: int | None = Field(default=None, ge=0, le=1000)
    """Ready stable replicas required before any weight increase (default: all of spec.replicas), so stable can
    take 100% back at once. With dynamicStableScale: the least stable is scaled down to (default 1)."""
    dynamic_stable_scale: bool = False
    """Scale stable down as the canary grows (saves the canary's capacity; ingress/mesh routers only). A rollback
    then first scales stable back up and waits until it is ready before traffic moves back."""


NotifyEvent = Literal[
    "AwaitingApproval", "Paused", "Approved", "SetWeight", "Promoting", "Promoted", "Succeeded", "RollingBack",
    "RolledBack", "AnalysisFailed", "AnalysisAlert", "AnalysisInconclusive", "Superseded", "Failed", "Invalid",
]
"""Rollout events a webhook can receive; each follows the Kubernetes Event of the same transition."""


class WebhookSpec(_Model):
    """An HTTP(S) endpoint that gets a JSON POST for each rollout event (see docs/notifications.md)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "isURL(self.url) && url(self.url).getScheme() in ['http', 'https'] && "
                    "url(self.url).getHostname() != ''",
                    "spec.notify.webhook.url must be an absolute http or https URL",
                    ".url",
                )
            ]
        }
    )
    url: str = Field(pattern=r"^https?://[^\s/?#]+[^\s]*$", max_length=2048)
    """The URL to POST to. Anyone who can read this ModelRollout can read it: put credentials in the operator-wide
    webhook (a Secret) instead. Only scheme://host/path is ever logged."""
    events: list[NotifyEvent] = Field(default_factory=list, max_length=16)
    """The events to send; empty: all of them."""
    timeout: Duration = Field(default="5s", validate_default=True)
    """Per-attempt timeout (at most 60s is used); failed attempts are retried with backoff."""


class Notify(_Model):
    """Where the operator reports rollout events, besides Kubernetes Events."""

    webhook: WebhookSpec | None = None
    """A webhook for this rollout; it replaces the operator-wide one (modelrollout run --notify-webhook)."""


class ModelRolloutSpec(_Model):
    """The desired model server and how to release a new revision of it."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "self.selector.matchLabels.all(k, has(self.template.metadata) && "
                    "has(self.template.metadata.labels) && k in self.template.metadata.labels && "
                    "self.template.metadata.labels[k] == self.selector.matchLabels[k])",
                    "spec.template.metadata.labels must contain every label of spec.selector.matchLabels",
                    ".template.metadata.labels",
                ),
                _cel(
                    "!has(self.strategy.canary) || !self.strategy.canary.steps.exists(s, has(s.analysis)) || "
                    "has(self.analysis)",
                    "an analysis step needs spec.analysis with metrics",
                    ".analysis",
                ),
                _cel(
                    "!has(self.strategy.canary) || !self.strategy.canary.steps.exists(s, has(s.setHeaderRoute)) || "
                    + _has_router("self.traffic", "header"),
                    f"spec.strategy.canary.steps: setHeaderRoute needs {routing.requirement('header')}; "
                    f"{routing.CANNOT['header']}",
                    ".strategy.canary.steps",
                ),
                _cel(
                    "!has(self.strategy.canary) || !self.strategy.canary.steps.exists(s, has(s.setMirror)) || "
                    + _has_router("self.traffic", "mirror"),
                    f"spec.strategy.canary.steps: setMirror needs {routing.requirement('mirror')}; "
                    f"{routing.CANNOT['mirror']}",
                    ".strategy.canary.steps",
                ),
                _cel(
                    "!has(self.strategy.blueGreen) || " + _has_router("self.traffic", "blue_green"),
                    f"spec.strategy.blueGreen needs {routing.requirement('blue_green')}: "
                    f"{routing.CANNOT['blue_green']}",
                    ".strategy.blueGreen",
                ),
                _cel(
                    "!has(self.strategy.blueGreen) || !has(self.strategy.blueGreen.prePromotionAnalysis) || "
                    "has(self.analysis)",
                    "spec.strategy.blueGreen.prePromotionAnalysis needs spec.analysis with metrics",
                    ".strategy.blueGreen.prePromotionAnalysis",
                ),
                _cel(
                    "!has(self.compatProbe) || has(self.analysis)",
                    "spec.compatProbe needs spec.analysis.prometheus to read the probe's metrics",
                    ".compatProbe",
                ),
                _cel(
                    "!has(self.analysis) || size(self.analysis.metrics) > 0 || has(self.compatProbe)",
                    "spec.analysis.metrics needs at least one metric, or spec.compatProbe for the default ones",
                    ".analysis.metrics",
                ),
            ]
        }
    )
    replicas: int = Field(default=1, ge=1, le=1000)
    """Model server replicas: the stable revision's size, and the base of the canary's (ceil(replicas x weight /
    100)). The scale subresource's target: ``kubectl scale``, an HPA or a KEDA ScaledObject write it, before, during
    and after a rollout; a change resizes both tracks at the current weight without a new revision or moving
    traffic. At least 1 (scale to zero is refused). Leave it out of a GitOps manifest an autoscaler owns."""
    selector: LabelSelector
    """Labels shared by the pods of both tracks."""
    template: PodTemplate
    """The model server pod. A change here starts a rollout."""
    model: ModelInfo = Field(default_factory=ModelInfo)
    """What the compatibility checks know about this revision; a change here is a new revision too."""
    traffic: Traffic
    """Where traffic enters and which router shifts it."""
    strategy: Strategy
    """How a new revision is released."""
    analysis: Analysis | None = None
    """Metrics that judge the new revision."""
    compat_probe: CompatProbe | None = None
    """The compatibility-probe sidecar and its default metrics (needs spec.analysis.prometheus)."""
    rollback: RollbackPolicy = Field(default_factory=RollbackPolicy)
    """How to go back to stable."""
    progress_deadline_seconds: int = Field(default=600, ge=10, le=86400)
    """Seconds the new revision's pods may take to become ready before the rollout rolls back."""
    notify: Notify | None = None
    """Webhook notifications of rollout events (default: the operator-wide webhook, if any)."""


# --------------------------------------------------------------------------- status


class Phase(enum.StrEnum):
    """Where a rollout is. See modelrollout.core.phases for the allowed transitions."""

    PENDING = "Pending"
    PREWARMING = "Prewarming"
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    AWAITING_APPROVAL = "AwaitingApproval"
    PROMOTING = "Promoting"
    SUCCEEDED = "Succeeded"
    ROLLING_BACK = "RollingBack"
    ROLLED_BACK = "RolledBack"
    FAILED = "Failed"
    INVALID = "Invalid"


class Verdict(enum.StrEnum):
    """The outcome of one metric evaluation."""

    PASS = "Pass"
    FAIL = "Fail"
    INCONCLUSIVE = "Inconclusive"


class _Status(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", use_attribute_docstrings=True,
        frozen=True,
    )


class ApprovalStatus(_Status):
    """The gate the rollout waits at."""

    step: int
    """Index of the step the gate guards."""
    token: str
    """The token that opens this gate: revision-step."""
    reason: str
    """Why the gate is there."""
    command: str
    """The exact command that approves."""
    since: datetime | None = None
    """When the rollout started waiting."""
    action: Literal["continue", "resume", "rollback"] = "continue"
    """What approving does: continue past the step, resume after a metric paused it, or roll back."""


class MetricStatus(_Status):
    """The last evaluation of a metric."""

    name: str
    """Metric name."""
    value: float | None = None
    """The value read; absent when there was no data."""
    verdict: Verdict
    """Pass, Fail or Inconclusive."""
    failures: int = 0
    """Failing evaluations in a row."""
    message: str | None = None
    """Why, in words."""
    at: datetime | None = None
    """When it was evaluated."""
    sample_at: datetime | None = None
    """When the newest raw sample of the last counted evaluation was scraped (a repeat of it is not counted)."""


class Condition(_Status):
    """A kstatus-style condition (Ready, Progressing, Healthy)."""

    type: str
    """Condition type."""
    status: Literal["True", "False", "Unknown"]
    """True, False or Unknown."""
    reason: str = ""
    """One CamelCase word."""
    message: str = ""
    """Human-readable detail."""
    last_transition_time: datetime | None = None
    """When status last changed."""
    observed_generation: int | None = None
    """The spec generation this condition describes."""


class HistoryEntry(_Status):
    """A revision's outcome or an audited action."""

    revision: str
    """The revision."""
    outcome: str
    """Succeeded, RolledBack, Aborted, Superseded, Approved, ..."""
    at: datetime
    """When."""
    message: str = ""
    """Detail."""
    step: int | None = None
    """The step, for actions taken at a step."""
    token: str | None = None
    """The token used, for approvals."""
    by: str | None = None
    """Who (field manager / user), where the API tells it."""


class DrillMetric(_Status):
    """What one metric did during a drill."""

    name: str
    """Metric name."""
    min: float | None = None
    """The lowest value read during the drill."""
    max: float | None = None
    """The highest value read during the drill."""
    last: float | None = None
    """The last value read during the drill."""
    evaluations: int = 0
    """Evaluations during the drill."""
    failures: int = 0
    """Failing evaluations during the drill."""


class DrillStatus(_Status):
    """The current or last fault drill (chaos step) of the canary revision."""

    name: str
    """The Chaos Mesh experiment's name."""
    kind: str
    """Its kind (PodChaos, NetworkChaos, ...)."""
    step: int
    """Index (0-based) of the chaos step."""
    revision: str
    """The canary revision it ran against."""
    weight: int = 0
    """The canary's weight during the drill."""
    started_at: datetime
    """When the experiment was created (a restarted operator resumes with the remaining time)."""
    duration: str
    """How long it was to run."""
    finished_at: datetime | None = None
    """When it was deleted; absent while it runs."""
    outcome: Literal["Running", "Completed", "Stopped"] = "Running"
    """Running; Completed (ran its duration); Stopped (deleted early: a breach, abort, rollback, promotion)."""
    message: str = ""
    """Why it stopped, when it stopped early."""
    metrics: list[DrillMetric] = Field(default_factory=list)
    """What every metric did while it ran."""
    last_analysis_at: datetime | None = None
    """The last evaluation counted in metrics."""


class ModelSnapshot(_Status):
    """What the stable revision ran with, kept for the next revision's preflight."""

    version: str | None = None
    """Model version."""
    config: dict[str, Any] = Field(default_factory=dict)
    """Model config as rendered (after its configMigrations)."""
    dependencies: dict[str, str] = Field(default_factory=dict)
    """Package versions."""


class PreflightStatus(_Status):
    """The new revision compared with the stable one before any traffic moved."""

    dependency_changes: list[str] = Field(default_factory=list)
    """Every changed, added or removed dependency."""
    dependency_jumps: list[str] = Field(default_factory=list)
    """Major-version changes (these gate the first traffic step)."""
    removed_config_keys: list[str] = Field(default_factory=list)
    """Keys of the stable revision's rendered config (after spec.model.configMigrations; nested keys as dotted
    paths) that the new revision's rendered config lacks (these gate the first traffic step)."""
    renamed_config_keys: list[str] = Field(default_factory=list)
    """Config keys renamed by spec.model.configMigrations (old -> final name)."""
    added_config_keys: list[str] = Field(default_factory=list)
    """Keys of the new revision's rendered config that the stable revision's rendered config lacks."""


class PrewarmStatus(_Status):
    """Progress of the image pre-pull DaemonSet."""

    ready: int = 0
    """Nodes whose pod pulled every image."""
    desired: int = 0
    """Nodes the DaemonSet runs on."""
    images: list[str] = Field(default_factory=list)
    """Images pre-pulled."""
    since: datetime | None = None
    """When pre-pulling for this revision began."""


class RevisionImages(_Status):
    """The images of a revision that succeeded."""

    revision: str
    """Revision."""
    images: list[str]
    """Its container images."""


class ConsumedAnnotation(_Status):
    """A control annotation value the operator has acted on (or refused): the same value put back, by a GitOps
    tool re-applying it from git, is not acted on again for the same revision (no write, no Event)."""

    key: str
    """The annotation, e.g. modelrollout.io/approve."""
    value: str
    """The value consumed."""
    revision: str
    """The revision the spec asked for when it was consumed (a value held over into a new revision is
    re-stamped with it at the revision's start)."""
    at: datetime | None = None
    """When it was consumed."""


class ModelRolloutStatus(_Status):
    """What the operator observed and did. All rollout state lives here, so a restart loses nothing."""

    phase: Phase | None = None
    """Pending, Progressing, Paused, AwaitingApproval, Promoting, Succeeded, RollingBack, RolledBack, Failed,
    Invalid."""
    message: str = ""
    """What is happening, or why it stopped, in words."""
    observed_generation: int | None = None
    """The spec generation last acted on."""
    stable_revision: str | None = None
    """Revision serving as stable."""
    canary_revision: str | None = None
    """Revision being rolled out."""
    current_step: int | None = None
    """Index (0-based) of the step being carried out; equal to the number of steps when all are done."""
    step_progress: str | None = None
    """The current step as people read it and every message names it: 1-based ``N/M`` (``2/5``: the second of
    five steps is being carried out or waited at), ``M/M done`` once all are done; the STEP column."""
    current_weight: int = 0
    """Percent of traffic on the new revision."""
    replicas: int = 0
    """Pods the Deployments of both tracks ask for now (the scale subresource's status.replicas)."""
    selector: str | None = None
    """spec.selector.matchLabels as a label selector (the scale subresource's labelSelectorPath): it selects the
    pods of both tracks, so an HPA averages its metrics over every pod serving traffic."""
    step_started_at: datetime | None = None
    """When the current step began (timed pauses resume with the remaining time)."""
    traffic_started_at: datetime | None = None
    """When the first traffic step of this revision happened (analysis initialDelay counts from here)."""
    approval: ApprovalStatus | None = None
    """The gate the rollout waits at, with the token and the command."""
    analysis: list[MetricStatus] = Field(default_factory=list)
    """The last evaluation of every metric."""
    analysis_passes: int = 0
    """Evaluations in a row in which every metric passed, since the current step began."""
    consecutive_passes: int = 0
    """Evaluations in a row in which every metric passed on new samples while the canary received traffic;
    promotion needs spec.analysis.passes of them."""
    inconclusive_count: int = 0
    """Evaluations in a row that had no answer."""
    last_analysis_at: datetime | None = None
    """When metrics were last evaluated."""
    approved_step: int | None = None
    """The gate at this step was approved; cleared when the step is done."""
    progress_since: datetime | None = None
    """Since when the rollout waits for pods to become ready (the progress deadline counts from here)."""
    rollback_at: datetime | None = None
    """When the last rollback began (the canary is scaled down scaleDownDelay after)."""
    fast_path_revision: str | None = None
    """A revision restored by rollback-to: it is promoted without steps."""
    previous_revision: str | None = None
    """The revision that was stable before the last promotion: its pods stay up until scaleDownAt, so returning to
    it then (rollback-to, or the spec set back) is one write of the NAME-stable Service's selector."""
    scale_down_at: datetime | None = None
    """When the previous revision's Deployment is deleted."""
    rolled_back_revision: str | None = None
    """A revision that was rolled back; it is not retried on its own."""
    prewarm: PrewarmStatus | None = None
    """Image pre-pull progress (nodes ready / desired)."""
    revision_images: list[RevisionImages] = Field(default_factory=list)
    """Images of the last successful revisions (kept pre-pulled per rollback.prewarm.keepRevisions)."""
    stable_model: ModelSnapshot | None = None
    """The stable revision's model (version, config, dependencies)."""
    preflight: PreflightStatus | None = None
    """The canary revision compared with the stable one."""
    drill: DrillStatus | None = None
    """The current or last fault drill (chaos step): the experiment, when, how long, what the metrics did."""
    conditions: list[Condition] = Field(default_factory=list)
    """Ready, Progressing, Healthy."""
    history: list[HistoryEntry] = Field(default_factory=list)
    """Recent revisions with their outcome and audited actions, newest last."""
    consumed_annotations: list[ConsumedAnnotation] = Field(default_factory=list)
    """The last value of each control annotation the operator acted on or refused, and for which revision; an
    identical value seen again for that revision is ignored silently (see docs/gitops.md)."""


class ObjectMeta(BaseModel):
    """The subset of metadata the operator reads."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    name: str
    namespace: str = "default"
    uid: str = ""
    generation: int = 0
    annotations: dict[str, str] = Field(default_factory=dict)
    resource_version: str = Field(default="", alias="resourceVersion")


class ModelRollout(BaseModel):
    """A whole ModelRollout object as read from the apiserver."""

    model_config = ConfigDict(extra="ignore")
    api_version: str = Field(default=f"{GROUP}/{VERSION}", alias="apiVersion")
    kind: str = KIND
    metadata: ObjectMeta
    spec: ModelRolloutSpec
    status: ModelRolloutStatus = Field(default_factory=ModelRolloutStatus)
