"""The benchmark harness: one environment (control plane + Prometheus + operator), clocks, watches, stats.

Clock: every interval is measured with :func:`now` (``time.monotonic``). Timestamps that come from other
processes (the apiserver's audit log, wall clock, microseconds) are moved onto the same clock with
:func:`from_wall`, using the offset between ``time.time()`` and ``time.monotonic()`` taken once at import.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any, Self, TypeVar, cast

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from devenv.localenv.controlplane import ControlPlane, start_control_plane
from devenv.localenv.operatorproc import operator_process
from devenv.localenv.procs import ManagedProcess, free_port, port_open, run
from devenv.localenv.prometheus import Prometheus, start_prometheus
from modelrollout.crdgen import render

T = TypeVar("T")
Json = dict[str, Any]

GROUP, VERSION, PLURAL = "modelrollout.io", "v1alpha1", "modelrollouts"
WEIGHT_ANNOTATION = "nginx.ingress.kubernetes.io/canary-weight"
REPO = Path(__file__).resolve().parents[1]
BENCH_AGENT = "modelrollout-bench"
OPERATOR_SRC = REPO / "operator"

# Local HTTP only: never route 127.0.0.1 through an HTTP(S)_PROXY from the environment.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# ---------------------------------------------------------------------------------------------- clock

_WALL_MINUS_MONO = time.time() - time.monotonic()


def now() -> float:
    """The one clock every measured interval uses (monotonic seconds)."""
    return time.monotonic()


def from_wall(wall: float) -> float:
    """A wall-clock timestamp (``time.time()`` scale) on the :func:`now` scale."""
    return wall - _WALL_MINUS_MONO


def parse_k8s_time(text: str) -> float:
    """An RFC 3339 timestamp from the apiserver (``2025-01-01T10:00:00.123456Z``) on the :func:`now` scale."""
    return from_wall(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())


class BenchTimeout(TimeoutError):
    pass


def poll(fn: Callable[[], T | None], timeout: float, interval: float, what: str) -> T:
    """Call ``fn`` every ``interval`` seconds (fixed, no backoff) until it returns non-None; bounded."""
    deadline = now() + timeout
    while True:
        value = fn()
        if value is not None:
            return value
        left = deadline - now()
        if left <= 0:
            raise BenchTimeout(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(min(interval, left))


# ---------------------------------------------------------------------------------------------- stats


def percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) with linear interpolation between order statistics (numpy's default)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass(frozen=True)
class Summary:
    n: int
    p50: float
    p99: float
    max: float
    min: float
    mean: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        vals = [v for v in values if v == v]  # drop NaN (a trial without that breakdown)
        if not vals:
            nan = float("nan")
            return cls(0, nan, nan, nan, nan, nan)
        return cls(len(vals), percentile(vals, 0.5), percentile(vals, 0.99), max(vals), min(vals),
                   sum(vals) / len(vals))


def ms(seconds: float) -> str:
    return "n/a" if seconds != seconds else f"{seconds * 1000:.0f} ms"


def secs(seconds: float) -> str:
    return "n/a" if seconds != seconds else f"{seconds:.2f} s"


# ---------------------------------------------------------------------------------------------- manifests


def service(name: str) -> Json:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}


def ingress(name: str, backend: str) -> Json:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": name},
            "spec": {"ingressClassName": "nginx", "rules": [{"host": f"{name}.example", "http": {"paths": [
                {"path": "/", "pathType": "Prefix",
                 "backend": {"service": {"name": backend, "port": {"number": 80}}}}]}}]}}


def rollout(name: str, *, image: str, steps: list[Json], replicas: int, **spec: Any) -> Json:
    """A ModelRollout routed by NGINX: root Service NAME, user Ingress NAME -> NAME-stable."""
    body: Json = {
        "replicas": replicas,
        "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}},
                     "spec": {"containers": [{"name": "model", "image": image, "ports": [{"containerPort": 8080}]}]}},
        "traffic": {"service": {"name": name}, "ingress": {"name": name}},
        "strategy": {"canary": {"steps": steps}},
        **spec,
    }
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelRollout", "metadata": {"name": name}, "spec": body}


def as_list(*objects: Json) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)})


# ---------------------------------------------------------------------------------------------- processes


def child_processes() -> list[tuple[int, str]]:
    """Live processes whose parent is this one (pid, command line); used to prove nothing is left running."""
    me = os.getpid()
    out: list[tuple[int, str]] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) != me or fields[0] == "Z":
                continue
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, IndexError, ValueError):
            continue
        out.append((int(entry.name), cmd[:120]))
    return out


@contextlib.contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so every ``finally`` that stops a process runs."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class ExporterProcess:
    """An exporter child process on 127.0.0.1:``port`` (started, waited for, stopped)."""

    port: int
    process: ManagedProcess

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 20) -> Self:
        self.process.start()

        def up() -> bool | None:
            self.process.check_alive()
            return True if port_open(self.port) else None

        poll(up, timeout, 0.02, f"exporter {self.address}")
        return self

    def stop(self) -> None:
        self.process.stop(5)


class Exporter(ExporterProcess):
    """A real model-server exporter (``compat_probe.refserver``) for one rollout's canary track."""

    def __init__(self, root: Path, rollout_name: str, *, score: float = 1.0) -> None:
        self.port = free_port()
        self.process = ManagedProcess(
            name=f"refserver-{rollout_name}",
            argv=[sys.executable, "-m", "compat_probe.refserver", "--host", "127.0.0.1", "--port", str(self.port),
                  "--rollout", rollout_name, "--track", "canary", "--revision", "canary", "--score", str(score),
                  "--log-level", "WARNING"],
            log=root / "exporters" / f"{rollout_name}.log",
            env={**os.environ, "PYTHONPATH": os.pathsep.join(
                p for p in (str(OPERATOR_SRC), os.environ.get("PYTHONPATH", "")) if p)},
        )

    def set_score(self, value: float) -> None:
        req = urllib.request.Request(f"http://{self.address}/admin/score",
                                     data=json.dumps({"value": value}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        with _opener.open(req, timeout=5) as resp:
            if resp.status != 200:
                raise RuntimeError(f"POST /admin/score answered {resp.status}")


def prometheus_value(prom: Prometheus, expr: str, timeout: float = 2.0) -> float | None:
    """One instant query through Prometheus's HTTP API; the single value, or None when empty."""
    url = f"{prom.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    with _opener.open(url, timeout=timeout) as resp:
        body = json.loads(resp.read())
    result = body["data"]["result"]
    return float(result[0]["value"][1]) if result else None


# ---------------------------------------------------------------------------------------------- watches


@dataclass(frozen=True)
class WatchEvent:
    at: float
    """Arrival time on the :func:`now` clock."""
    type: str
    obj: Json

    @property
    def status(self) -> Json:
        return dict(self.obj.get("status") or {})

    @property
    def weight(self) -> str | None:
        annotations = (self.obj.get("metadata") or {}).get("annotations") or {}
        value = annotations.get(WEIGHT_ANNOTATION)
        return str(value) if value is not None else None


class ObjectWatch:
    """A real watch on one object (``GET ...?watch=true&fieldSelector=metadata.name=NAME``) read in a thread.

    Opened without a resourceVersion, so the apiserver first sends the current object as ADDED: seeing it
    proves the watch is established. Every event is stamped with :func:`now` the moment its line arrives.
    ``kind`` is ``ingress`` or ``modelrollout``.
    """

    def __init__(self, api_client: Any, namespace: str, kind: str, name: str) -> None:
        self.api_client = api_client
        self.namespace = namespace
        self.kind = kind
        self.name = name
        self.events: list[WatchEvent] = []
        self._cond = threading.Condition()
        self._closed = False
        self._error: BaseException | None = None
        self._resp: Any = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> ObjectWatch:
        args: dict[str, Any] = {"field_selector": f"metadata.name={self.name}", "watch": True,
                                "timeout_seconds": 300, "_preload_content": False, "_request_timeout": (5, 330)}
        if self.kind == "ingress":
            self._resp = client.NetworkingV1Api(self.api_client).list_namespaced_ingress(self.namespace, **args)
        elif self.kind == "modelrollout":
            self._resp = client.CustomObjectsApi(self.api_client).list_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, **args)
        else:
            raise ValueError(f"cannot watch {self.kind}")
        self._thread = threading.Thread(target=self._read, name=f"watch-{self.kind}-{self.name}", daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        try:
            for line in iter_resp_lines(self._resp):  # type: ignore[no-untyped-call]
                at = now()
                raw = json.loads(line)
                with self._cond:
                    self.events.append(WatchEvent(at, str(raw.get("type")), raw.get("object") or {}))
                    self._cond.notify_all()
        except Exception as exc:  # closed by __exit__, or the apiserver went away
            self._error = exc
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify_all()

    def wait_for(self, predicate: Callable[[WatchEvent], bool], timeout: float, what: str) -> WatchEvent:
        """The first event (already seen or still to come) for which ``predicate`` holds; bounded."""
        deadline = now() + timeout
        with self._cond:
            seen = 0
            while True:
                for ev in self.events[seen:]:
                    if predicate(ev):
                        return ev
                seen = len(self.events)
                left = deadline - now()
                if self._closed:
                    raise RuntimeError(f"watch on {self.kind} {self.name} closed ({self._error!r}) before {what}")
                if left <= 0:
                    raise BenchTimeout(f"timed out after {timeout:.1f}s waiting for {what} "
                                       f"(events: {[(e.type, e.weight) for e in self.events]})")
                self._cond.wait(left)

    def __exit__(self, *exc: object) -> None:
        resp = self._resp
        if resp is not None:
            with contextlib.suppress(Exception):
                resp.shutdown()  # unblocks the reading thread (urllib3 >= 2.3)
            with contextlib.suppress(Exception):
                resp.close()
        if self._thread is not None:
            self._thread.join(5)


# ---------------------------------------------------------------------------------------------- audit log


@dataclass(frozen=True)
class Request:
    """One completed API request from the apiserver's audit log, times on the :func:`now` clock."""

    received: float
    completed: float
    verb: str
    resource: str
    subresource: str
    name: str
    agent: str
    user: str = ""
    code: int = 0
    dry_run: bool = False
    """A server-side dry run (``?dryRun=All``): validated, nothing written."""

    @property
    def by_kubectl(self) -> bool:
        return self.agent.startswith("kubectl")

    def engine_for(self, name: str) -> bool:
        """A request of the operator's engine for one of rollout ``name``'s objects (NAME, NAME-canary,
        NAME-stable, the Deployments NAME-REVISION, Events NAME.…)."""
        return self.by_operator_engine and (self.name == name or self.name.startswith((f"{name}-", f"{name}.")))

    @property
    def by_operator_engine(self) -> bool:
        """The engine's synchronous kubernetes client (not kopf's aiohttp client, kubectl or this benchmark)."""
        return self.agent.startswith("OpenAPI-Generator")

    def describe(self, origin: float) -> str:
        return (f"{(self.received - origin) * 1000:7.1f} ms +{(self.completed - self.received) * 1000:5.1f} "
                f"{self.agent.split('/')[0][:18]:18s} {self.verb:6s} {self.resource}"
                + (f"/{self.subresource}" if self.subresource else "") + f" {self.name}")


class AuditLog:
    """Reads the audit log the local apiserver writes (JSON lines), from a mark on."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def mark(self) -> None:
        self.offset = self.path.stat().st_size if self.path.exists() else 0

    def since_mark(self, namespace: str) -> list[Request]:
        return list(self.iter_since_mark(namespace))

    def count_since_mark(self) -> int:
        """Requests of every client in every namespace completed since the mark (a count of log lines)."""
        with self.path.open("rb") as f:
            f.seek(self.offset)
            return sum(1 for line in f if b'"stage":"ResponseComplete"' in line)

    def iter_since_mark(self, namespace: str) -> Iterator[Request]:
        """The requests in ``namespace`` from the mark on, streamed (the log may be hundreds of MB)."""
        needle = json.dumps({"namespace": namespace}, separators=(",", ":"))[1:-1].encode()
        with self.path.open("rb") as f:
            f.seek(self.offset)
            for line in f:
                if needle not in line:
                    continue
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue  # a line still being written
                ref = ev.get("objectRef") or {}
                if ev.get("stage") != "ResponseComplete" or ref.get("namespace") != namespace:
                    continue
                yield self._request(ev, ref)

    @staticmethod
    def _request(ev: Json, ref: Json) -> Request:
        return Request(
            received=parse_k8s_time(ev["requestReceivedTimestamp"]),
            completed=parse_k8s_time(ev["stageTimestamp"]),
            verb=str(ev.get("verb")), resource=str(ref.get("resource")),
            subresource=str(ref.get("subresource") or ""), name=str(ref.get("name") or ""),
            agent=str(ev.get("userAgent") or ""), user=str((ev.get("user") or {}).get("username") or ""),
            code=int((ev.get("responseStatus") or {}).get("code") or 0),
            dry_run="dryRun=" in str(ev.get("requestURI") or ""))

    def wait_for(self, namespace: str, predicate: Callable[[list[Request]], T | None], timeout: float = 5) -> T | None:
        """The audit log is written as requests complete; give the last lines a moment. None if never."""
        try:
            return poll(lambda: predicate(self.since_mark(namespace)), timeout, 0.05, "audit log entries")
        except BenchTimeout:
            return None


# ---------------------------------------------------------------------------------------------- environment


@dataclass
class Env:
    """A control plane with the CRD, one namespace, the operator watching it and (optionally) Prometheus."""

    root: Path
    cp: ControlPlane
    namespace: str
    operator: ManagedProcess
    operator_metrics_port: int
    prometheus: Prometheus | None
    api_client: Any
    audit: AuditLog
    started: float
    setup_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def check_alive(self) -> None:
        """Raise (ProcessDied, with the log tail) if a control plane process, Prometheus or the operator exited."""
        self.cp.check_alive()
        if self.prometheus is not None and self.prometheus.process is not None:
            self.prometheus.process.check_alive()
        self.operator.check_alive()

    # -- kubectl (the real binary from the control plane's bin dir) ---------------------------------

    def kubectl_argv(self, *args: str) -> list[str]:
        return [str(self.cp.bin_dir / "kubectl"), f"--kubeconfig={self.cp.kubeconfig}",
                f"--cache-dir={self.root / 'kubectl-cache'}", *args]

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return run(self.kubectl_argv(*args), input=input, check=check, timeout=timeout, env=self.cp.env())

    def apply(self, *objects: Json) -> None:
        self.kubectl("-n", self.namespace, "apply", "-f", "-", input=as_list(*objects))

    def delete_rollout(self, name: str) -> None:
        """Delete the rollout (its Deployments/Services/canary Ingress are owned) and the user's objects."""
        self.kubectl("-n", self.namespace, "delete", f"modelrollout/{name}", f"service/{name}", f"ingress/{name}",
                     "--wait=false", "--ignore-not-found", check=False)

    # -- reads through the Python client (fast enough to poll tightly) -------------------------------

    def get_rollout(self, name: str) -> Json | None:
        custom = client.CustomObjectsApi(self.api_client)
        try:
            return cast(Json, custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def wait_status(self, name: str, predicate: Callable[[Json], bool], timeout: float, what: str,
                    interval: float = 0.05) -> Json:
        last: list[Json] = [{}]

        def check() -> Json | None:
            self.check_alive()
            obj = self.get_rollout(name)
            st = dict((obj or {}).get("status") or {})
            last[0] = st
            return st if predicate(st) else None

        try:
            return poll(check, timeout, interval, what)
        except BenchTimeout as exc:
            raise BenchTimeout(f"{exc}; last status: {json.dumps(last[0])[:1500]}") from None

    def wait_gone(self, name: str, timeout: float) -> None:
        def gone() -> bool | None:
            self.check_alive()
            return True if self.get_rollout(name) is None else None

        poll(gone, timeout, 0.1, f"rollout {name} deleted")

    def watch(self, kind: str, name: str) -> ObjectWatch:
        return ObjectWatch(self.api_client, self.namespace, kind, name)

    # -- the operator's own metrics -------------------------------------------------------------------

    def operator_metrics(self) -> dict[str, float]:
        """Unlabelled samples of the operator's /metrics (e.g. modelrollout_reconcile_seconds_sum)."""
        out: dict[str, float] = {}
        with _opener.open(f"http://127.0.0.1:{self.operator_metrics_port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        for line in text.splitlines():
            if line.startswith("#") or " " not in line:
                continue
            key, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                out[key] = float(value)
        return out


def _create_namespace(cp: ControlPlane, ns: str) -> None:
    cp.kubectl("create", "namespace", ns)
    poll(lambda: True if cp.kubectl("get", "serviceaccount", "default", "-n", ns, check=False).returncode == 0
         else None, 60, 0.2, f"ServiceAccount {ns}/default")


@contextlib.contextmanager
def environment(name: str, *, with_prometheus: bool, keep: bool = False,
                controller_qps: int | None = None) -> Iterator[Env]:
    """Start everything in a fresh temp dir; stop everything (last started first) on the way out.

    The temp dir is removed afterwards unless ``keep`` is set or the benchmark failed (then its path, with
    the operator/control plane/Prometheus logs and the audit log, is printed).
    """
    started = now()
    root = Path(tempfile.mkdtemp(prefix=f"modelrollout-bench-{name}-"))
    namespace = f"bench-{name.replace('_', '-')}"
    failed = True
    try:
        with contextlib.ExitStack() as stack:  # closed last-in first-out: operator, Prometheus, control plane
            cp = start_control_plane(root / "controlplane", nodes=2, controller_qps=controller_qps)
            stack.callback(cp.stop)
            cp.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=render())
            # kubectl wait fails at once while the new CRD has no status.conditions yet: ask again until it holds
            poll(lambda: cp.kubectl("wait", "--for=condition=Established", "crd/modelrollouts.modelrollout.io",
                                    "--timeout=10s", check=False).returncode == 0 or None, 60, 0.2,
                 "the ModelRollout CRD Established")
            prom: Prometheus | None = None
            if with_prometheus:
                prom = start_prometheus(root / "prometheus", scrape_interval="1s")
                stack.callback(prom.stop)
            _create_namespace(cp, namespace)
            metrics_port = free_port()
            op = operator_process(cp.kubeconfig, root / "operator.log", namespaces=[namespace],
                                  metrics_port=metrics_port)
            op.start()
            stack.callback(op.stop)

            def operator_up() -> bool | None:
                op.check_alive()
                return True if port_open(metrics_port) else None

            poll(operator_up, 60, 0.05, "operator metrics endpoint")
            api_client = config.new_client_from_config(config_file=str(cp.kubeconfig))  # type: ignore[no-untyped-call]
            api_client.user_agent = BENCH_AGENT  # so the audit log tells the benchmark's requests from the operator's
            stack.callback(api_client.close)
            env = Env(root=root, cp=cp, namespace=namespace, operator=op, operator_metrics_port=metrics_port,
                      prometheus=prom, api_client=api_client, audit=AuditLog(cp.audit_log), started=started)
            env.setup_seconds = now() - started
            yield env
            failed = False
    finally:
        if failed:
            log = root / "operator.log"
            if log.exists():
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
                print(f"--- operator log tail ({log})\n{tail}", file=sys.stderr)
        left = child_processes()
        if left:
            print(f"WARNING: processes still running after {name}: {left}", file=sys.stderr)
        if failed or keep:
            print(f"benchmark files kept in {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- results


@dataclass
class Table:
    caption: str
    header: list[str]
    rows: list[list[str]]

    def markdown(self) -> str:
        lines = [f"**{self.caption}**", "", "| " + " | ".join(self.header) + " |",
                 "|" + "|".join(["---"] + ["--:"] * (len(self.header) - 1)) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines)


@dataclass
class Result:
    """What one benchmark reports: tables and sentences, ready for docs/benchmarks.md."""

    name: str
    title: str
    method: str
    date: str
    trials: int
    failed_trials: int
    wall_seconds: float
    tables: list[Table]
    verdict: str
    notes: list[str]
    raw: dict[str, list[float]]
    load: str = ""
    """The load average during the run, next to the CPU count: other work may share the machine."""
    appendix: str = ""
    """Markdown after the notes (e.g. the request trace of the median trial)."""

    def markdown(self, machine: str) -> str:
        parts = [f"## {self.title}", "", self.method.strip(), "",
                 f"Measured {self.date} on {machine}: {self.trials} trials"
                 + (f" ({self.failed_trials} failed and were left out)" if self.failed_trials else "")
                 + f", {self.wall_seconds / 60:.1f} min including setup"
                 + (f"; {self.load}" if self.load else "") + ".", "", f"**{self.verdict}**", ""]
        for t in self.tables:
            parts += [t.markdown(), ""]
        parts += [f"- {n}" for n in self.notes]
        if self.appendix:
            parts += ["", self.appendix.strip()]
        return "\n".join(parts).rstrip() + "\n"

    def to_json(self) -> str:
        from dataclasses import asdict

        return json.dumps(asdict(self), indent=1)


def trace_block(title: str, lines: Sequence[str]) -> str:
    """A request trace as a fenced block under a one-line title."""
    return f"{title}\n\n```text\n" + "\n".join(lines) + "\n```\n" if lines else ""


def median_index(values: Sequence[float]) -> int:
    """Index of the trial whose value is the (lower) median."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    return order[(len(order) - 1) // 2] if order else -1


def summary_row(label: str, values: Sequence[float], fmt: Callable[[float], str] = ms) -> list[str]:
    s = Summary.of(values)
    return [label, fmt(s.p50), fmt(s.p99), fmt(s.max), str(s.n)]


SUMMARY_HEADER = ["interval", "p50", "p99", "max", "n"]


def load_average() -> float:
    return os.getloadavg()[0]


def load_text(loads: Sequence[float]) -> str:
    """The 1-minute load averages sampled at the start of each trial, against the CPU count."""
    if not loads:
        return ""
    return (f"1-min load average at the trials' starts {min(loads):.1f}–{max(loads):.1f} (median "
            f"{percentile(loads, 0.5):.1f}) on {len(os.sched_getaffinity(0))} CPUs")


def today() -> str:
    return datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")


def read_json(path: Path) -> Mapping[str, Any]:
    return cast(Mapping[str, Any], json.loads(path.read_text()))


WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})


def _rank(r: Request) -> int:
    """Where a write comes in one reconcile: actions on the workloads and routes, the status, the consumed
    annotations (a patch of the rollout itself), then Events."""
    if r.resource == "events":
        return 3
    if r.resource == PLURAL:
        return 1 if r.subresource == "status" else 2
    return 0


def reconciles(requests: Sequence[Request]) -> list[list[Request]]:
    """One rollout's engine requests in time order, cut into reconciles. A reconcile reads (from the apiserver or
    the watch cache, which leaves no trace) and writes in a fixed order (:func:`_rank`): a write that goes back in
    that order, or a second write of the rollout, starts the next one, with the reads since the last write."""
    out: list[list[Request]] = []
    current: list[Request] = []
    last, wrote_upto = -1, 0
    for r in requests:
        if r.verb in WRITE_VERBS and not r.dry_run:  # a dry run (validation before traffic) writes nothing
            rank = _rank(r)
            if rank < last or (rank == last and rank in (1, 2)):
                out.append(current[:wrote_upto])
                current, last = current[wrote_upto:], -1
            last = rank
            current.append(r)
            wrote_upto = len(current)
        else:
            current.append(r)
    return [part for part in (*out, current[:wrote_upto], current[wrote_upto:]) if part]
