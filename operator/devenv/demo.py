"""``make demo``: a complete ModelRollout story on a self-contained local environment (no cluster, no Docker).

    python -m devenv.demo [--keep] [--quick] [--workdir DIR] [--model refserver|mlserver]

It starts a real local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok fake nodes),
a real Prometheus (1 s scrape) and the operator, then plays three acts in namespace ``demo`` with
``examples/demo.yaml``:

1. the first release (``chat-server:1.0.0``) becomes stable;
2. an upgrade to a compatible model server (``2.0.0``) moves through the steps, stops at the risky ones
   for approval (the demo runs the approve command the operator prints) and is promoted;
3. an upgrade to a model server that drops a response field (``2.1.0``) is rolled back by the operator on
   its own when the api-compatibility score falls below its threshold.

kwok pods become Ready but run no containers. What would run inside them runs here as local processes on
127.0.0.1, one pair per track: ``compat_probe.refserver`` (the model server) and the ``compat-probe``
sidecar replaying ``examples/compat-contract.yaml`` against it; Prometheus scrapes both, labelled
rollout/track/revision, and the operator reads the sidecar's score from there. With ``--model mlserver``
(``make demo MODEL=mlserver``) the model server is a real MLServer serving iris classifiers trained at
start-up, judged by the open-inference-v2 preset (``examples/compat-contract-iris-v2.yaml``).

Every wait has a deadline; the demo exits non-zero naming the act and what it waited for when one passes.
Everything it started is stopped at the end, on an error and on Ctrl-C (``--keep``: left up until Ctrl-C).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import yaml

from devenv.localenv import modelservers
from devenv.localenv.controlplane import (
    ControlPlane,
    ensure_binaries,
    missing_binaries,
    repo_root,
    start_control_plane,
)
from devenv.localenv.operatorproc import operator_process
from devenv.localenv.procs import (
    LOCALHOST,
    CommandFailed,
    ManagedProcess,
    ProcessDied,
    free_port,
    run,
    terminate_pid,
    wait_until,
)
from devenv.localenv.prometheus import Prometheus, Target, start_prometheus
from modelrollout.crdgen import render

Json = dict[str, Any]

NAMESPACE = "demo"
NAME = "chat"
METRIC = "api-compatibility"
MARKER_ENV = "MODELROLLOUT_DEMO_RUN"
"""Every process the demo starts inherits this variable; the leftover check looks for it."""
REFRESH = 0.5
"""Seconds between two refreshes of the live view (display only; every wait has its own deadline)."""
WEIGHT_ANNOTATION = "nginx.ingress.kubernetes.io/canary-weight"
REVISION_ANNOTATION = "modelrollout.io/revision"

EXAMPLES = repo_root() / "examples"
MANIFEST = EXAMPLES / "demo.yaml"
CONTRACT = EXAMPLES / "compat-contract.yaml"
SOURCE_ROOT = Path(__file__).resolve().parents[1]

DONE_BAD = ("RollingBack", "RolledBack", "Failed", "Invalid")


class DemoFailed(RuntimeError):
    """An act did not reach its expected phase in time, or a process died; the message says which."""


class Interrupted(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C."""


@dataclass(frozen=True)
class Release:
    """One version of the model server: the image tag (also spec.model.version) and what it runs."""

    tag: str
    server: str
    """``compat_probe.refserver --version``: what the image would contain."""
    note: str


V1 = Release("1.0.0", "v1", "the first release")
V2 = Release("2.0.0", "v2-compatible", "adds an optional response field: compatible")
V3 = Release("2.1.0", "v2-drop-field", "drops data.tokens from every answer: breaks clients")


@dataclass(frozen=True)
class Backend:
    """What stands in for the model server: this project's reference server, or a real MLServer."""

    name: str
    label: str  # what the acts call the server ("refserver", "MLServer iris")
    contract: Path
    releases: tuple[Release, Release, Release]


BACKENDS = {
    "refserver": Backend("refserver", "refserver", CONTRACT, (V1, V2, V3)),
    # `make demo MODEL=mlserver`: MLServer's scikit-learn runtime serving iris revisions trained at start-up,
    # judged with the open-inference-v2 preset (needs hack/modelservers/install.sh, run by make bootstrap).
    "mlserver": Backend("mlserver", "MLServer iris", EXAMPLES / "compat-contract-iris-v2.yaml", (
        Release("1.0.0", "v1", "logistic regression on iris, the first release"),
        Release("2.0.0", "v2", "retrained: probabilities drift by < 0.01, outputs unchanged: compatible"),
        Release("2.1.0", "v3-labels", "predict answers class names, a BYTES tensor instead of INT64: breaks clients"),
    )),
}


