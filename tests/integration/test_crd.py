"""The generated CRD on the real apiserver: the example is accepted, broken objects are rejected by name."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from .kube import Kubectl

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def example() -> dict[str, Any]:
    docs = list(yaml.safe_load_all((EXAMPLES / "chat-nginx.yaml").read_text()))
    return next(d for d in docs if d["kind"] == "ModelRollout")


def mutate(path: str, value: Any) -> dict[str, Any]:
    obj = copy.deepcopy(example())
    node: Any = obj
    keys = path.split(".")
    for key in keys[:-1]:
        node = node[int(key)] if key.isdigit() else node[key]
    last = keys[-1]
    if value is DELETE:
        del node[last]
    elif last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return obj


DELETE = object()

# (case, object, words the apiserver's message must contain)
CASES = [
    ("weight over 100", mutate("spec.strategy.canary.steps.0", {"setWeight": 150}), ["setWeight", "100"]),
    ("negative weight", mutate("spec.strategy.canary.steps.0", {"setWeight": -5}), ["setWeight", "0"]),
    ("decreasing weights", mutate("spec.strategy.canary.steps.2", {"setWeight": 5}), ["must not decrease"]),
    ("empty steps", mutate("spec.strategy.canary.steps", []), ["steps"]),
    ("two kinds in one step", mutate("spec.strategy.canary.steps.0", {"setWeight": 5, "pause": {}}),
     ["exactly one of"]),
    ("unknown step kind", mutate("spec.strategy.canary.steps.0", {"jump": 5}), ["jump"]),
    ("min above max", mutate("spec.analysis.metrics.0", {"name": "x", "query": "up", "min": 2, "max": 1}),
     ["min must be less than or equal to max"]),
    ("metric without bounds", mutate("spec.analysis.metrics.0", {"name": "x", "query": "up"}), ["min, max"]),
    ("bad duration", mutate("spec.analysis.interval", "fifteen seconds"), ["interval"]),
    ("unknown query variable", mutate("spec.analysis.metrics.0.query", "up{pod=\"{{pod}}\"}"),
     ["unknown template variable"]),
    ("header route without a header router", mutate("spec.traffic.ingress", DELETE), ["headerRoute"]),
    ("risky above 100", mutate("spec.strategy.canary.riskyAbove", 101), ["riskyAbove"]),
    ("replicas zero", mutate("spec.replicas", 0), ["replicas"]),
    ("selector not in template labels", mutate("spec.selector.matchLabels", {"app": "other"}),
     ["spec.template.metadata.labels"]),
    ("template without containers", mutate("spec.template.spec.containers", []), ["containers"]),
    ("wrong type", mutate("spec.replicas", "four"), ["replicas"]),
    ("unknown field", mutate("spec.colour", "blue"), ["colour"]),
    ("bad failure action", mutate("spec.analysis.metrics.0.onFailure", "explode"), ["onFailure"]),
    ("analysis step without analysis", mutate("spec.analysis", DELETE), ["analysis"]),
    ("duplicate metric names", mutate("spec.analysis.metrics.1.name", "api-compatibility"), ["metrics"]),
    ("non-DNS service name", mutate("spec.traffic.service.name", "Chat_Service"), ["traffic.service.name"]),
]


def test_example_is_accepted(k: Kubectl) -> None:
    out = k.run("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(example()))
    assert "created" in out or "configured" in out


@pytest.mark.parametrize(("case", "obj", "words"), CASES, ids=[c[0] for c in CASES])
def test_broken_object_is_rejected_naming_the_field(k: Kubectl, case: str, obj: dict[str, Any],
                                                    words: list[str]) -> None:
    res = k.cp.kubectl("-n", k.ns, "apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(obj), check=False)
    assert res.returncode != 0, f"{case}: accepted but should be rejected"
    for word in words:
        assert word in res.stderr, f"{case}: {word!r} not in {res.stderr}"


def test_printer_columns_and_short_name(k: Kubectl) -> None:
    k.apply(yaml.safe_dump(example()))
    out = k.run("get", "mro")
    for column in ("PHASE", "REPLICAS", "WEIGHT", "STEP", "STABLE", "CANARY", "AGE"):
        assert column in out.splitlines()[0]
