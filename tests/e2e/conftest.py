"""e2e: the same scenarios against a real cluster from KUBECONFIG (`make e2e` makes one with kind).

By default the operator runs as a local process against that cluster. `make e2e` installs it with the Helm
chart from images it built and loaded into kind, and sets ``MODELROLLOUT_E2E_OPERATOR=installed``: the tests
then use that in-cluster operator. Without a reachable cluster every test here is skipped and says why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devenv.localenv.operatorproc import operator_process
from devenv.localenv.procs import ManagedProcess
from modelrollout.crdgen import render


def _kubectl() -> str | None:
    return os.environ.get("KUBECTL") or shutil.which("kubectl")


@pytest.fixture(scope="session")
def cluster() -> str:
    """The kubeconfig of a reachable cluster, or skip."""
    kubeconfig = os.environ.get("KUBECONFIG")
    if not kubeconfig or not Path(kubeconfig).exists():
        pytest.skip("e2e: no cluster (set KUBECONFIG, or run `make e2e` where Docker runs kind)")
    kubectl = _kubectl()
    if kubectl is None:
        pytest.skip("e2e: kubectl not found on PATH (or set KUBECTL)")
    res = subprocess.run([kubectl, "version", "--request-timeout=5s"], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        pytest.skip(f"e2e: cluster in {kubeconfig} is not reachable: {res.stderr.strip()[:200]}")
    subprocess.run([kubectl, "apply", "--server-side", "--force-conflicts", "-f", "-"], input=render(), text=True,
                   check=True, capture_output=True)
    return kubeconfig


@pytest.fixture
def e2e_namespace(cluster: str) -> Iterator[str]:
    kubectl = _kubectl()
    assert kubectl is not None
    name = f"mro-e2e-{uuid.uuid4().hex[:6]}"
    subprocess.run([kubectl, "create", "namespace", name], check=True, capture_output=True)
    try:
        yield name
    finally:
        subprocess.run([kubectl, "delete", "namespace", name, "--wait=false"], check=False, capture_output=True)


@pytest.fixture
def e2e_operator(cluster: str, e2e_namespace: str, tmp_path: Path) -> Iterator[ManagedProcess | None]:
    if os.environ.get("MODELROLLOUT_E2E_OPERATOR") == "installed":
        yield None  # the chart's operator (make e2e) watches every namespace
        return
    proc = operator_process(Path(cluster), tmp_path / "operator.log", namespaces=[e2e_namespace]).start()
    try:
        yield proc
    finally:
        proc.stop()