# ------------------------------------------------------------------------------------------------ output


class Console:
    """Plain lines for logs and pipes; on a terminal also a status line rewritten in place."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self._live = False

    def _clear_live(self) -> None:
        if self._live:
            self.stream.write("\r\033[K")
            self._live = False

    def say(self, text: str = "") -> None:
        self._clear_live()
        self.stream.write(text + "\n")
        self.stream.flush()

    def title(self, text: str) -> None:
        bar = "=" * min(100, max(len(text), 40))
        if self.tty:
            self.say(f"\n\033[1m{text}\033[0m\n{bar}")
        else:
            self.say(f"\n{text}\n{bar}")

    def live(self, text: str) -> None:
        """A transient line (terminal only): replaced by the next say() or live()."""
        if not self.tty:
            return
        width = shutil.get_terminal_size((120, 20)).columns
        self.stream.write("\r\033[K" + text[: max(width - 1, 20)])
        self.stream.flush()
        self._live = True


# ------------------------------------------------------------------------------------------------ snapshot


@dataclass(frozen=True)
class Snapshot:
    """The rollout, the canary Ingress and the Deployments of its stable and canary revisions (by role)."""

    rollout: Json
    canary_ingress: Json | None
    deployments: dict[str, Json]

    @property
    def status(self) -> Json:
        return dict(self.rollout.get("status") or {})

    @property
    def phase(self) -> str:
        return str(self.status.get("phase") or "Pending")

    @property
    def message(self) -> str:
        return str(self.status.get("message") or "")

    @property
    def steps(self) -> int:
        return len(((self.rollout.get("spec") or {}).get("strategy") or {}).get("canary", {}).get("steps") or [])

    @property
    def ingress_weight(self) -> str:
        if self.canary_ingress is None:
            return "-"
        return str((self.canary_ingress["metadata"].get("annotations") or {}).get(WEIGHT_ANNOTATION, "-"))

    def ready(self, track: str) -> int:
        dep = self.deployments.get(track)
        return int(((dep or {}).get("status") or {}).get("readyReplicas") or 0)

    def deployment_revision(self, track: str) -> str | None:
        dep = self.deployments.get(track)
        if dep is None:
            return None
        return (dep["metadata"].get("annotations") or {}).get(REVISION_ANNOTATION)

    def metric(self) -> Json | None:
        return next((m for m in self.status.get("analysis") or [] if m.get("name") == METRIC), None)

    def step_text(self) -> str:
        """The STEP column as ``kubectl get mro`` shows it: status.stepProgress, the step every message names."""
        return str(self.status.get("stepProgress") or "-")

    def metric_text(self) -> str:
        m = self.metric()
        if m is None:
            return "-"
        value = m.get("value")
        shown = "no data" if value is None else f"{float(value):g}"
        return f"{shown} {m.get('verdict', '')}".strip()

    def row(self) -> tuple[str, ...]:
        return (
            self.phase,
            self.step_text(),
            f"{self.status.get('currentWeight', 0)}%",
            self.ingress_weight,
            f"{self.ready('stable')}+{self.ready('canary')}",
            self.metric_text(),
            self.message,
        )


HEADER = ("phase", "step", "weight", "ingress", "pods s+c", METRIC, "message")
WIDTHS = (17, 9, 7, 8, 9, 21)


def format_row(cells: Sequence[str], elapsed: str) -> str:
    fixed = "".join(c.ljust(w) for c, w in zip(cells, WIDTHS, strict=False))
    return f"  {elapsed:>7}  {fixed}{cells[-1]}"


# ------------------------------------------------------------------------------------------------ stand-ins


def child_env() -> dict[str, str]:
    src = str(SOURCE_ROOT)
    path = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path}


@dataclass
class StandIn:
    """What runs inside the pods of one track: a reference model server and its compat-probe sidecar."""

    track: str
    revision: str
    release: Release
    logs: Path
    backend: Backend = BACKENDS["refserver"]
    models: Path | None = None  # backend mlserver: the trained revisions
    server_port: int = field(default_factory=free_port)
    probe_port: int = field(default_factory=free_port)
    metrics_port: int | None = None  # where the model server's /metrics is, when not on server_port
    processes: list[ManagedProcess] = field(default_factory=list)

    @property
    def labels(self) -> dict[str, str]:
        return {"namespace": NAMESPACE, "rollout": NAME, "track": self.track, "revision": self.revision}

    @property
    def server_address(self) -> str:
        return f"{LOCALHOST}:{self.server_port}"

    @property
    def probe_address(self) -> str:
        return f"{LOCALHOST}:{self.probe_port}"

    def start(self) -> StandIn:
        ident = ["--rollout", NAME, "--track", self.track, "--revision", self.revision]
        stem = f"{self.track}-{self.revision}"
        if self.backend.name == "mlserver":
            assert self.models is not None
            real = modelservers.mlserver(self.models, self.release.server, self.logs.parent / "mlserver",
                                         self.logs / f"{stem}-mlserver.log", env=child_env())
            server = real.process
            self.server_port, self.metrics_port = real.port, real.metrics_port
        else:
            server = ManagedProcess(
                f"refserver {self.track} {self.release.server}",
                [sys.executable, "-m", "compat_probe.refserver", "--host", LOCALHOST, "--port",
                 str(self.server_port), "--version", self.release.server, "--score", "nan", *ident],
                self.logs / f"{stem}-refserver.log", env=child_env())
        probe = ManagedProcess(
            f"compat-probe {self.track}",
            [sys.executable, "-m", "compat_probe", "--target", f"http://{self.server_address}",
             "--contract", str(self.backend.contract), "--interval", "1", "--listen", self.probe_address, *ident],
            self.logs / f"{stem}-compat-probe.log", env=child_env())
        for p in (server, probe):
            self.processes.append(p)
            p.start()
        return self

    def targets(self) -> list[Target]:
        metrics = f"{LOCALHOST}:{self.metrics_port}" if self.metrics_port is not None else self.server_address
        return [(metrics, {**self.labels, "component": "model-server"}),
                (self.probe_address, {**self.labels, "component": "compat-probe"})]

    def check_alive(self) -> None:
        for p in self.processes:
            p.check_alive()

    def stop(self) -> None:
        for p in reversed(self.processes):
            p.stop(timeout=10)

    def compatibility(self) -> Json:
        """The sidecar's own report (``GET /probe/compatibility``)."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://{self.probe_address}/probe/compatibility", timeout=5) as resp:
            doc: Json = json.loads(resp.read())
        return doc

    def describe(self) -> str:
        return (f"{self.backend.label} {self.release.server} on {self.server_address} + compat-probe on "
                f"{self.probe_address} "
                f"(track={self.track}, revision={self.revision})")


