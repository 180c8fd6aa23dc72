"""Checks the CRD schema cannot make, as messages that name the field. Pure."""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError

from modelrollout import api
from modelrollout.core import routing
from modelrollout.core.chaos import problem as chaos_problem
from modelrollout.core.compat import effective
from modelrollout.core.queries import check_template
from modelrollout.core.steps import first_traffic_step, mirrors, pins_header, steps_of
from modelrollout.imageref import problem as image_problem

LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                       r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")


def parse_error(exc: ValidationError) -> str:
    """A pydantic error as ``spec.a.b: message; ...``."""
    parts = []
    for err in exc.errors()[:5]:
        loc = ""
        previous: object = None
        for item in err["loc"]:
            if str(item).startswith("function-") or item == previous:  # union tags repeat the step kind
                previous = item
                continue
            loc += f"[{item}]" if isinstance(item, int) else f".{item}" if loc else str(item)
            previous = item
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def parse_spec(raw: Any) -> tuple[api.ModelRolloutSpec | None, str | None]:
    """The spec, or the reason it is invalid."""
    try:
        spec = api.ModelRolloutSpec.model_validate(raw)
    except ValidationError as exc:
        return None, "spec." + parse_error(exc)
    problem = validate(spec)
    return effective(spec), problem


def validate(spec: api.ModelRolloutSpec) -> str | None:
    """What is wrong with a spec that the schema accepted, naming the field; None when nothing is."""
    if spec.analysis is not None:
        for i, metric in enumerate(spec.analysis.metrics):
            problem = check_template(metric.query)
            if problem:
                return f"spec.analysis.metrics[{i}].query ({metric.name}): {problem}"
    problem = _images(spec) or _migrations(spec.model.config_migrations)
    if problem:
        return problem
    for key in spec.selector.match_labels:
        if key.startswith("modelrollout.io/"):
            return f"spec.selector.matchLabels: {key} is set by the operator; use your own labels"
        if not LABEL_KEY.match(key):
            return f"spec.selector.matchLabels: {key!r} is not a valid label key"
    labels = spec.template.metadata.labels
    for key, value in spec.selector.match_labels.items():
        if labels.get(key) != value:
            return f"spec.template.metadata.labels: must contain {key}={value} from spec.selector.matchLabels"
    problem = _router_features(spec.traffic) or _strategy(spec) or chaos_problem(spec)
    if problem:
        return problem
    if any(isinstance(s, api.AnalysisStep) for s in steps_of(spec)) and spec.analysis is None:
        return "spec.strategy.canary.steps: an analysis step needs spec.analysis"
    if spec.analysis is not None and not spec.analysis.metrics and spec.compat_probe is None:
        return "spec.analysis.metrics: at least one metric, or spec.compatProbe for the default ones"
    if spec.compat_probe is not None and spec.analysis is None:
        return "spec.compatProbe: needs spec.analysis.prometheus to read the probe's metrics"
    if spec.analysis is not None and spec.strategy.canary is not None and first_traffic_step(spec) is None:
        return ("spec.strategy.canary.steps: analysis is configured but no step sends traffic to the new revision "
                "(a setWeight above 0, a header route or a mirror), so promotion could never have evidence")
    return None


def _migrations(rules: list[api.ConfigMigration]) -> str | None:
    """One rule per old key (the CRD's list-map, for objects it did not check) and no rename cycle."""
    rename: dict[str, str] = {}
    for i, rule in enumerate(rules):
        if rule.from_ in rename:
            return f"spec.model.configMigrations[{i}]: a second rule for {rule.from_!r}"
        rename[rule.from_] = rule.to
    for start in rename:
        chain = [start]
        while chain[-1] in rename:
            chain.append(rename[chain[-1]])
            if chain[-1] in chain[:-1]:
                return f"spec.model.configMigrations: the rules {' -> '.join(chain)} form a cycle"
    return None


def _images(spec: api.ModelRolloutSpec) -> str | None:
    """Every image a kubelet would be asked to pull is a valid reference (the CRD's pattern, for objects it did
    not check, and the 255-character limit on the name, which the pattern does not express)."""
    images = [(f"spec.template.spec.containers[{i}].image", f"container {c.name}", c.image)
              for i, c in enumerate(spec.template.spec.containers)]
    init = (spec.template.spec.model_extra or {}).get("initContainers")  # kept as given: no pattern in the CRD
    for i, c in enumerate(init if isinstance(init, list) else []):
        c = c if isinstance(c, dict) else {}
        images.append((f"spec.template.spec.initContainers[{i}].image", f"init container {c.get('name')}",
                       str(c.get("image") or "")))
    if spec.compat_probe is not None:
        images.append(("spec.compatProbe.image", "the compat-probe sidecar", spec.compat_probe.image))
    images.append(("spec.rollback.prewarm.pauseImage", "the pre-pull DaemonSet", spec.rollback.prewarm.pause_image))
    for field, owner, image in images:
        why = image_problem(image)
        if why:
            shown = image if len(image) <= 100 else image[:97] + "..."
            return f"{field} ({owner}): {shown!r} is not an image a kubelet can pull: {why}"
    return None


def _strategy(spec: api.ModelRolloutSpec) -> str | None:
    """Exactly one strategy, and steps the router can carry out (the CRD's CEL rules, for objects it did not
    check)."""
    strategy, router = spec.strategy, routing.selected(spec.traffic)
    if (strategy.canary is None) == (strategy.blue_green is None):
        return "spec.strategy: set exactly one of canary or blueGreen"
    if strategy.blue_green is not None:
        if not router.blue_green:
            return (f"spec.strategy.blueGreen: needs {routing.requirement('blue_green')}; "
                    f"{routing.CANNOT['blue_green']}")
        if strategy.blue_green.pre_promotion_analysis is not None and spec.analysis is None:
            return "spec.strategy.blueGreen.prePromotionAnalysis: needs spec.analysis with metrics"
        return None
    if pins_header(spec) and not router.header:
        return f"spec.strategy.canary.steps: setHeaderRoute needs {routing.NEEDS['header']}"
    if mirrors(spec) and not router.mirror:
        return (f"spec.strategy.canary.steps: setMirror needs {routing.requirement('mirror', '')}; "
                f"{routing.CANNOT['mirror']}")
    return None


def _router_features(traffic: api.Traffic) -> str | None:
    """One router at most, and only the features it has (the CRD's CEL rules, for objects it did not check)."""
    named = routing.named(traffic)
    if len(named) > 1:
        return (f"spec.traffic: set at most one router ({routing.listed(routing.fields())}), "
                f"not {' and '.join(str(k.field) for k in named)}")
    router = routing.selected(traffic)
    if traffic.header_route is not None and not router.header:
        return f"spec.traffic.headerRoute: {routing.CANNOT['header']} by header"
    if traffic.mirror is not None and not router.mirror:
        return f"spec.traffic.mirror: needs {routing.requirement('mirror', '')}; {routing.CANNOT['mirror']}"
    return None
