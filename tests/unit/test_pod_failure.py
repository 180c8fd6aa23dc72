"""workloads.pod_failure: the kubelet's waiting reasons that mean a pod will not start on its own."""

from __future__ import annotations

from typing import Any, cast

import pytest

from modelrollout.kube import Kube
from modelrollout.workloads import pod_failure


class _Pods:
    def __init__(self, *pods: dict[str, Any]) -> None:
        self._pods = list(pods)

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return self._pods


def _pod(reason: str, message: str = "") -> dict[str, Any]:
    waiting = {"reason": reason, **({"message": message} if message else {})}
    return {"metadata": {"name": "m-canary-abc"}, "spec": {"nodeName": "n1"},
            "status": {"containerStatuses": [{"name": "model", "state": {"waiting": waiting}}]}}


@pytest.mark.parametrize("reason", ["ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "CrashLoopBackOff"])
def test_a_failing_reason_is_named_with_the_pod_and_node(reason: str) -> None:
    kube = cast(Kube, _Pods(_pod(reason, "image not present")))
    assert pod_failure(kube, "ns", "m", "canary") == f"{reason} on pod m-canary-abc (node n1): image not present"


def test_a_pod_still_starting_is_no_failure() -> None:
    assert pod_failure(cast(Kube, _Pods(_pod("ContainerCreating"))), "ns", "m", "canary") is None
