"""The bad-input corpus in tests/data/invalid is well-formed (the integration test applies it)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

CORPUS = Path(__file__).resolve().parents[1] / "data" / "invalid"
SUPPORT = CORPUS / "support"
FILES = sorted(CORPUS.glob("*.yaml"))
NAME = re.compile(r"^(\d{2,3})-[a-z0-9]+(-[a-z0-9]+)*\.yaml$")
KEYED = re.compile(r"^#\s*([A-Za-z]+):\s*(.*)$")


def header(path: Path) -> list[tuple[str, str]]:
    """The ``# key: value`` lines at the top of a file, in order (free-text comment lines skipped)."""
    out = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        match = KEYED.match(line)
        if match:
            out.append((match.group(1), match.group(2).strip()))
    return out


def test_corpus_is_big_enough() -> None:
    assert len(FILES) >= 40, len(FILES)
    kinds = {dict(header(p))["expect"] for p in FILES}
    assert kinds == {"rejected", "invalid"}


def test_file_names_and_numbers_are_unique() -> None:
    assert all(NAME.match(p.name) for p in FILES), [p.name for p in FILES if not NAME.match(p.name)]
    numbers = [int(p.name.split("-", 1)[0]) for p in FILES]
    slugs = [p.name.split("-", 1)[1] for p in FILES]
    assert len(set(numbers)) == len(numbers)
    assert len(set(slugs)) == len(slugs)


def test_object_names_are_unique() -> None:
    # one operator and one namespace serve the whole corpus: cases must not share a ModelRollout name
    names = [next(d for d in yaml.safe_load_all(p.read_text()) if d)["metadata"]["name"] for p in FILES]
    dupes = sorted({n for n in names if names.count(n) > 1})
    assert not dupes, dupes


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_header(path: Path) -> None:
    keyed = header(path)
    assert [k for k, _ in keyed[:2]] == ["expect", "message"], f"{path.name}: header must start with expect, message"
    assert all(k == "also" for k, _ in keyed[2:]), f"{path.name}: unknown header key in {keyed[2:]}"
    head = dict(keyed[:2])
    assert head["expect"] in ("rejected", "invalid")
    assert head["message"], "empty message"
    assert re.search(r"spec\.|metadata\.|unknown field", head["message"]), "the message should name the field"
    for _, also in keyed[2:]:
        assert (SUPPORT / also).is_file(), f"{path.name}: support file {also} missing"
        for doc in yaml.safe_load_all((SUPPORT / also).read_text()):
            assert doc is None or doc["kind"] in ("Service", "Ingress"), f"{also}: {doc['kind']}"
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert len(docs) == 1, "one case per file"
    assert docs[0].get("kind") == "ModelRollout"
    assert docs[0].get("apiVersion") == "modelrollout.io/v1alpha1"


def test_every_support_file_is_used() -> None:
    used = {v for p in FILES for k, v in header(p) if k == "also"}
    assert used == {p.name for p in SUPPORT.glob("*.yaml")}
