"""Fixtures for tests that run the real operator against the local control plane."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from modelrollout.crdgen import render
from modelrollout.localenv.controlplane import ControlPlane
from modelrollout.localenv.operatorproc import operator_process
from modelrollout.localenv.procs import ManagedProcess, wait_until

from .kube import Kubectl


@pytest.fixture(scope="session")
def crd(control_plane: ControlPlane) -> ControlPlane:
    """The ModelRollout CRD applied and established."""
    control_plane.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=render())
    wait_until(lambda: control_plane.kubectl("wait", "--for=condition=Established", "crd/modelrollouts.modelrollout.io",
                                             "--timeout=10s", check=False).returncode == 0,
               60, 0.2, what="the ModelRollout CRD Established")
    return control_plane


@pytest.fixture
def k(crd: ControlPlane, namespace: str) -> Kubectl:
    """kubectl bound to the test's namespace, with helpers that wait on conditions."""
    return Kubectl(crd, namespace)


@pytest.fixture
def operator(crd: ControlPlane, namespace: str, tmp_path: Path) -> Iterator[ManagedProcess]:
    """The operator, watching the test's namespace only, as a child process (restartable)."""
    proc = operator_process(crd.kubeconfig, tmp_path / "operator.log", namespaces=[namespace])
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
        print(f"--- operator log tail ({proc.log})\n{proc.log_tail(60)}")
