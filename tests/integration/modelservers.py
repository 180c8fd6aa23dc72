"""Real model servers for the compat-probe tests (``devenv.localenv.modelservers``): MLServer and
KServe's model server from their own venvs (hack/modelservers/install.sh, run by hack/bootstrap.sh), serving
the iris revisions trained at test time. Every server binds 127.0.0.1 on a free port. Without the venvs the
tests skip with the install command, or fail under MODELROLLOUT_REQUIRE_CLUSTER=1.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from devenv.localenv import modelservers
from devenv.localenv.modelservers import MissingServer, Server
from devenv.localenv.procs import wait_until

ROOT = Path(__file__).resolve().parents[2]
REQUIRE = os.environ.get("MODELROLLOUT_REQUIRE_CLUSTER") == "1"
START_TIMEOUT = 90.0
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

Served = Server


def _missing(exc: MissingServer) -> None:
    if REQUIRE:
        pytest.fail(str(exc), pytrace=False)
    pytest.skip(str(exc))


def train(out: Path) -> dict[str, object]:
    """Train the revisions into ``out/REVISION/model.joblib``; returns the trainer's summary (drift)."""
    try:
        return modelservers.train_iris(out)
    except MissingServer as exc:
        _missing(exc)
        raise


def _start(kind: str, models: Path, revision: str, work: Path) -> Server:
    """``kind`` (mlserver | kserve) serving ``models/revision`` as model ``iris``, started, not awaited."""
    launch = {"mlserver": modelservers.mlserver, "kserve": modelservers.kserve}[kind]
    try:
        server = launch(models, revision, work, work / f"{kind}-{revision}.log")
    except MissingServer as exc:
        _missing(exc)
        raise
    server.process.start()
    return server


def start_mlserver(models: Path, revision: str, work: Path) -> Server:
    """MLServer serving ``models/revision`` as model ``iris`` (started, not awaited: see :func:`await_ready`)."""
    return _start("mlserver", models, revision, work)


def start_kserve(models: Path, revision: str, work: Path) -> Server:
    """KServe's model server serving ``models/revision`` as model ``iris`` (v1 and v2 protocols)."""
    return _start("kserve", models, revision, work)


def _ready(server: Server) -> bool:
    server.process.check_alive()
    try:
        with _OPENER.open(server.url + "/v2/models/iris/ready", timeout=2) as answer:
            return int(answer.status) == 200
    except (urllib.error.URLError, OSError):
        return False


def await_ready(*servers: Server) -> None:
    """Wait (bounded) until every server reports the model ready; a server that exits fails at once."""
    for server in servers:
        wait_until(lambda s=server: _ready(s), START_TIMEOUT, 0.1, what=f"{server.process.name} ready")
