"""Shared fixtures: one real local control plane and one real Prometheus per test run.

Both skip with the reason when their binaries are unavailable, unless MODELROLLOUT_REQUIRE_CLUSTER=1 (CI,
``make test``), where that is a failure instead.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from devenv.localenv.controlplane import (
    ControlPlane,
    ControlPlaneError,
    ensure_binaries,
    select_etcd,
    start_control_plane,
)
from devenv.localenv.procs import wait_until
from devenv.localenv.prometheus import PROMETHEUS, Prometheus, start_prometheus

REQUIRE_CLUSTER = os.environ.get("MODELROLLOUT_REQUIRE_CLUSTER") == "1"


def _unavailable(reason: str) -> NoReturn:
    if REQUIRE_CLUSTER:
        pytest.fail(f"{reason} (MODELROLLOUT_REQUIRE_CLUSTER=1)", pytrace=False)
    pytest.skip(reason)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tag tests by the fixtures they use, so `-m 'not integration'` runs the fast ones only."""
    for item in items:
        names = getattr(item, "fixturenames", ())
        if "control_plane" in names or "namespace" in names:
            item.add_marker(pytest.mark.integration)
        if "prometheus" in names:
            item.add_marker(pytest.mark.prometheus)


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """etcd + kube-apiserver + controller-manager + scheduler + kwok (2 fake nodes), started once."""
    try:
        ensure_binaries()
    except ControlPlaneError as e:
        _unavailable(f"local control plane binaries unavailable: {e}")
    try:
        select_etcd()
    except ControlPlaneError as e:
        _unavailable(str(e))
    cp = start_control_plane(tmp_path_factory.mktemp("controlplane"), nodes=2)
    try:
        yield cp
    finally:
        cp.stop()


def _dns_label(text: str, limit: int) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].rstrip("-")


@pytest.fixture
def namespace(control_plane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test (its `default` ServiceAccount exists); deleted afterwards, not awaited."""
    name = f"{_dns_label(request.node.name, 40)}-{uuid.uuid4().hex[:6]}"
    control_plane.kubectl("create", "namespace", name)
    wait_until(
        lambda: control_plane.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode == 0,
        30,
        what=f"ServiceAccount {name}/default",
    )
    try:
        yield name
    finally:
        control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def _prometheus_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    if not os.access(PROMETHEUS, os.X_OK):
        _unavailable(f"prometheus not installed at {PROMETHEUS} (apt-get install prometheus)")
    prom = start_prometheus(tmp_path_factory.mktemp("prometheus"), scrape_interval="1s")
    try:
        yield prom
    finally:
        prom.stop()


@pytest.fixture
def prometheus(_prometheus_session: Prometheus) -> Iterator[Prometheus]:
    """The run's Prometheus (1 s scrape), running and with no targets at the start of each test."""
    prom = _prometheus_session
    prom.start()  # a previous test may have stopped it
    prom.set_targets([])
    try:
        yield prom
    finally:
        prom.start()
        prom.set_targets([])


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]