# ------------------------------------------------------------------------------------------------ the demo


@dataclass
class ActResult:
    act: int
    release: Release
    revision: str
    outcome: str
    detail: str
    seconds: float


@dataclass
class Demo:
    workdir: Path
    out: Console
    timeout_scale: float = 1.0
    backend: Backend = BACKENDS["refserver"]
    models: Path | None = None
    cp: ControlPlane | None = None
    prom: Prometheus | None = None
    operator: ManagedProcess | None = None
    stand_ins: dict[str, StandIn] = field(default_factory=dict)
    retired: list[StandIn] = field(default_factory=list)
    results: list[ActResult] = field(default_factory=list)
    manifest: list[Json] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    # -- environment -----------------------------------------------------------------------------------

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    def kube(self) -> ControlPlane:
        if self.cp is None:
            raise DemoFailed("the control plane is not running")
        return self.cp

    def prometheus(self) -> Prometheus:
        if self.prom is None:
            raise DemoFailed("Prometheus is not running")
        return self.prom

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        return self.kube().kubectl("-n", NAMESPACE, *args, input=input, check=check, timeout=30).stdout

    def setup(self) -> None:
        o = self.out
        o.title("Setting up a local environment (no cluster, no Docker)")
        o.say(f"  work dir: {self.workdir}")
        if self.backend.name == "mlserver":
            t = time.monotonic()
            self.models = self.workdir / "models"
            try:
                summary = modelservers.train_iris(self.models)
            except modelservers.MissingServer as e:
                raise DemoFailed(str(e)) from None
            o.say(f"  MLServer: iris revisions trained in {time.monotonic() - t:.1f}s with scikit-learn "
                  f"(v1 -> v2 drift: {float(summary['v1_v2_max_proba_diff']):.4f} at most)")  # type: ignore[arg-type]
        missing = missing_binaries()
        if missing:
            o.say(f"  building the control-plane binaries {', '.join(missing)} (first run only; takes minutes)")
        bins = ensure_binaries()
        o.say(f"  control-plane binaries: {bins}")
        t = time.monotonic()
        self.cp = start_control_plane(self.workdir / "cluster", nodes=2)
        etcd = self.cp.etcd
        store = f"etcd {etcd.version} (watch cache {'on' if etcd.watch_cache else 'off'})" if etcd else "etcd"
        o.say(f"  control plane up in {time.monotonic() - t:.1f}s: {store}, kube-apiserver {self.cp.server}, "
              "controller-manager, scheduler, kwok with 2 fake nodes")
        self.prom = start_prometheus(self.workdir / "prometheus", scrape_interval="1s")
        o.say(f"  Prometheus {self.prom.url} (1 s scrape)")
        cp = self.cp
        cp.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=render())
        cp.wait_established("modelrollouts.modelrollout.io")
        o.say("  CRD modelrollouts.modelrollout.io applied (generated from the pydantic models)")
        cp.kubectl("create", "namespace", NAMESPACE)
        wait_until(lambda: cp.kubectl("get", "serviceaccount", "default", "-n", NAMESPACE,
                                      check=False).returncode == 0,
                   30 * self.timeout_scale, 0.2, what=f"ServiceAccount {NAMESPACE}/default")
        self.operator = operator_process(cp.kubeconfig, self.logs / "operator.log", namespaces=[NAMESPACE])
        self.operator.start()
        o.say(f"  operator started (pid {self.operator.pid}), watching namespace {NAMESPACE}; "
              f"log: {self.operator.log}")
        o.say("")
        o.say("  What runs where: the Deployments' pods are real Kubernetes objects on kwok fake nodes; they")
        o.say("  become Ready but run no containers. What would run inside them runs here as local processes on")
        o.say(f"  127.0.0.1, one pair per track: {self.backend.label} (the model server) and the compat-probe")
        contract = self.backend.contract.relative_to(repo_root())
        o.say(f"  sidecar replaying {contract} against it. Prometheus scrapes both,")
        o.say("  labelled rollout/track/revision, and the operator reads the sidecar's score from Prometheus.")
        self.manifest = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]

    def processes(self) -> list[ManagedProcess]:
        out: list[ManagedProcess] = []
        if self.operator is not None:
            out.append(self.operator)
        for s in [*self.stand_ins.values(), *self.retired]:
            out.extend(s.processes)
        return out

    def check_alive(self) -> None:
        try:
            if self.cp is not None:
                self.cp.check_alive()
            if self.prom is not None and self.prom.process is not None:
                self.prom.process.check_alive()
            if self.operator is not None:
                self.operator.check_alive()
            for s in self.stand_ins.values():
                s.check_alive()
        except ProcessDied as e:
            raise DemoFailed(str(e)) from None

    def stop(self) -> None:
        """Operator first (no more writes), then the model servers, Prometheus, the control plane."""
        if self.operator is not None:
            self.operator.stop(timeout=15)
        for s in [*self.stand_ins.values(), *self.retired]:
            s.stop()
        if self.prom is not None:
            self.prom.stop()
        if self.cp is not None:
            self.cp.stop()

    # -- stand-ins --------------------------------------------------------------------------------------

    def publish_targets(self) -> None:
        targets: list[Target] = []
        for s in self.stand_ins.values():
            targets.extend(s.targets())
        self.prometheus().set_targets(targets)

    def start_stand_in(self, track: str, revision: str, release: Release) -> StandIn:
        s = StandIn(track, revision, release, self.logs, backend=self.backend, models=self.models).start()
        old = self.stand_ins.get(track)
        if old is not None:
            self.retired.append(old)
        self.stand_ins[track] = s
        self.publish_targets()
        self.out.say(f"  >> {track} pods of revision {revision} are Ready on kwok; standing in for them: "
                     f"{s.describe()}")
        return s

    def retire(self, track: str, why: str = "scaled down") -> None:
        """Stop a track's stand-in (its pods are gone) and wait until Prometheus no longer serves its series.

        A stopped target's next scrape fails and Prometheus marks its series stale; until then the last
        sample still answers queries, and a query that selects only by track would read it for the next
        revision of that track.
        """
        s = self.stand_ins.pop(track, None)
        if s is None:
            return
        self.publish_targets()
        s.stop()
        self.retired.append(s)
        self.out.say(f"  >> {track} revision {s.revision} {why}: stopped {s.describe()}")
        series = f'model_api_compatibility_score{{rollout="{NAME}",track="{s.track}",revision="{s.revision}"}}'
        try:
            self.prometheus().wait_for(series, lambda r: not r, 30 * self.timeout_scale)
        except TimeoutError as e:
            raise DemoFailed(f"Prometheus still serves the stopped {track} revision {s.revision}: {e}") from None

    def wait_scraped(self, s: StandIn, timeout: float = 40) -> None:
        prom = self.prometheus()
        for address, _ in s.targets():

            def up(address: str = address) -> bool:
                return self._up(prom, address)

            try:
                wait_until(up, timeout * self.timeout_scale, 0.2, what=f"Prometheus scraping {address}")
            except TimeoutError as e:
                raise DemoFailed(f"the {s.track} model server of revision {s.revision} is not scraped: {e}") from None

    def _up(self, prom: Prometheus, address: str) -> bool:
        self.check_alive()
        try:
            return prom.query_value(f'up{{job="modelrollout",instance="{address}"}}') == 1.0
        except (OSError, RuntimeError):
            return False

    # -- kubernetes -------------------------------------------------------------------------------------

    def rollout_doc(self, release: Release) -> Json:
        doc = copy.deepcopy(next(d for d in self.manifest if d.get("kind") == "ModelRollout"))
        spec = doc["spec"]
        container = spec["template"]["spec"]["containers"][0]
        repo = container["image"].rsplit(":", 1)[0]
        container["image"] = f"{repo}:{release.tag}"
        spec.setdefault("model", {})["version"] = release.tag
        spec["analysis"]["prometheus"]["address"] = self.prometheus().url
        return doc

    def apply(self, docs: Iterable[Json]) -> None:
        text = yaml.safe_dump_all(list(docs), sort_keys=False)
        for line in self.kubectl("apply", "-f", "-", input=text).splitlines():
            self.out.say(f"  $ kubectl apply -n {NAMESPACE}: {line}")

    def snapshot(self) -> Snapshot:
        raw = self.kubectl("get", f"modelrollout/{NAME}", f"ingress/{NAME}-canary", "--ignore-not-found", "-o", "json")
        doc = json.loads(raw) if raw.strip() else {"items": []}
        items = doc.get("items", [doc]) if doc.get("kind") == "List" else [doc]
        deps = json.loads(self.kubectl("get", "deployment", "-l", f"modelrollout.io/rollout={NAME}", "-o", "json"))
        items += deps.get("items") or []
        rollout: Json | None = None
        ingress: Json | None = None
        deployments: dict[str, Json] = {}
        for item in items:
            kind, name = item.get("kind"), item["metadata"]["name"]
            if kind == "ModelRollout":
                rollout = item
            elif kind == "Ingress":
                ingress = item
            elif kind == "Deployment":
                deployments[(item["metadata"].get("annotations") or {}).get(REVISION_ANNOTATION, name)] = item
        if rollout is None:
            raise DemoFailed(f"ModelRollout {NAMESPACE}/{NAME} not found")
        status = rollout.get("status") or {}
        stable = status.get("stableRevision") or next(iter(deployments), None)  # the first release: the only one
        roles = (("stable", stable), ("canary", status.get("canaryRevision")))
        tracks = {track: deployments[rev] for track, rev in roles if rev in deployments}
        return Snapshot(rollout, ingress, tracks)

    def watch(self, act: int, what: str, done: Callable[[Snapshot], bool], *, timeout: float,
              fail: Callable[[Snapshot], str | None] = lambda s: None,
              on_tick: Callable[[Snapshot], None] = lambda s: None) -> Snapshot:
        """Show the rollout live until ``done``; DemoFailed when ``fail`` names a reason or time runs out."""
        o = self.out
        o.say(format_row(HEADER, "time"))
        start = time.monotonic()
        deadline = start + timeout * self.timeout_scale
        last_row: tuple[str, ...] = ()
        snap: Snapshot | None = None
        while True:
            self.check_alive()
            try:
                snap = self.snapshot()
            except CommandFailed as e:  # a slow apiserver answer: try again on the next tick
                o.live(f"  kubectl get failed ({e.returncode}); retrying")
            else:
                elapsed = f"+{time.monotonic() - start:.1f}s"
                row = snap.row()
                if row != last_row:
                    o.say(format_row(row, elapsed))
                    last_row = row
                else:
                    o.live(format_row(row, elapsed))
                on_tick(snap)
                if done(snap):
                    return snap
                reason = fail(snap)
                if reason is not None:
                    raise DemoFailed(f"act {act}: {reason}")
            if time.monotonic() >= deadline:
                last = f"phase {snap.phase}: {snap.message}" if snap is not None else "no status read"
                raise DemoFailed(f"act {act}: {what} not reached within {timeout * self.timeout_scale:.0f}s; "
                                 f"last seen {last}")
            time.sleep(REFRESH)  # display refresh only: the deadline above bounds the wait

    def approve(self, command: str) -> None:
        """Run the approve command exactly as status.approval.command prints it, with the real kubectl."""
        argv = shlex.split(command)
        if argv and argv[0] == "kubectl":
            argv[0] = str(self.kube().bin_dir / "kubectl")
        self.out.say(f"  $ {command}")
        res = run(argv, env=self.kube().env(), timeout=30)
        for line in (res.stdout or "").splitlines():
            self.out.say(f"    {line}")

    def warning_events(self, since: datetime) -> list[Json]:
        raw = self.kubectl("get", "events", "-o", "json", "--field-selector",
                           f"involvedObject.kind=ModelRollout,involvedObject.name={NAME},type=Warning")
        out = []
        for ev in json.loads(raw).get("items") or []:
            stamp = ev.get("lastTimestamp") or ev.get("eventTime") or ev["metadata"].get("creationTimestamp")
            if stamp and datetime.fromisoformat(str(stamp).replace("Z", "+00:00")) >= since:
                out.append(ev)
        return out

    # -- the acts ---------------------------------------------------------------------------------------

    @property
    def v1(self) -> Release:
        return self.backend.releases[0]

    @property
    def v2(self) -> Release:
        return self.backend.releases[1]

    @property
    def v3(self) -> Release:
        return self.backend.releases[2]

    def act1(self) -> str:
        o = self.out
        o.title(f"Act 1: first release, chat-server:{self.v1.tag} ({self.backend.label} {self.v1.server}) "
                "becomes stable")
        t = time.monotonic()
        docs = [self.rollout_doc(self.v1) if d.get("kind") == "ModelRollout" else d for d in self.manifest]
        self.apply(docs)

        def on_tick(s: Snapshot) -> None:
            rev = s.deployment_revision("stable")
            if rev is not None and "stable" not in self.stand_ins and s.ready("stable") > 0:
                self.start_stand_in("stable", rev, self.v1)

        snap = self.watch(1, "phase Succeeded",
                          lambda s: s.phase == "Succeeded" and bool(s.status.get("stableRevision")),
                          timeout=120, fail=lambda s: f"phase {s.phase}: {s.message}" if s.phase in DONE_BAD else None,
                          on_tick=on_tick)
        stable = str(snap.status["stableRevision"])
        s = self.stand_ins.get("stable")
        if s is None or s.revision != stable:
            s = self.start_stand_in("stable", stable, self.v1)
        self.wait_scraped(s)
        query = f'min(model_api_compatibility_score{{rollout="{NAME}",track="stable"}})'
        try:
            result = self.prometheus().wait_for(query, lambda r: len(r) == 1 and float(r[0]["value"][1]) == 1.0,
                                                30 * self.timeout_scale)
        except TimeoutError as e:
            raise DemoFailed(f"act 1: the stable compat-probe's score never reached 1 in Prometheus: {e}") from None
        o.say(f"  Prometheus: {query} = {float(result[0]['value'][1]):g} "
              f"(the sidecar replays {len(s.compatibility().get('results') or {})} golden requests every second)")
        o.say(f"  act 1: revision {stable} is stable and serves 100% ({snap.ready('stable')} pods)")
        self.results.append(ActResult(1, self.v1, stable, "Succeeded", "first release, stable at 100%",
                                      time.monotonic() - t))
        return stable

    def _canary_ticker(self, stable: str, release: Release) -> Callable[[Snapshot], None]:
        def on_tick(s: Snapshot) -> None:
            rev = s.status.get("canaryRevision")
            current = self.stand_ins.get("canary")
            if rev and rev != stable and (current is None or current.revision != rev) and s.ready("canary") > 0:
                self.start_stand_in("canary", str(rev), release)
        return on_tick

    def act2(self, stable: str) -> str:
        o = self.out
        o.title(f"Act 2: upgrade to chat-server:{self.v2.tag} ({self.backend.label} {self.v2.server}: {self.v2.note})")
        t = time.monotonic()
        o.say(f"  changing spec.template image to chat-server:{self.v2.tag} and spec.model.version to {self.v2.tag}: "
              "a new revision")
        self.apply([self.rollout_doc(self.v2)])
        approved: list[str] = []
        canary_tick = self._canary_ticker(stable, self.v2)

        def on_tick(s: Snapshot) -> None:
            canary_tick(s)
            approval = s.status.get("approval") or {}
            token = approval.get("token")
            if s.phase == "AwaitingApproval" and approval.get("action", "continue") == "continue" \
                    and token and token not in approved:
                step = int(approval["step"])
                o.say(f"  the operator stops before step {step + 1}/{s.steps} ({approval.get('reason')}) and "
                      "waits for a person")
                o.say(f"  status.approval.command: {approval['command']}")
                self.approve(str(approval["command"]))
                approved.append(str(token))

        def fail(s: Snapshot) -> str | None:
            if s.phase in DONE_BAD:
                return f"the compatible revision ended in phase {s.phase}: {s.message}"
            return None

        snap = self.watch(2, "promotion (phase Succeeded with the new revision stable)",
                          lambda s: s.phase == "Succeeded" and s.status.get("stableRevision") not in (None, stable),
                          timeout=180, fail=fail, on_tick=on_tick)
        new = str(snap.status["stableRevision"])
        o.say(f"  act 2: revision {new} promoted: stable serves 100% on chat-server:{self.v2.tag} "
              f"after {len(approved)} approval(s)")
        # promotion by role: the analysed canary pods are the stable pods now (NAME-stable selects them), so their
        # stand-in keeps running in the stable role; the previous stable's pods go after the switch-back window
        old_stable = self.stand_ins.pop("stable")
        promoted = self.stand_ins.pop("canary", None)
        if promoted is not None and promoted.revision == new:
            self.stand_ins["stable"] = promoted
            o.say(f"  >> the analysed canary pods of revision {new} now serve as stable: {promoted.describe()}")
        else:
            self.wait_scraped(self.start_stand_in("stable", new, self.v2))
        self.stand_ins["previous"] = old_stable
        self.retire("previous", "is the previous stable now (its Deployment goes after the switch-back window)")
        self.results.append(ActResult(2, self.v2, new, "Succeeded",
                                      f"promoted after {len(approved)} approval(s)", time.monotonic() - t))
        return new

    def act3(self, stable: str) -> str:
        o = self.out
        o.title(f"Act 3: upgrade to chat-server:{self.v3.tag} ({self.backend.label} {self.v3.server}: {self.v3.note})")
        t = time.monotonic()
        since = datetime.now(UTC) - timedelta(seconds=2)
        self.apply([self.rollout_doc(self.v3)])
        seen_rolling_back: list[str] = []
        canary_tick = self._canary_ticker(stable, self.v3)

        def on_tick(s: Snapshot) -> None:
            canary_tick(s)
            if s.phase == "RollingBack" and not seen_rolling_back:
                seen_rolling_back.append(s.message)

        def fail(s: Snapshot) -> str | None:
            if s.phase in ("Failed", "Invalid"):
                return f"phase {s.phase}: {s.message}"
            if s.phase == "Succeeded" and s.status.get("stableRevision") != stable:
                return "the incompatible revision was promoted"
            if s.phase == "AwaitingApproval" and (s.status.get("approval") or {}).get("action") == "continue":
                return f"the incompatible revision reached an approval gate: {s.message}"
            return None

        def rolled_back(s: Snapshot) -> bool:
            return s.phase == "RolledBack" and s.status.get("rolledBackRevision") not in (None, stable)

        snap = self.watch(3, "phase RolledBack", rolled_back, timeout=120, fail=fail, on_tick=on_tick)
        bad = str(snap.status["rolledBackRevision"])
        o.say("")
        o.say(f"  act 3: revision {bad} rolled back by the operator, no person involved.")
        if seen_rolling_back:
            o.say(f"  status.message while rolling back: {seen_rolling_back[0]}")
        o.say(f"  status.message now: {snap.message}")
        reason = next((h.get("message", "") for h in reversed(snap.status.get("history") or [])
                       if h.get("outcome") == "RolledBack" and h.get("revision") == bad), "")
        o.say(f"  rollback reason: {reason}")
        for ev in self.warning_events(since):
            o.say(f"  Warning event {ev.get('reason')}: {ev.get('message')}")
        canary = self.stand_ins.get("canary")
        if canary is not None:
            with contextlib.suppress(OSError, ValueError):
                report = canary.compatibility()
                score = report.get("score")
                o.say(f"  the canary's compat-probe says: score {score}, failing checks:")
                for f in report.get("failing") or []:
                    o.say(f"    {f.get('name')}: {'; '.join(f.get('reasons') or [])}")
        after = self.snapshot()
        o.say(f"  canary Ingress: {'removed' if after.canary_ingress is None else 'still present!'}; "
              f"stable revision {after.status.get('stableRevision')} serves 100% "
              f"({after.ready('stable')} pods), canary pods: {after.ready('canary')}")
        self.retire("canary")
        value = (snap.metric() or {}).get("value")
        detail = f"{METRIC} = {value:g} below min 0.99" if isinstance(value, int | float) else reason
        self.results.append(ActResult(3, self.v3, bad, "RolledBack", detail, time.monotonic() - t))
        return bad

    def summary(self) -> None:
        o = self.out
        o.title("Summary")
        for r in self.results:
            o.say(f"  act {r.act}  chat-server:{r.release.tag:<6} {r.release.server:<14} revision {r.revision}  "
                  f"{r.outcome:<11} {r.detail}  ({r.seconds:.0f}s)")
        o.say(f"  total {time.monotonic() - self.started:.0f}s")

    def keep(self) -> None:
        cp, prom = self.kube(), self.prometheus()
        o = self.out
        o.title("--keep: the environment stays up until Ctrl-C")
        o.say(f"  export KUBECONFIG={cp.kubeconfig}")
        o.say(f"  export PATH={cp.bin_dir}:$PATH   # the kubectl the demo used")
        o.say(f"  kubectl -n {NAMESPACE} get mro,deploy,svc,ingress,pods")
        o.say(f"  kubectl -n {NAMESPACE} describe mro {NAME}")
        o.say(f"  Prometheus: {prom.url}   operator log: {self.logs / 'operator.log'}")
        o.say("  press Ctrl-C to stop everything")
        while True:
            self.check_alive()
            time.sleep(1.0)  # liveness watch only


