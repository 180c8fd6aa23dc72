"""Real model servers for the compat-probe tests: MLServer (+ mlserver-sklearn) and KServe's Python model
server, each from its own venv (hack/modelservers/install.sh, run by hack/bootstrap.sh), serving the iris
revisions that hack/modelservers/train_iris.py trains at test time (iris ships with scikit-learn: nothing is
downloaded). Every server binds 127.0.0.1 on a free port.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from modelrollout.localenv.procs import ManagedProcess, free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
HACK = ROOT / "hack" / "modelservers"
VENVS = Path(os.environ.get("MODELROLLOUT_CACHE", Path.home() / ".cache" / "modelrollout")) / "venvs"
REQUIRE = os.environ.get("MODELROLLOUT_REQUIRE_CLUSTER") == "1"
START_TIMEOUT = 90.0
# Two rows of iris (a setosa, a virginica): the golden input and the live traffic's first batch.
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]


def venv_python(name: str) -> Path:
    python = VENVS / name / "bin" / "python"
    if not python.exists():
        reason = f"{name} is not installed at {VENVS / name} (bash hack/modelservers/install.sh {name})"
        if REQUIRE:
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return python


def train(out: Path) -> dict[str, object]:
    """Train the revisions into ``out/REVISION/model.joblib``; returns the trainer's summary (drift)."""
    done = subprocess.run([str(venv_python("mlserver")), str(HACK / "train_iris.py"), str(out)],
                          check=True, capture_output=True, text=True, timeout=120)
    summary: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return summary


@dataclass
class Served:
    process: ManagedProcess
    url: str

    def stop(self) -> None:
        self.process.stop()


def _ready(process: ManagedProcess, url: str) -> bool:
    import urllib.error
    import urllib.request

    process.check_alive()
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url + "/v2/models/iris/ready", timeout=2) as answer:
            return int(answer.status) == 200
    except (urllib.error.URLError, OSError):
        return False


def start_mlserver(models: Path, revision: str, work: Path) -> Served:
    """MLServer serving ``models/revision`` as model ``iris`` (not awaited: see :func:`await_ready`)."""
    root = work / f"mlserver-{revision}"
    (root / "iris").mkdir(parents=True, exist_ok=True)
    port, grpc, metrics = free_port(), free_port(), free_port()
    (root / "settings.json").write_text(json.dumps({
        "host": "127.0.0.1", "http_port": port, "grpc_port": grpc, "metrics_port": metrics,
        "parallel_workers": 0, "debug": False, "load_models_at_startup": True,
    }))
    (root / "iris" / "model-settings.json").write_text(json.dumps({
        "name": "iris", "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": str(models / revision / "model.joblib"), "version": revision},
    }))
    mlserver = venv_python("mlserver").parent / "mlserver"
    process = ManagedProcess(name=f"mlserver-{revision}", argv=[str(mlserver), "start", str(root)],
                             log=work / f"mlserver-{revision}.log", cwd=root,
                             env={**os.environ, "MLSERVER_METRICS_DIR": str(root / ".metrics")})
    return Served(process=process.start(), url=f"http://127.0.0.1:{port}")


def start_kserve(models: Path, revision: str, work: Path) -> Served:
    """KServe's model server serving ``models/revision`` as model ``iris`` (v1 and v2 protocols)."""
    port = free_port()
    process = ManagedProcess(
        name=f"kserve-{revision}",
        argv=[str(venv_python("kserve")), str(HACK / "kserve_sklearn.py"), "--model_dir", str(models / revision),
              "--model_name", "iris", "--http_port", str(port), "--enable_grpc", "false"],
        log=work / f"kserve-{revision}.log", cwd=work,
        env={**os.environ, "MODELROLLOUT_BIND_HOST": "127.0.0.1"},
    )
    return Served(process=process.start(), url=f"http://127.0.0.1:{port}")


def await_ready(*servers: Served) -> None:
    """Wait (bounded) until every server reports the model ready; a server that exits fails at once."""
    for server in servers:
        wait_until(lambda s=server: _ready(s.process, s.url), START_TIMEOUT, 0.1, what=f"{server.process.name} ready")
