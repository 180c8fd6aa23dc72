"""Render the ModelRollout CRD from the pydantic models in :mod:`modelrollout.api`.

Pydantic emits JSON Schema; Kubernetes wants a *structural* OpenAPI v3 schema. The rewrite:

- ``$ref`` into ``$defs`` is inlined (the field's own description wins over the class docstring);
- ``anyOf: [X, {type: null}]`` (an optional field) becomes ``X``;
- ``oneOf`` of objects (the step union) becomes one object with every alternative's properties and a
  CEL rule that exactly one of them is set;
- ``additionalProperties: true`` (a model with ``extra="allow"`` or ``dict[str, Any]``) becomes
  ``x-kubernetes-preserve-unknown-fields``; ``additionalProperties: false`` is dropped (the apiserver
  prunes or, with kubectl's strict field validation, rejects unknown fields);
- ``title`` and ``default: null`` are dropped.

Pure: returns data; :func:`main` prints YAML.
"""

from __future__ import annotations

import sys
from typing import Any, Literal

import yaml
from pydantic import BaseModel

from modelrollout import api

JSON = dict[str, Any]

PRINTER_COLUMNS: list[JSON] = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase", "description": "Rollout phase"},
    {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas",
     "description": "Desired replicas (spec.replicas; kubectl scale, an HPA or KEDA set it)"},
    {"name": "Weight", "type": "integer", "jsonPath": ".status.currentWeight",
     "description": "Percent of traffic on the new revision"},
    {"name": "Step", "type": "string", "jsonPath": ".status.stepProgress",
     "description": "The step being carried out or waited at, 1-based N/M as in status.message"},
    {"name": "Stable", "type": "string", "jsonPath": ".status.stableRevision", "description": "Stable revision"},
    {"name": "Canary", "type": "string", "jsonPath": ".status.canaryRevision", "description": "Canary revision"},
    {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1,
     "description": "What is happening"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]

SCALE: JSON = {
    "specReplicasPath": ".spec.replicas",
    "statusReplicasPath": ".status.replicas",
    "labelSelectorPath": ".status.selector",
}
"""The scale subresource: ``kubectl scale mro``, an HPA's or a KEDA ScaledObject's scaleTargetRef."""

_DROP = {"title", "discriminator"}


def _resolve(node: Any, defs: JSON) -> Any:
    if isinstance(node, list):
        return [_resolve(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "$ref" in node:
        target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
        merged = {**_resolve(target, defs), **{k: _resolve(v, defs) for k, v in node.items()}}
        return _structural(merged)
    if "allOf" in node and len(node["allOf"]) == 1:
        inner = _resolve(node.pop("allOf")[0], defs)
        return _structural({**inner, **{k: _resolve(v, defs) for k, v in node.items()}})
    out = {k: _resolve(v, defs) for k, v in node.items() if k not in _DROP}
    return _structural(out)


def _structural(node: JSON) -> JSON:
    node = {k: v for k, v in node.items() if k not in _DROP}
    any_of = node.get("anyOf")
    if isinstance(any_of, list):
        not_null = [alt for alt in any_of if alt.get("type") != "null"]
        if len(not_null) == 1 and len(not_null) < len(any_of):
            node.pop("anyOf")
            if node.get("default", 0) is None:
                node.pop("default")
            node = {**not_null[0], **node}
    one_of = node.get("oneOf")
    if isinstance(one_of, list) and all(alt.get("type") == "object" for alt in one_of):
        node.pop("oneOf")
        props: JSON = {}
        for alt in one_of:
            props.update(alt.get("properties", {}))
        keys = list(props)
        rule = "[" + ", ".join(f"has(self.{k})" for k in keys) + "].filter(x, x).size() == 1"
        node.update(
            type="object",
            properties=props,
            **{"x-kubernetes-validations": [
                {"rule": rule, "message": "a step sets exactly one of " + ", ".join(keys)}
            ]},
        )
    extra = node.get("additionalProperties")
    if extra is False:
        node.pop("additionalProperties")
    elif extra is True or extra == {}:
        node.pop("additionalProperties")
        node["type"] = "object"
        node["x-kubernetes-preserve-unknown-fields"] = True
    return node


def schema_of(model: type[BaseModel], *, mode: Literal["validation", "serialization"] = "validation") -> JSON:
    """The structural OpenAPI v3 schema of one pydantic model."""
    raw = model.model_json_schema(by_alias=True, mode=mode)
    defs = raw.pop("$defs", {})
    resolved = _resolve(raw, defs)
    assert isinstance(resolved, dict)
    return resolved


def crd() -> JSON:
    """The whole CustomResourceDefinition as a dict."""
    spec_schema = schema_of(api.ModelRolloutSpec)
    status_schema = schema_of(api.ModelRolloutStatus, mode="serialization")
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{api.PLURAL}.{api.GROUP}",
            "labels": {"app.kubernetes.io/name": "modelrollout", "app.kubernetes.io/part-of": "modelrollout"},
        },
        "spec": {
            "group": api.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": api.KIND,
                "listKind": f"{api.KIND}List",
                "plural": api.PLURAL,
                "singular": api.SINGULAR,
                "shortNames": list(api.SHORT_NAMES),
                "categories": list(api.CATEGORIES),
            },
            "versions": [
                {
                    "name": api.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}, "scale": SCALE},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "ModelRollout releases a new revision of a model server step by "
                            "step, judges it by Prometheus metrics, and rolls back on a breach.",
                            "required": ["spec"],
                            "x-kubernetes-validations": [{
                                "rule": "self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$') && "
                                        "size(self.metadata.name) <= 56",
                                "message": "metadata.name must be a DNS label of at most 56 characters (the "
                                           "operator derives NAME-stable, NAME-canary and NAME-prewarm from it)",
                            }],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


class _Dumper(yaml.SafeDumper):
    pass


def _str_presenter(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str_presenter)


def render() -> str:
    """The CRD as YAML, exactly as committed in crds/."""
    header = "# Generated by `modelrollout crd` from operator/modelrollout/api.py. Do not edit.\n"
    return header + yaml.dump(crd(), Dumper=_Dumper, sort_keys=False, width=100)


def main() -> int:
    sys.stdout.write(render())
    return 0