# ------------------------------------------------------------------------------------------------ processes


def marked_processes(marker: str, *, exclude: Iterable[int] = ()) -> list[tuple[int, str]]:
    """Processes (pid, command line) whose environment carries ``MODELROLLOUT_DEMO_RUN=marker``."""
    needle = f"{MARKER_ENV}={marker}".encode()
    skip = set(exclude)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in skip:
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if needle in env:
            found.append((int(entry.name), cmdline.replace(b"\0", b" ").decode(errors="replace").strip()))
    return found


def _sigterm(signum: int, frame: FrameType | None) -> None:
    raise Interrupted()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devenv.demo", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", action="store_true",
                        help="leave the environment up and print KUBECONFIG; stop everything on Ctrl-C")
    parser.add_argument("--quick", action="store_true", help="accepted for compatibility; the demo is already quick")
    parser.add_argument("--workdir", type=Path, help="keep state and logs here (default: a temp dir, removed on "
                        "success)")
    parser.add_argument("--timeout-scale", type=float, default=float(os.environ.get("MODELROLLOUT_DEMO_TIMEOUT_SCALE",
                                                                                    "1")),
                        help="multiply every deadline (slow machines)")
    parser.add_argument("--model", choices=sorted(BACKENDS), default="refserver",
                        help="the model server standing in for the pods: refserver (default) or mlserver (a real "
                        "MLServer serving scikit-learn iris revisions; needs hack/modelservers/install.sh)")
    args = parser.parse_args(argv)

    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True, errors="replace")
    out = Console(sys.stdout)
    marker = os.environ.setdefault(MARKER_ENV, uuid.uuid4().hex)
    own = args.workdir is None
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="modelrollout-demo-"))).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, _sigterm)
    demo = Demo(workdir=workdir, out=out, timeout_scale=args.timeout_scale, backend=BACKENDS[args.model])
    code = 0
    try:
        demo.setup()
        stable = demo.act1()
        stable = demo.act2(stable)
        demo.act3(stable)
        demo.summary()
        if args.keep:
            with contextlib.suppress(KeyboardInterrupt):
                demo.keep()
            out.say("")
    except DemoFailed as e:
        out.say(f"\nDEMO FAILED: {e}")
        if demo.operator is not None:
            out.say(f"--- last lines of the operator log ({demo.operator.log}):\n{demo.operator.log_tail(30)}")
        code = 1
    except KeyboardInterrupt:
        out.say("\ninterrupted")
        code = 130
    except Exception as e:  # anything unexpected still cleans up, and says what happened
        out.say(f"\nDEMO FAILED: {type(e).__name__}: {e}")
        code = 1
    finally:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut cleanup short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            out.say("stopping the operator, model servers, compat-probes, Prometheus and the control plane ...")
            demo.stop()
            left = marked_processes(marker, exclude=[os.getpid()])
            if left:
                out.say("still running after stop (terminating):")
                for pid, cmd in left:
                    out.say(f"  {pid} {cmd[:160]}")
                    terminate_pid(pid, timeout=5)
                code = code or 1
            else:
                out.say("everything stopped; nothing left running")
            if code == 0 and own and not args.keep:
                shutil.rmtree(workdir, ignore_errors=True)
            else:
                out.say(f"state and logs kept in {workdir} (operator and model servers: logs/, control plane: "
                        "cluster/logs/)")
        finally:
            signal.signal(signal.SIGINT, previous)
    return code


if __name__ == "__main__":
    sys.exit(main())
