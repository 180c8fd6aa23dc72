"""The chart's operator-wide webhook (notify.webhook): a URL, or a Secret read by the kubelet (no Secret RBAC)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .test_packaging import by_kind, helm, one, render, render_fails

__all__ = ["helm"]  # the fixture, used by name


def env_of(docs: list[dict[str, object]]) -> dict[str, object]:
    container = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e for e in container.get("env") or []}


def test_no_webhook_by_default(helm: Path) -> None:
    assert "MODELROLLOUT_NOTIFY_WEBHOOK" not in env_of(render(helm, crds=False))


def test_webhook_url_from_values(helm: Path) -> None:
    env = env_of(render(helm, "--set", "notify.webhook.url=https://hooks.example/x", crds=False))
    assert env["MODELROLLOUT_NOTIFY_WEBHOOK"] == {"name": "MODELROLLOUT_NOTIFY_WEBHOOK",
                                                  "value": "https://hooks.example/x"}


def test_webhook_url_from_a_secret_without_secret_rbac(helm: Path) -> None:
    docs = render(helm, "--set", "notify.webhook.secretKeyRef.name=ops-hook", "--set",
                  "notify.webhook.secretKeyRef.key=webhook", "--set", "notify.webhook.url=https://ignored.example",
                  crds=False)
    env = env_of(docs)
    assert env["MODELROLLOUT_NOTIFY_WEBHOOK"] == {
        "name": "MODELROLLOUT_NOTIFY_WEBHOOK", "valueFrom": {"secretKeyRef": {"name": "ops-hook", "key": "webhook"}}}
    for role in by_kind(docs, "ClusterRole") + by_kind(docs, "Role"):
        for rule in role.get("rules") or []:
            assert "secrets" not in rule.get("resources", []), role["metadata"]["name"]


@pytest.mark.parametrize("bad", ["notify.webhook.url=ftp://x", "notify.webhook.secretKeyRef.name=Not_A_Name",
                                 "notify.webhook.nope=1"])
def test_bad_webhook_values_fail(helm: Path, bad: str) -> None:
    assert "notify" in render_fails(helm, "--set", bad)
