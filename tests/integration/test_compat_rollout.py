"""spec.compatProbe end to end: the sidecar injected into both tracks, its default metrics judged by the
operator, and a shadow mismatch above the threshold pausing the rollout.

The kwok pods run nothing, so the sidecar and the model servers run here as real processes standing in
for the pods' containers: a reference model server per track and a compat-probe in tee mode in front of the
canary, copying live requests to stable and comparing answers; Prometheus scrapes the probe.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from pathlib import Path

from devenv.localenv.procs import ManagedProcess, free_port, port_open, wait_until
from devenv.localenv.prometheus import Prometheus

from .kube import Kubectl, track_deployment
from .manifests import ingress, rollout, service

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = ROOT / "examples" / "compat-contract.yaml"
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def start(tmp: Path, name: str, *args: str) -> tuple[ManagedProcess, int]:
    port = free_port()
    argv = [sys.executable, "-m", *args[:1], *(a.replace("{port}", str(port)) for a in args[1:])]
    proc = ManagedProcess(name=name, argv=argv, log=tmp / f"{name}.log",
                          env={**os.environ, "PYTHONPATH": str(ROOT / "operator")}).start()
    wait_until(lambda: port_open(port), 20, 0.05, what=name)
    return proc, port


def predict(port: int, text: str) -> None:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/predict", data=json.dumps({"text": text}).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with _opener.open(req, timeout=10) as resp:
        resp.read()


def test_injected_probe_and_shadow_mismatch_pauses(
        k: Kubectl, operator: ManagedProcess, prometheus: Prometheus, tmp_path: Path) -> None:
    name = "shadow"
    k.run("create", "configmap", "contract", f"--from-file=contract.yaml={CONTRACT}")
    spec = {
        "traffic": {"service": {"name": name}, "ingress": {"name": name}},
        "compatProbe": {"contract": {"name": "contract"}, "interval": "1s",
                        "metrics": {"maxShadowMismatchRate": 0.05}},
        "analysis": {"interval": "1s", "prometheus": {"address": prometheus.url},
                     "inconclusive": {"limit": 30, "action": "pause"}},
    }
    steps = [{"setWeight": 20}, {"analysis": {"passes": 3}}, {"setWeight": 100}]
    k.apply(service(name) + "\n---\n" + ingress(name, f"{name}-stable"))
    k.apply(rollout(name, steps=steps, **spec))
    k.wait_phase(name, "Succeeded", 90)
    stable = track_deployment(k, name, "stable")
    assert stable is not None
    containers = {c["name"]: c for c in stable["spec"]["template"]["spec"]["containers"]}
    assert set(containers) == {"model", "compat-probe"}
    args = containers["compat-probe"]["args"]
    assert args[args.index("--track") + 1] == "stable"

    k.apply(rollout(name, image="model:2", steps=steps, **spec))
    st = k.wait(name=name, predicate=lambda s: s.get("canaryRevision") is not None, timeout=60)
    revision = st["canaryRevision"]
    procs: list[ManagedProcess] = []
    try:
        p, stable_port = start(tmp_path, "refserver-stable", "compat_probe.refserver", "--host", "127.0.0.1",
                               "--port", "{port}", "--version", "v1")
        procs.append(p)
        p, canary_port = start(tmp_path, "refserver-canary", "compat_probe.refserver", "--host", "127.0.0.1",
                               "--port", "{port}", "--version", "v2-relabel")
        procs.append(p)
        p, probe_port = start(tmp_path, "compat-probe-canary", "compat_probe", "--target",
                              f"http://127.0.0.1:{canary_port}", "--contract", str(CONTRACT), "--interval", "1",
                              "--listen", "127.0.0.1:{port}", "--rollout", name, "--track", "canary",
                              "--revision", revision, "--shadow-target", f"http://127.0.0.1:{stable_port}")
        procs.append(p)
        prometheus.set_targets([(f"127.0.0.1:{probe_port}", {})])
        prometheus.wait_target_up(f"127.0.0.1:{probe_port}", 30)
        for i in range(40):  # live traffic through the canary's tee proxy
            predict(probe_port, f"request number {i}: the service was slow but the answer was right")
        st = k.wait(name=name, predicate=lambda s: s.get("phase") == "Paused" and bool(s.get("approval")),
                    timeout=90)
    finally:
        for p in procs:
            p.stop()
    assert st["approval"]["action"] == "resume"
    assert "shadow-mismatch-rate" in st["approval"]["reason"]
    verdicts = {m["name"]: m["verdict"] for m in st["analysis"]}
    assert verdicts["shadow-mismatch-rate"] == "Fail"
    assert verdicts["api-compatibility"] == "Pass"
    assert st["currentWeight"] == 20 and k.get("ingress", f"{name}-canary") is not None
