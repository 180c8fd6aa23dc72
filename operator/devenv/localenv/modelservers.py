"""Real model servers on 127.0.0.1 for the compat-probe's tests and ``make demo MODEL=mlserver``.

MLServer (+ mlserver-sklearn) and KServe's Python model server live in venvs of their own under
``~/.cache/modelrollout/venvs`` (``hack/modelservers/install.sh``, run by ``hack/bootstrap.sh``): their pins
must not constrain the operator's environment, and they run as separate processes anyway. The models are
iris classifiers trained at run time by ``hack/modelservers/train_iris.py`` (iris ships with scikit-learn;
nothing is downloaded): ``v1``, ``v2`` (drifting), ``v3-labels`` and ``v3-binary`` (breaking).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from devenv.localenv.procs import LOCALHOST, ManagedProcess, free_port

__all__ = ["HACK", "MissingServer", "Server", "kserve", "mlserver", "train_iris", "venv_python", "venvs_root"]

HACK = Path(__file__).resolve().parents[3] / "hack" / "modelservers"


class MissingServer(RuntimeError):
    """The venv of a model server is not installed (the message says how to install it)."""


def venvs_root() -> Path:
    cache = os.environ.get("MODELROLLOUT_CACHE")
    return (Path(cache) if cache else Path.home() / ".cache" / "modelrollout") / "venvs"


def venv_python(name: str) -> Path:
    python = venvs_root() / name / "bin" / "python"
    if not python.exists():
        raise MissingServer(f"{name} is not installed at {python.parent.parent} "
                            f"(bash hack/modelservers/install.sh {name}, or make bootstrap)")
    return python


def train_iris(out: Path, timeout: float = 120.0) -> dict[str, object]:
    """Train the iris revisions into ``out/REVISION/model.joblib``; returns the trainer's summary."""
    done = subprocess.run([str(venv_python("mlserver")), str(HACK / "train_iris.py"), str(out)],
                          check=True, capture_output=True, text=True, timeout=timeout)
    summary: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return summary


@dataclass
class Server:
    """A model server process (not started) and where it answers."""

    process: ManagedProcess
    port: int
    metrics_port: int | None = None

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"


def mlserver(models: Path, revision: str, workdir: Path, log: Path,
             env: Mapping[str, str] | None = None, name: str = "iris") -> Server:
    """MLServer serving ``models/revision/model.joblib`` as model ``name`` (HTTP, gRPC and metrics on free
    loopback ports; no parallel workers)."""
    root = workdir / f"mlserver-{revision}-{free_port()}"
    (root / name).mkdir(parents=True, exist_ok=True)
    port, grpc, metrics = free_port(), free_port(), free_port()
    (root / "settings.json").write_text(json.dumps({
        "host": LOCALHOST, "http_port": port, "grpc_port": grpc, "metrics_port": metrics,
        "parallel_workers": 0, "debug": False, "load_models_at_startup": True,
    }))
    (root / name / "model-settings.json").write_text(json.dumps({
        "name": name, "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": str(models / revision / "model.joblib"), "version": revision},
    }))
    binary = venv_python("mlserver").parent / "mlserver"
    process = ManagedProcess(name=f"mlserver {revision}", argv=[str(binary), "start", str(root)], log=log,
                             cwd=root, env={**(env or os.environ), "MLSERVER_METRICS_DIR": str(root / ".metrics")})
    return Server(process=process, port=port, metrics_port=metrics)


def kserve(models: Path, revision: str, workdir: Path, log: Path,
           env: Mapping[str, str] | None = None, name: str = "iris") -> Server:
    """KServe's model server (v1 and v2 protocols, no gRPC) serving ``models/revision`` as model ``name``."""
    port = free_port()
    process = ManagedProcess(
        name=f"kserve {revision}",
        argv=[str(venv_python("kserve")), str(HACK / "kserve_sklearn.py"), "--model_dir", str(models / revision),
              "--model_name", name, "--http_port", str(port), "--enable_grpc", "false"],
        log=log, cwd=workdir, env={**(env or os.environ), "MODELROLLOUT_BIND_HOST": LOCALHOST},
    )
    return Server(process=process, port=port)
