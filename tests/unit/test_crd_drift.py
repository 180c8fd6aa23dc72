from __future__ import annotations

from pathlib import Path

import yaml

from modelrollout.crdgen import crd, render

ROOT = Path(__file__).resolve().parents[2]


def test_committed_crd_matches_the_models() -> None:
    committed = (ROOT / "crds" / "modelrollouts.modelrollout.io.yaml").read_text()
    assert committed == render(), "crds/ is stale: run `make crds`"


def _walk(node: object, path: str = "") -> list[str]:
    bad = []
    if isinstance(node, dict):
        for key in ("$ref", "anyOf", "oneOf", "allOf", "title", "$defs"):
            if key in node and not path.endswith(".properties"):
                bad.append(f"{path}.{key}")
        if node.get("additionalProperties") in (True, False) and "properties" in node:
            bad.append(f"{path}.additionalProperties")
        if "properties" in node and node.get("type") != "object":
            bad.append(f"{path}: properties without type object")
        for key, value in node.items():
            bad += _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            bad += _walk(value, f"{path}[{i}]")
    return bad


def test_schema_is_structural() -> None:
    schema = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert _walk(schema) == []


def test_every_spec_field_has_a_description() -> None:
    schema = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    missing = []

    def visit(node: dict[str, object], path: str) -> None:
        for key, sub in (node.get("properties") or {}).items():  # type: ignore[union-attr]
            if not sub.get("description"):
                missing.append(f"{path}.{key}")
            visit(sub, f"{path}.{key}")
        items = node.get("items")
        if isinstance(items, dict):
            visit(items, path + "[]")

    visit(schema, "spec")
    assert missing == []


def test_examples_parse() -> None:
    from modelrollout.api import ModelRollout

    count = 0
    for path in (ROOT / "examples").glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "ModelRollout":
                ModelRollout.model_validate(doc)
                count += 1
    assert count >= 2
