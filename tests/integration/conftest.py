"""Fixtures for tests that run the real operator against the local control plane."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol, TypeVar

import pytest

from devenv.localenv.controlplane import ControlPlane, ControlPlaneError, built
from devenv.localenv.operatorproc import operator_process
from devenv.localenv.procs import ManagedProcess
from modelrollout.crdgen import render

from ..conftest import _unavailable
from .kube import Kubectl


def built_or_unavailable(name: str, what: str) -> Path:
    """hack/NAME/build.sh's bin dir (built on first use); when it cannot be built, the test is skipped (failed under
    MODELROLLOUT_REQUIRE_CLUSTER=1) with ``what`` and the build's error."""
    try:
        return built(name)
    except ControlPlaneError as e:
        _unavailable(f"{what} unavailable: {e}")


class _Controller(Protocol):
    def start(self) -> object: ...
    def wait_ready(self) -> None: ...
    def stop(self) -> None: ...
    def logs(self) -> str: ...


C = TypeVar("C", bound=_Controller)


@contextmanager
def running(controller: C) -> Iterator[C]:
    """``controller`` (KEDA, Flux, Chaos Mesh) started and ready for the block; afterwards stopped, its logs
    printed (also when it failed to start)."""
    try:
        controller.start()
        controller.wait_ready()
        yield controller
    finally:
        controller.stop()
        print(controller.logs())


def apply_crd(cp: ControlPlane) -> None:
    """The ModelRollout CRD applied and Established (kubectl wait fails at once while the CRD has no status yet:
    it is asked again)."""
    cp.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=render())
    cp.wait_established("modelrollouts.modelrollout.io")


@pytest.fixture(scope="session")
def crd(control_plane: ControlPlane) -> ControlPlane:
    """The ModelRollout CRD applied and established."""
    apply_crd(control_plane)
    return control_plane


CRDS = Path(__file__).resolve().parents[1] / "data" / "crds"


@pytest.fixture(scope="module")
def route_crds(crd: ControlPlane) -> ControlPlane:
    """The upstream HTTPRoute and VirtualService CRDs, applied once and established (cluster-wide: a module that
    uses them must run after test_routers_crds_missing.py, which needs a control plane without them)."""
    crd.apply_crds(CRDS)
    return crd


CHAOS_CRDS = Path(__file__).resolve().parents[1] / "data" / "chaos-crds" / "crd.yaml"


@pytest.fixture(scope="module")
def chaos_crds(crd: ControlPlane) -> ControlPlane:
    """Chaos Mesh's CRDs (tests/data/chaos-crds; no Chaos Mesh controller runs: the experiments just exist), applied
    once and established (cluster-wide: the missing-CRD test of test_chaos_drills.py runs before it)."""
    crd.apply_crds(CHAOS_CRDS)
    return crd


@pytest.fixture
def k(crd: ControlPlane, namespace: str) -> Kubectl:
    """kubectl bound to the test's namespace, with helpers that wait on conditions."""
    return Kubectl(crd, namespace)


@contextmanager
def running_operator(cp: ControlPlane, namespace: str, log: Path, **env: str) -> Iterator[ManagedProcess]:
    """The operator watching ``namespace`` as a child process (restartable), ``env`` added to its environment;
    stopped afterwards, its log tail printed for a failing test's report."""
    proc = operator_process(cp.kubeconfig, log, namespaces=[namespace])
    if env:
        proc.env = {**(proc.env or {}), **env}
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
        print(f"--- operator log tail ({proc.log})\n{proc.log_tail(60)}")


@pytest.fixture
def operator(crd: ControlPlane, namespace: str, tmp_path: Path) -> Iterator[ManagedProcess]:
    """The operator, watching the test's namespace only, as a child process (restartable)."""
    with running_operator(crd, namespace, tmp_path / "operator.log") as proc:
        yield proc
