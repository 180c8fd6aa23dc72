"""Image references: the distribution/reference grammar with go-digest's digests, in the pure check and in the
pattern the CRD carries (the same regex, so the apiserver refuses what the operator would call Invalid)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from modelrollout import api
from modelrollout.core.validate import parse_spec
from modelrollout.crdgen import crd
from modelrollout.imageref import PATTERN, problem

from .sim import spec_dict

SHA = "0123456789abcdef" * 4

VALID = [
    "model", "model:2", "registry.example/model:1", "registry.example:5000/team/model:v1.2_rc-3",
    "localhost/model", "localhost:5000/model", "Registry.Example/model",  # upper case in the host is fine
    "[::1]:5000/model:1", "10.0.0.1:5000/a/b/c", "a__b/c.d/e-f/g---h:T_AG", f"model@sha256:{SHA}",
    f"registry.example/model:1@sha256:{SHA}", f"model@sha512:{SHA * 2}", f"model@sha384:{SHA}{SHA[:32]}",
    "model:" + "a" * 128, "a/" * 127 + "b",  # a name of 255 characters
]

INVALID = [
    ("registry.example/Model:1", "upper-case"),
    ("MODEL", "upper-case"),
    ("registry.example/model:", "tag is empty"),
    ("model:-1", "tag"),
    ("model:.1", "tag"),
    ("model:" + "a" * 129, "tag"),
    ("model:1:2", "grammar"),
    ("model:tag with space", "whitespace"),
    ("registry.example/model server:1", "whitespace"),
    (" model:1", "whitespace"),
    ("model:1\n", "whitespace"),
    ("model@sha256:abc", "ALGORITHM:HEX"),
    (f"model@sha256:{SHA.upper()}", "64 lower-case hex"),
    (f"model@sha256:{SHA}0", "64 lower-case hex"),
    (f"model@md5:{SHA[:32]}", "not supported"),
    ("model@", "digest"),
    ("registry.example//model", "grammar"),
    ("/model", "grammar"),
    ("model/", "grammar"),
    ("foo___bar", "grammar"),
    ("foo.-bar", "grammar"),
    ("-model", "grammar"),
    ("host:port/model", "grammar"),
    ("modèle:1", "grammar"),
    ("model:ünicode", "tag"),
    ("", "no repository name"),
    (":1", "no repository name"),
    ("a/" * 128 + "b", "more than 255"),
]


@pytest.mark.parametrize("reference", VALID)
def test_valid_references(reference: str) -> None:
    assert problem(reference) is None
    assert re.fullmatch(PATTERN, reference)


@pytest.mark.parametrize(("reference", "words"), INVALID)
def test_invalid_references_say_why(reference: str, words: str) -> None:
    why = problem(reference)
    assert why is not None and words in why, why
    if "more than 255" not in why:  # the pattern cannot count; everything else it refuses as well
        assert not re.fullmatch(PATTERN, reference)


def test_the_crd_carries_the_pattern_on_every_image_field() -> None:
    spec = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    container = spec["template"]["properties"]["spec"]["properties"]["containers"]["items"]["properties"]
    assert container["image"]["pattern"] == PATTERN
    assert spec["compatProbe"]["properties"]["image"]["pattern"] == PATTERN
    assert spec["rollback"]["properties"]["prewarm"]["properties"]["pauseImage"]["pattern"] == PATTERN


def raw_with_images(*images: str, **extra: Any) -> dict[str, Any]:
    raw = spec_dict([{"setWeight": 50}, {"setWeight": 100}], **extra)
    raw["template"]["spec"]["containers"] = [{"name": f"c{i}", "image": image} for i, image in enumerate(images)]
    return raw


def test_validation_names_the_container_and_the_reason() -> None:
    spec, why = parse_spec(raw_with_images("registry.example/model:1", "registry.example/Sidecar:1"))
    assert spec is not None and why is not None
    assert why.startswith("spec.template.spec.containers[1].image (container c1): 'registry.example/Sidecar:1'")
    assert "upper-case" in why
    assert parse_spec(raw_with_images("registry.example/model:1"))[1] is None


def test_validation_checks_the_probe_and_pause_images_too() -> None:
    raw = raw_with_images("model:1", rollback={"prewarm": {"pauseImage": "registry.k8s.io/pause:"}})
    assert "spec.rollback.prewarm.pauseImage" in (parse_spec(raw)[1] or "")
    raw = raw_with_images("model:1", analysis={"metrics": [], "prometheus": {"address": "http://p:9090"}},
                          compatProbe={"contract": {"name": "c"}, "image": f"probe@sha256:{SHA[:-1]}"})
    assert "spec.compatProbe.image" in (parse_spec(raw)[1] or "")


@pytest.mark.parametrize("interval", ["0s", "0ms", "999ms", "0h0m"])
def test_analysis_interval_below_one_second_is_refused(interval: str) -> None:
    raw = spec_dict([{"setWeight": 100}], analysis={"interval": interval, "metrics": [
        {"name": "m", "query": "up", "min": 1}]})
    spec, why = parse_spec(raw)
    assert spec is None and why is not None and why.startswith("spec.analysis.interval:") and "at least 1s" in why
    assert api.Analysis.model_validate({"interval": "1s"}).interval.total_seconds() == 1


def test_the_crd_has_the_interval_minimum_as_a_cel_rule() -> None:
    spec = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    rules = spec["analysis"]["properties"]["interval"]["x-kubernetes-validations"]
    assert rules == [{"rule": "duration(self) >= duration('1s')", "message": "must be at least 1s"}]


def test_validation_checks_init_container_images_kept_as_given() -> None:
    raw = raw_with_images("model:1")
    raw["template"]["spec"]["initContainers"] = [{"name": "ok", "image": "warm:1"},
                                                 {"name": "warm", "image": "registry.example/Warm:1"}]
    why = parse_spec(raw)[1] or ""
    assert why.startswith("spec.template.spec.initContainers[1].image (init container warm)") and "upper-case" in why
    raw["template"]["spec"]["initContainers"] = [{"name": "warm"}]
    assert "no repository name" in (parse_spec(raw)[1] or "")
