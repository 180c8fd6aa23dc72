"""scale: N ModelRollouts progressing at once on one operator (step latency, RSS, API and Prometheus load).

Per N, a fresh environment (control plane with kwok nodes, Prometheus with a 1 s scrape, the operator as a
child process watching one namespace) and one exporter process serving 2N series
``model_api_compatibility_score{rollout, revision, track}`` (each rollout's stable and canary revision).
N rollouts (NGINX router: Service + Ingress each, 1 replica) are created at once and released (first release,
Succeeded); then every one gets a new revision at once, with steps setWeight 25 → analysis {passes: 2} →
setWeight 50 → setWeight 100 and an analysis every INTERVAL of
``min(model_api_compatibility_score{rollout="{{rollout}}",revision="{{revision}}"})`` (min 0.99), and the
benchmark waits until all N are Succeeded on the new revision.

Measured in that second window (new revisions applied → all Succeeded):

- step latency of the three setWeight steps: from the step becoming due to the operator's PATCH of the canary
  Ingress with its weight (audit log). Due: for setWeight 25, the later of status.stepStartedAt of step 0 and
  the controller-manager's status update that made the canary Deployment ready (its pod must be ready before
  traffic moves); for 50 and 100, status.stepStartedAt of that step (the reconcile that finished the previous
  step; the next one is due at once);
- the operator's RSS (VmHWM, VmRSS from /proc/PID/status) and CPU time;
- API requests and writes of the operator (audit log; user agents ``OpenAPI-Generator`` — the engine — and
  ``kopf``) per step, by kind;
- Prometheus instant queries (Prometheus's own ``prometheus_http_requests_total{handler="/api/v1/query"}``)
  per analysis interval and per evaluation (the operator's ``modelrollout_analysis_evaluations_total``).

    PYTHONPATH=operator python -m bench.scale [--n 100 500 1000] [--update-docs] [--json FILE] [--keep]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import json
import os
import re
import sys
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

from kubernetes import client, config
from kubernetes.watch.watch import iter_resp_lines

from bench.common import (
    BENCH_AGENT,
    GROUP,
    OPERATOR_SRC,
    PLURAL,
    VERSION,
    WEIGHT_ANNOTATION,
    WRITE_VERBS,
    Env,
    ExporterProcess,
    Json,
    Request,
    Result,
    Summary,
    Table,
    environment,
    ingress,
    load_average,
    ms,
    now,
    parse_k8s_time,
    poll,
    reconciles,
    rollout,
    service,
    sigterm_as_exit,
    today,
)
from devenv.localenv.procs import ManagedProcess, free_port
from modelrollout.core.revision import revision_of

NAME = "scale"
TITLE = "Scale (N rollouts progressing at once on one operator)"
STEPS: list[Json] = [{"setWeight": 25}, {"analysis": {"passes": 2}}, {"setWeight": 50}, {"setWeight": 100}]
WEIGHT_STEPS = {0: 25, 2: 50, 3: 100}
"""Step index -> the weight it writes."""
REPLICAS = 1
INTERVAL_S = 5.0
QUERY = 'min(model_api_compatibility_score{rollout="{{rollout}}",revision="{{revision}}"})'
DEFAULT_N = (100, 500, 1000)
TARGET_RSS_MB = 300.0
TARGET_P99_S = 2.0
TARGET_WRITES_PER_STEP = 3.0
OPERATOR_AGENTS = ("OpenAPI-Generator", "kopf")
CREATE_THREADS = 4
CONTROLLER_QPS = 200
"""kube-controller-manager's client rate (default 20/s): creating 2 N ReplicaSets and pods at once would otherwise
make the controllers, not the operator, the bottleneck (every rollout waits for its pods)."""

_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def by_operator(r: Request) -> bool:
    return r.agent.startswith(OPERATOR_AGENTS)


# ---------------------------------------------------------------------------------------------- manifests


def analysis_spec(prometheus_url: str, interval_s: float) -> Json:
    return {"interval": f"{interval_s:g}s", "prometheus": {"address": prometheus_url, "timeout": "2s"},
            "inconclusive": {"limit": 3, "action": "pause"},
            "metrics": [{"name": "api-compatibility", "query": QUERY, "min": 0.99}]}


def manifest(name: str, image: str, prometheus_url: str, interval_s: float) -> Json:
    return rollout(name, image=image, steps=STEPS, replicas=REPLICAS,
                   analysis=analysis_spec(prometheus_url, interval_s))


def revision(body: Json) -> str:
    spec = body["spec"]
    return revision_of(spec["template"], spec.get("model"))


# ---------------------------------------------------------------------------------------------- exporter


class SeriesExporter(ExporterProcess):
    """``bench.scale_exporter``: one real HTTP exporter process serving every rollout's series."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.series_file = root / "scale-series.json"
        self.write([])
        self.process = ManagedProcess(
            name="scale-exporter",
            argv=[sys.executable, "-m", "bench.scale_exporter", "--port", str(self.port),
                  "--series", str(self.series_file)],
            log=root / "scale-exporter.log",
            env={**os.environ, "PYTHONPATH": os.pathsep.join(
                p for p in (str(OPERATOR_SRC.parent), str(OPERATOR_SRC), os.environ.get("PYTHONPATH", "")) if p)},
        )

    def write(self, series: Sequence[Json]) -> None:
        tmp = self.series_file.with_name(f".{self.series_file.name}.tmp")
        tmp.write_text(json.dumps(list(series)))
        tmp.replace(self.series_file)


def prometheus_counter(url: str, name: str, match: str) -> float:
    """Sum of the samples of ``name`` whose labels contain ``match``, from Prometheus's own /metrics."""
    total = 0.0
    with _opener.open(f"{url}/metrics", timeout=10) as resp:
        for raw in resp.read().decode().splitlines():
            if raw.startswith(name + "{") and match in raw:
                total += float(raw.rsplit(" ", 1)[1])
    return total


# ---------------------------------------------------------------------------------------------- watches


class ListWatch:
    """A namespace-wide watch of one resource, read in a thread and resumed from the last resourceVersion.

    ``kind`` is ``modelrollouts``, ``ingresses`` or ``deployments``. Every event is stamped with :func:`now` on
    arrival and handed to ``on_event`` (which keeps only what it needs). The first connection starts without a
    resourceVersion, so existing objects arrive as ADDED.
    """

    def __init__(self, kubeconfig: Path, namespace: str, kind: str, on_event: Callable[[float, str, Json], None],
                 label_selector: str = "") -> None:
        self.api_client = config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
        self.api_client.user_agent = BENCH_AGENT
        listers: dict[str, Callable[..., Any]] = {
            "modelrollouts": functools.partial(client.CustomObjectsApi(self.api_client).list_namespaced_custom_object,
                                               GROUP, VERSION, namespace, PLURAL),
            "ingresses": functools.partial(client.NetworkingV1Api(self.api_client).list_namespaced_ingress, namespace),
            "deployments": functools.partial(client.AppsV1Api(self.api_client).list_namespaced_deployment, namespace),
        }
        self.lister = listers[kind]
        self.kind = kind
        self.on_event = on_event
        self.label_selector = label_selector
        self.resource_version = ""
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._resp: Any = None
        self._thread = threading.Thread(target=self._run, name=f"watch {kind}", daemon=True)

    def __enter__(self) -> ListWatch:
        self._thread.start()
        return self

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set() and failures < 20:
            args: dict[str, Any] = {"watch": True, "allow_watch_bookmarks": True, "timeout_seconds": 240,
                                    "_preload_content": False, "_request_timeout": (10, 300)}
            if self.resource_version:
                args["resource_version"] = self.resource_version
            if self.label_selector:
                args["label_selector"] = self.label_selector
            try:
                self._resp = self.lister(**args)
                for line in iter_resp_lines(self._resp):  # type: ignore[no-untyped-call]
                    self._event(now(), json.loads(line))
                failures = 0
            except Exception as exc:
                if self._stop.is_set():
                    return
                self.error = exc
                failures += 1
                time.sleep(0.5)

    def _event(self, at: float, raw: Json) -> None:
        kind, obj = str(raw.get("type")), raw.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                self.resource_version = ""  # expired: list again (handlers tolerate repeated ADDED)
            return
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if rv:
            self.resource_version = str(rv)
        if kind != "BOOKMARK":
            self.on_event(at, kind, obj)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        resp = self._resp
        if resp is not None:
            with contextlib.suppress(Exception):
                resp.shutdown()
            with contextlib.suppress(Exception):
                resp.close()
        self._thread.join(5)
        with contextlib.suppress(Exception):
            self.api_client.close()


@dataclass(frozen=True)
class StatusPoint:
    at: float
    phase: str
    step: int | None
    weight: int
    step_started_at: str
    last_analysis_at: str
    stable: str
    canary: str


class World:
    """What the benchmark's watches saw, reduced per rollout (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.status: dict[str, StatusPoint] = {}
        self.history: dict[str, list[StatusPoint]] = defaultdict(list)
        self.weights: dict[str, dict[int, float]] = defaultdict(dict)
        """canary Ingress NAME-canary -> weight -> first arrival of that weight."""
        self.ready: dict[str, dict[str, float]] = defaultdict(dict)
        """Deployment NAME-REVISION -> revision -> first arrival of it ready (>= 1 replica)."""

    def on_rollout(self, at: float, kind: str, obj: Json) -> None:
        name = obj["metadata"]["name"]
        st = obj.get("status") or {}
        point = StatusPoint(at, str(st.get("phase") or ""), st.get("currentStep"), int(st.get("currentWeight") or 0),
                            str(st.get("stepStartedAt") or ""), str(st.get("lastAnalysisAt") or ""),
                            str(st.get("stableRevision") or ""), str(st.get("canaryRevision") or ""))
        with self.lock:
            prev = self.status.get(name)
            self.status[name] = point
            if prev is None or (prev.phase, prev.step, prev.weight, prev.step_started_at, prev.last_analysis_at,
                                prev.stable, prev.canary) != (point.phase, point.step, point.weight,
                                                              point.step_started_at, point.last_analysis_at,
                                                              point.stable, point.canary):
                self.history[name].append(point)

    def on_ingress(self, at: float, kind: str, obj: Json) -> None:
        value = ((obj.get("metadata") or {}).get("annotations") or {}).get(WEIGHT_ANNOTATION)
        if kind == "DELETED" or value is None or not str(value).isdigit():
            return
        with self.lock:
            self.weights[obj["metadata"]["name"]].setdefault(int(value), at)

    def on_deployment(self, at: float, kind: str, obj: Json) -> None:
        meta, spec, st = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
        replicas = int(spec.get("replicas") or 0)
        if kind == "DELETED" or replicas < 1:
            return
        caught_up = int(st.get("observedGeneration") or 0) >= int(meta.get("generation") or 0)
        if caught_up and int(st.get("updatedReplicas") or 0) >= replicas and int(st.get("readyReplicas") or 0) >= \
                replicas and int(st.get("replicas") or 0) == replicas:
            rev = str((meta.get("annotations") or {}).get("modelrollout.io/revision") or "")
            with self.lock:
                self.ready[meta["name"]].setdefault(rev, at)

    def phases(self) -> Counter[str]:
        with self.lock:
            return Counter(p.phase for p in self.status.values())


# ---------------------------------------------------------------------------------------------- process stats


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM (kB) of a process, from /proc/PID/status."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (and its reaped children), seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    ticks = os.sysconf("SC_CLK_TCK")
    return sum(int(fields[i]) for i in (11, 12)) / ticks


def machine_cpu_seconds() -> float:
    """CPU time the whole machine spent busy (all CPUs, everything but idle and iowait), seconds (/proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _processes(env: Env) -> list[tuple[str, int]]:
    """(name, pid) of every process the benchmark's machine runs for it."""
    out = [(p.name, p.pid) for p in env.cp.processes]
    if env.prometheus is not None and env.prometheus.process is not None:
        out.append(("prometheus", env.prometheus.process.pid))
    return [*out, ("operator", env.operator.pid), ("benchmark (watches, audit log)", os.getpid())]


# ---------------------------------------------------------------------------------------------- one run


@dataclass
class Run:
    """One N: everything measured (seconds, MiB, counts)."""

    n: int
    interval_s: float
    load_start: float = float("nan")
    load_end: float = float("nan")
    first_release_s: float = float("nan")
    rollout_s: float = float("nan")
    succeeded: int = 0
    step_latency: dict[int, list[float]] = field(default_factory=dict)
    """weight -> latencies (s)."""
    analysis_late: list[float] = field(default_factory=list)
    """Per evaluation after the first: period between evaluations minus the interval (s)."""
    rss_idle_mib: float = float("nan")
    rss_peak_mib: float = float("nan")
    rss_end_mib: float = float("nan")
    cpu_s: float = float("nan")
    cpu_by: dict[str, float] = field(default_factory=dict)
    """CPU seconds of each process of the environment in the second window (``_processes``)."""
    machine_cpu_s: float = float("nan")
    apiserver_requests: int = 0
    """Every client's requests the apiserver completed in the second window (audit log, all namespaces)."""
    requests: int = 0
    writes: int = 0
    reconciles: int = 0
    weight_writes: int = 0
    step_reconcile_writes: list[int] = field(default_factory=list)
    """Writes of each reconcile that carried out a setWeight step (its GET of the rollout to the next one)."""
    step_reconcile_requests: list[int] = field(default_factory=list)
    detail: list[tuple[str, int, float, float]] = field(default_factory=list)
    """(rollout, weight, due, PATCH done) on the :func:`now` clock, for the trace of the slowest steps."""
    requests_by: dict[str, int] = field(default_factory=dict)
    writes_by: dict[str, int] = field(default_factory=dict)
    first_release_requests: int = 0
    first_release_writes: int = 0
    prom_queries: float = float("nan")
    evaluations: float = float("nan")
    reconcile_errors: float = 0.0
    log_errors: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def steps(self) -> int:
        return self.n * len(STEPS)

    @property
    def latencies(self) -> list[float]:
        return [v for vals in self.step_latency.values() for v in vals]

    @property
    def requests_per_step(self) -> float:
        return self.requests / self.steps if self.steps else float("nan")

    @property
    def writes_per_step(self) -> float:
        """All the operator's writes of the window over the 4 N steps (start, analysis ticks, promotion, Events)."""
        return self.writes / self.steps if self.steps else float("nan")

    @property
    def step_writes_mean(self) -> float:
        w = self.step_reconcile_writes
        return sum(w) / len(w) if w else float("nan")

    @property
    def step_writes_max(self) -> float:
        return float(max(self.step_reconcile_writes)) if self.step_reconcile_writes else float("nan")

    @property
    def queries_per_interval(self) -> float:
        return self.prom_queries / (self.rollout_s / self.interval_s) if self.rollout_s > 0 else float("nan")

    @property
    def queries_per_evaluation(self) -> float:
        return self.prom_queries / self.evaluations if self.evaluations else float("nan")


def _parallel(fn: Callable[[str], object], names: Iterable[str]) -> None:
    with ThreadPoolExecutor(CREATE_THREADS) as pool:
        for _ in pool.map(fn, names):
            pass


def _operator_counters(env: Env) -> tuple[float, float, float]:
    """(analysis evaluations, reconcile errors, reconciles) so far, from the operator's /metrics."""
    samples = env.operator_metrics()

    def total(name: str) -> float:
        return sum(v for k, v in samples.items() if k.startswith(name + "{"))
    return (total("modelrollout_analysis_evaluations_total"), total("modelrollout_reconcile_errors_total"),
            total("modelrollout_reconciles_total"))


def _wait_all(env: Env, world: World, names: Sequence[str], done: Callable[[str, StatusPoint], bool], timeout: float,
              what: str, log: Callable[[str], None]) -> None:
    """Until every rollout's last seen status satisfies ``done``; a terminal failure or the deadline raises."""
    last_report = [now()]

    def check() -> bool | None:
        env.check_alive()
        with world.lock:
            points = [world.status.get(n) for n in names]
        bad = [f"{n}: {p.phase}" for n, p in zip(names, points, strict=True)
               if p is not None and p.phase in ("RolledBack", "Failed", "Invalid", "RollingBack")]
        if bad:
            raise RuntimeError(f"{len(bad)} rollouts failed while waiting for {what}: {bad[:5]}")
        finished = sum(1 for n, p in zip(names, points, strict=True) if p is not None and done(n, p))
        if now() - last_report[0] >= 15:
            last_report[0] = now()
            log(f"{what}: {finished}/{len(names)} (phases {dict(world.phases())}, load {load_average():.1f})")
        return True if finished == len(names) else None

    poll(check, timeout, 0.5, what)


def _latest(requests: Sequence[Request], before: float) -> Request | None:
    """The request (sorted by arrival) that reached the apiserver last before ``before`` (a watch arrival).

    Arrival, not completion: the audit log stamps completion after the response is written, and by then the
    watch event it caused may already have arrived.
    """
    best = None
    for r in requests:
        if r.received > before:
            break
        best = r
    return best


def run_scale(env: Env, n: int, *, interval_s: float = INTERVAL_S, timeout: float | None = None,
              log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> Run:
    """The scale scenario with ``n`` rollouts in ``env`` (which must have Prometheus); returns what it measured.

    Everything it creates lives in ``env.namespace``; the caller removes the namespace or the environment.
    """
    assert env.prometheus is not None, "the scale benchmark needs Prometheus"
    prom = env.prometheus
    timeout = timeout if timeout is not None else 180 + 1.2 * n
    run = Run(n=n, interval_s=interval_s, load_start=load_average())
    names = [f"s{i:04d}" for i in range(n)]
    first = {name: manifest(name, "model:1", prom.url, interval_s) for name in names}
    second = {name: manifest(name, "model:2", prom.url, interval_s) for name in names}
    rev1 = {x: revision(first[x]) for x in names}  # the template carries the name (labels): one per rollout
    rev2 = {x: revision(second[x]) for x in names}
    pid = env.operator.pid
    custom = client.CustomObjectsApi(env.api_client)
    core = client.CoreV1Api(env.api_client)
    networking = client.NetworkingV1Api(env.api_client)
    ns = env.namespace

    exporter = SeriesExporter(env.root).start()
    try:
        exporter.write([{"rollout": x, "revision": r, "track": t, "value": 1.0}
                        for x in names for r, t in ((rev1[x], "stable"), (rev2[x], "canary"))])
        prom.set_targets([(exporter.address, {})])
        prom.wait_target_up(exporter.address, 60)
        prom.wait_for("count(model_api_compatibility_score)", lambda r: bool(r) and float(r[0]["value"][1]) == 2 * n,
                      60)
        world = World()
        watches = [
            ListWatch(env.cp.kubeconfig, ns, "modelrollouts", world.on_rollout),
            ListWatch(env.cp.kubeconfig, ns, "ingresses", world.on_ingress, "modelrollout.io/track=canary"),
            ListWatch(env.cp.kubeconfig, ns, "deployments", world.on_deployment, "modelrollout.io/rollout"),
        ]
        with contextlib.ExitStack() as stack:
            for w in watches:
                stack.enter_context(w)
            run.rss_idle_mib = proc_status(pid).get("VmRSS", 0) / 1024

            # -- first release: N rollouts created at once -------------------------------------------------
            env.audit.mark()
            t0 = now()

            def create(name: str) -> None:
                core.create_namespaced_service(ns, cast(Any, service(name)))  # a dict body is sent as it is
                networking.create_namespaced_ingress(ns, cast(Any, ingress(name, f"{name}-stable")))
                custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, first[name])

            _parallel(create, names)
            _wait_all(env, world, names, lambda x, p: p.phase == "Succeeded" and p.stable == rev1[x], timeout,
                      f"first release of {n} rollouts", log)
            run.first_release_s = now() - t0
            log(f"N={n}: first release of all in {run.first_release_s:.1f}s")
            for r in env.audit.iter_since_mark(ns):
                if by_operator(r):
                    run.first_release_requests += 1
                    run.first_release_writes += r.verb in WRITE_VERBS

            # -- the new revision everywhere at once ------------------------------------------------------------
            q0 = prometheus_counter(prom.url, "prometheus_http_requests_total", 'handler="/api/v1/query"')
            e0, err0, rec0 = _operator_counters(env)
            cpu0 = cpu_seconds(pid)
            procs = _processes(env)
            by0, machine0 = [cpu_seconds(p) for _, p in procs], machine_cpu_seconds()
            env.audit.mark()
            t1 = now()

            def update(name: str) -> None:
                custom.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name,
                                                      {"spec": {"template": second[name]["spec"]["template"]}})

            _parallel(update, names)
            _wait_all(env, world, names, lambda x, p: p.phase == "Succeeded" and p.stable == rev2[x], timeout,
                      f"new revision of {n} rollouts Succeeded", log)
            t2 = now()
            run.rollout_s = t2 - t1
            run.cpu_s = cpu_seconds(pid) - cpu0
            run.machine_cpu_s = machine_cpu_seconds() - machine0
            run.cpu_by = {name: cpu_seconds(p) - b for (name, p), b in zip(procs, by0, strict=True)}
            run.apiserver_requests = env.audit.count_since_mark()
            mem = proc_status(pid)
            run.rss_peak_mib, run.rss_end_mib = mem.get("VmHWM", 0) / 1024, mem.get("VmRSS", 0) / 1024
            run.prom_queries = prometheus_counter(prom.url, "prometheus_http_requests_total",
                                                  'handler="/api/v1/query"') - q0
            e1, err1, rec1 = _operator_counters(env)
            run.evaluations, run.reconcile_errors, run.reconciles = e1 - e0, err1 - err0, int(rec1 - rec0)
            run.load_end = load_average()
            log(f"N={n}: new revision Succeeded everywhere in {run.rollout_s:.1f}s")
    finally:
        exporter.stop()
        with contextlib.suppress(Exception):
            prom.set_targets([])

    _analyse(run, env, world, names, rev2, t1, t2)
    run.log_errors = _operator_log_errors(env.operator.log)
    return run


def _analyse(run: Run, env: Env, world: World, names: Sequence[str], rev2: dict[str, str], t1: float,
             t2: float) -> None:
    """Step latencies, analysis periods and API counts of the second window, from the watches and the audit log."""
    weight_patches: dict[str, list[Request]] = defaultdict(list)
    ready_updates: dict[str, list[Request]] = defaultdict(list)
    canaries = {f"{x}-{rev2[x]}": x for x in names}  # the canary revision's Deployment, NAME-REVISION
    requests_by: Counter[str] = Counter()
    writes_by: Counter[str] = Counter()
    engine: dict[str, list[Request]] = defaultdict(list)
    for r in env.audit.iter_since_mark(env.namespace):
        if r.received > t2:
            continue
        if r.by_operator_engine:
            engine[re.split(r"[-.]", r.name, maxsplit=1)[0]].append(r)
        if by_operator(r):
            kind = f"{r.verb} {r.resource}" + (f"/{r.subresource}" if r.subresource else "")
            run.requests += 1
            requests_by[kind] += 1
            if r.verb in WRITE_VERBS and not r.dry_run:  # a dry run is a request that writes nothing
                run.writes += 1
                writes_by[kind] += 1
            if r.verb == "patch" and r.resource == "ingresses" and r.name.endswith("-canary") and not r.dry_run:
                weight_patches[r.name].append(r)
                run.weight_writes += 1
        elif r.verb == "update" and r.resource == "deployments" and r.subresource == "status" \
                and r.name in canaries:
            ready_updates[canaries[r.name]].append(r)
    run.requests_by, run.writes_by = dict(requests_by), dict(writes_by)
    for reqs in engine.values():
        reqs.sort(key=lambda r: r.received)
        for reconcile in reconciles(reqs):
            if any(x.verb == "patch" and x.resource == "ingresses" and not x.dry_run for x in reconcile):
                run.step_reconcile_writes.append(sum(1 for x in reconcile if x.verb in WRITE_VERBS and not x.dry_run))
                run.step_reconcile_requests.append(len(reconcile))
    for reqs in (*weight_patches.values(), *ready_updates.values()):
        reqs.sort(key=lambda r: r.received)

    latency: dict[int, list[float]] = {w: [] for w in WEIGHT_STEPS.values()}
    missing: Counter[str] = Counter()
    with world.lock:
        history = {x: list(world.history.get(x, [])) for x in names}
        weights = {x: dict(world.weights.get(f"{x}-canary", {})) for x in names}
        ready = {x: world.ready.get(f"{x}-{rev2[x]}", {}).get(rev2[x]) for x in names}
        final = {x: world.status.get(x) for x in names}
    run.succeeded = sum(1 for x, p in final.items() if p is not None and p.phase == "Succeeded"
                        and p.stable == rev2[x])
    for x in names:
        points = [p for p in history[x] if p.at >= t1 and p.canary == rev2[x]]
        started: dict[int, float] = {}
        for p in points:
            if p.step is not None and p.step_started_at:
                started.setdefault(p.step, parse_k8s_time(p.step_started_at))
        for step, weight in WEIGHT_STEPS.items():
            seen = weights[x].get(weight)
            # a step that became due in the reconcile that finished the step before it (an analysis step's last
            # pass) is carried out by that same reconcile, whose status shows the step after it, started then
            due = started.get(step, started.get(step + 1))
            if seen is None or due is None:
                missing[f"weight {weight}"] += 1
                continue
            written = _latest(weight_patches.get(f"{x}-canary", []), seen)
            if written is None:
                missing[f"weight {weight} PATCH"] += 1
                continue
            if step == 0:
                ready_at = ready[x]
                cause = _latest(ready_updates.get(x, []), ready_at) if ready_at is not None else None
                if cause is None or ready_at is None:
                    missing["canary ready"] += 1
                    continue
                due = max(due, min(cause.completed, ready_at))
            done = min(written.completed, seen)  # the watch may deliver it before the audit log stamps it done
            latency[weight].append(done - due)
            run.detail.append((x, weight, due, done))
        analysed = sorted({parse_k8s_time(p.last_analysis_at) for p in points if p.last_analysis_at})
        run.analysis_late += [b - a - run.interval_s for a, b in itertools.pairwise(analysed)]
    run.step_latency = latency
    run.problems += [f"{count} rollouts without {what}" for what, count in sorted(missing.items())]


def _operator_log_errors(log: Path) -> int:
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return 0
    marks = (" ERROR ", "Traceback", "reconcile failed")
    return sum(1 for line in text.splitlines() if any(m in line for m in marks))


# ---------------------------------------------------------------------------------------------- report


def _mib(v: float) -> str:
    return "n/a" if v != v else f"{v:.0f} MiB"


def _num(v: float, digits: int = 1) -> str:
    return "n/a" if v != v else f"{v:.{digits}f}"


def _ratio(a: float, b: float) -> str:
    return "n/a" if not b or a != a or b != b else f"{a / b:.2f}"


MEASURES: list[tuple[str, Callable[[Run], float], Callable[[float], str]]] = [
    ("step latency p50", lambda r: Summary.of(r.latencies).p50, ms),
    ("step latency p99", lambda r: Summary.of(r.latencies).p99, ms),
    ("analysis lateness p99", lambda r: Summary.of(r.analysis_late).p99, ms),
    ("RSS peak", lambda r: r.rss_peak_mib, _mib),
    ("RSS at end", lambda r: r.rss_end_mib, _mib),
    ("API requests / step", lambda r: r.requests_per_step, _num),
    ("API writes / step (all ÷ 4N)", lambda r: r.writes_per_step, lambda v: _num(v, 2)),
    ("writes / setWeight reconcile", lambda r: r.step_writes_mean, lambda v: _num(v, 2)),
    ("reconciles / rollout", lambda r: r.reconciles / r.n if r.n else float("nan"), _num),
    ("Prometheus queries / interval", lambda r: r.queries_per_interval, _num),
    ("Prometheus queries / evaluation", lambda r: r.queries_per_evaluation, lambda v: _num(v, 2)),
    ("operator CPU / rollout", lambda r: r.cpu_s / r.n if r.n else float("nan"), lambda v: ms(v)),
]


def build_result(runs: Sequence[Run], wall: float, date: str | None = None) -> Result:
    header = ["N", "Succeeded", "new revision → all Succeeded", "step p50", "step p99", "RSS peak", "RSS end",
              "API req / step", "API writes / step (all ÷ 4N)", "writes / setWeight reconcile (mean, max)",
              "Prom queries / interval", "queries / evaluation", "load (start–end)"]
    rows = []
    for r in runs:
        s = Summary.of(r.latencies)
        rows.append([str(r.n), f"{r.succeeded}/{r.n}", f"{r.rollout_s:.0f} s", ms(s.p50), ms(s.p99),
                     _mib(r.rss_peak_mib), _mib(r.rss_end_mib), _num(r.requests_per_step),
                     _num(r.writes_per_step, 2), f"{_num(r.step_writes_mean, 2)}, {_num(r.step_writes_max, 0)}",
                     _num(r.queries_per_interval), _num(r.queries_per_evaluation, 2),
                     f"{r.load_start:.1f}–{r.load_end:.1f}"])
    tables = [Table(f"N rollouts at once (steps setWeight 25 → analysis ×2 → 50 → 100, analysis every "
                    f"{runs[0].interval_s:g} s)", header, rows)] if runs else []
    base = next((r for r in runs if r.n == min(x.n for x in runs)), None)
    if base is not None and len(runs) > 1:
        others = [r for r in runs if r is not base]
        tables.append(Table(f"Growth against N={base.n} (ratio of each measure; N ratio "
                            + ", ".join(f"{r.n / base.n:g}" for r in others) + ")",
                            ["measure", *(f"{r.n}/{base.n}" for r in others)],
                            [[label, *(_ratio(get(r), get(base)) for r in others)] for label, get, _ in MEASURES]))
    per_step = []
    for r in runs:
        for w, vals in sorted(r.step_latency.items()):
            s = Summary.of(vals)
            per_step.append([str(r.n), f"setWeight {w}", ms(s.p50), ms(s.p99), ms(s.max), str(s.n)])
        s = Summary.of(r.analysis_late)
        per_step.append([str(r.n), f"analysis period − {r.interval_s:g} s", ms(s.p50), ms(s.p99), ms(s.max),
                         str(s.n)])
    tables.append(Table("Step latency by step (due → weight PATCH done), and analysis lateness",
                        ["N", "step", "p50", "p99", "max", "n"], per_step))
    kinds = sorted({k for r in runs for k in r.writes_by},
                   key=lambda k: -max(r.writes_by.get(k, 0) / r.n for r in runs))
    tables.append(Table("The operator's writes per rollout while it rolls out the new revision (audit log)",
                        ["write", *(f"N={r.n}" for r in runs)],
                        [[k, *(_num(r.writes_by.get(k, 0) / r.n, 2) for r in runs)] for k in kinds]
                        + [["all writes", *(_num(r.writes / r.n, 2) for r in runs)],
                           ["all requests", *(_num(r.requests / r.n, 1) for r in runs)],
                           ["reconciles (operator's modelrollout_reconciles_total)",
                            *(_num(r.reconciles / r.n, 1) for r in runs)]]))
    if any(r.cpu_by for r in runs):
        tables.append(_cpu_table(runs))
    verdict = _verdict(runs)
    notes = _notes(runs)
    return Result(
        name=NAME, title=TITLE, method=METHOD, date=date or today(), trials=len(runs), failed_trials=0,
        wall_seconds=wall,
        tables=tables, verdict=verdict, notes=notes,
        raw={f"{k} N={r.n}": v for r in runs for k, v in _raw(r).items()},
        load="1-min load average " + ", ".join(f"N={r.n}: {r.load_start:.1f} → {r.load_end:.1f}" for r in runs)
             + f" on {len(os.sched_getaffinity(0))} CPUs",
    )


def _cpu_table(runs: Sequence[Run]) -> Table:
    names = sorted({k for r in runs for k in r.cpu_by}, key=lambda k: -max(r.cpu_by.get(k, 0.0) for r in runs))

    def cell(r: Run, seconds: float) -> str:
        return "n/a" if seconds != seconds else f"{seconds:.0f} s ({seconds / r.rollout_s * 100:.0f}%)"
    rows = [[k, *(cell(r, r.cpu_by.get(k, float("nan"))) for r in runs)] for k in names]
    rows.append(["whole machine (/proc/stat)", *(cell(r, r.machine_cpu_s) for r in runs)])
    rows.append(["apiserver: requests completed (all clients, audit log)", *(str(r.apiserver_requests) for r in runs)])
    rows.append(["apiserver: CPU per request", *(_ms1(apiserver_cost(r)) for r in runs)])
    return Table("CPU while the new revisions rolled out (CPU seconds; % of one CPU over the window)",
                 ["process", *(f"N={r.n}" for r in runs)], rows)


def _ms1(seconds: float) -> str:
    return "n/a" if seconds != seconds else f"{seconds * 1000:.1f} ms"


def apiserver_cost(r: Run) -> float:
    """The apiserver's CPU seconds per request it completed in the window (all clients)."""
    cpu = r.cpu_by.get("kube-apiserver", float("nan"))
    return cpu / r.apiserver_requests if r.apiserver_requests else float("nan")


def burst_floor(r: Run, cpus: int) -> float:
    """A lower bound (seconds) of the last step's latency when all N weight steps fall due at once: the
    apiserver's CPU for just the operator's writes of the N weight-writing reconciles (their mean count each, at
    the window's mean CPU per request) with every CPU of the machine given to it and nothing else running."""
    return r.n * r.step_writes_mean * apiserver_cost(r) / cpus


def _raw(r: Run) -> dict[str, list[float]]:
    out = {f"latency w{w}": v for w, v in r.step_latency.items()}
    out["analysis_late"] = r.analysis_late
    out["scalars"] = [float(v) for v in (r.rss_idle_mib, r.rss_peak_mib, r.rss_end_mib, r.cpu_s, r.requests,
                                         r.writes, r.prom_queries, r.evaluations, r.rollout_s, r.first_release_s)]
    return out


def _verdict(runs: Sequence[Run]) -> str:
    if not runs:
        return "no runs"
    big = max(runs, key=lambda r: r.n)
    p99 = Summary.of(big.latencies).p99
    parts = [
        f"N={big.n}: RSS peak {_mib(big.rss_peak_mib)} (target < {TARGET_RSS_MB:.0f} MB: "
        + ("met" if big.rss_peak_mib * 1.048576 < TARGET_RSS_MB else "NOT met") + ")",
        f"p99 step latency {ms(p99)} (target < {TARGET_P99_S:g} s: " + ("met" if p99 < TARGET_P99_S else "NOT met")
        + ")",
        f"at most {_num(big.step_writes_max, 0)} API writes in a reconcile that carries out a step (target ≤ "
        f"{TARGET_WRITES_PER_STEP:g}: " + ("met" if big.step_writes_max <= TARGET_WRITES_PER_STEP else "NOT met")
        + f"); all the operator's writes of the rollout over its 4 steps: {big.writes_per_step:.2f} per step",
    ]
    return "; ".join(parts)


FIXES = [
    "Fixed after the first runs (N=100, before → after, per rollout while its new revision rolls out; the "
    "request counts do not depend on the machine's load): (1) a reconcile listed the track's pods (for the reason "
    "they are not ready) whenever a Deployment was not ready yet; a LIST reads every pod of the namespace (the "
    "local apiserver has no watch cache), so the cost grew with N per reconcile, N² in all: now only once the "
    "pods have been unready for 5 s (`observe.POD_LOOKUP_AFTER`), 2.8 → 0.4 pod LISTs; (2) every Deployment event "
    "woke the rollout, also status updates that change nothing the engine reads and the echo of its own writes: "
    "`deployment_changed` now wakes only when a signature of what `track_state` reads changed and the controller "
    "has observed the latest spec; (3) the operator's own status write was recognised as an echo only if it was "
    "its last write; under load the echo of one write arrives after the next and woke a needless reconcile: the "
    "last 4 resourceVersions are remembered; (2)+(3) with kube-controller-manager keeping up: 19.8 → 13.7 "
    "reconciles; (4) the router's check of the user's Ingress and Services (3 GETs) ran at every reconcile: a "
    "passing check is now trusted for 10 s per generation (a failing one is repeated every time), and a rollout "
    "without prewarm no longer GETs its (absent) prewarm DaemonSet at every reconcile (remembered 60 s): 146 → "
    "102 requests; all together 198 → 102 requests and 19.8 → 13.6 reconciles per rollout.",
    "Fixed in a second round (N=100, requests per step): (5) a reconcile read the rollout and both Deployments with "
    "three GETs although kopf's watches had just delivered them: the engine now reads them from a watch cache "
    "(`modelrollout.watchcache`), trusted only once the watch has delivered the echo of the operator's own last "
    "write to the object (or a GET showed the watch caught up), else read with a GET; (6) the reconcile that "
    "completed a step which ends with nothing to write (an analysis step's last pass, an elapsed pause) asked for "
    "an immediate second reconcile to start the next step: the next step now starts in the same decision "
    "(`core.plan.canary.run_step`), one reconcile, status write and round trip less per such step, and setWeight 50 no "
    "longer waits for a second pass through the queue; (7) the passing check of the user's Ingress and Services "
    "was trusted for 10 s, so a rollout lasting minutes re-read them (3 GETs) every 10 s: now 60 s, and any failed "
    "write makes the next reconcile check again at once (`observe.recheck`); (5)+(6)+(7): 25.9 → 14.4 requests "
    "per step on the same machine.",
    "Fixed in a third round (N=500, per rollout while its new revision rolls out): (8) a canary Deployment or "
    "Ingress that does not exist (before the first weight, after promotion) was asked for with a GET at every "
    "reconcile (404; a fifth of the operator's requests): the watch cache now knows absence too (a 404, a "
    "DELETED event or the operator's own delete, "
    "until an event or an own write shows the object): GETs of the canary Ingress 11.1 → 1.0 and of Deployments "
    "6.2 → 2.0 over both windows; (9) the absent prewarm DaemonSet of a rollout without prewarm is remembered per "
    "generation for 10 min instead of 60 s (3.2 → 1.5 GETs over both windows); (10) "
    "with the watch lagging behind the writes under load, every reconcile between an own write and its echo read "
    "the rollout with a GET, adding load where the apiserver was already short: in two of two runs the GETs of "
    "rollouts grew to 14–17 per rollout, the watch fell further behind, the new revisions took 212 and 256 s "
    "instead of 185 and 191 s; the cache "
    "now reads the apiserver's answer to the write (the object as written) until the echo, and only after "
    "another writer's event a GET: 0.3 GETs of rollouts per rollout; (11) the reason pods are not ready was "
    "listed (a LIST reads every pod of the namespace here) at every reconcile once they had been unready 5 s; "
    "under load pods start slowly, so at N=1000 that was 4.3 LISTs of some 3000 pods per rollout, N² in all: the "
    "answer is now reused for 10 s (`observe.POD_LOOKUP_EVERY`), and listed afresh at the progress deadline.",
    "Also fixed: the kopf wake-up handlers were sync functions run in kopf's executor threads, calling "
    "`asyncio.Event.set()` off the event loop (not thread-safe: the daemon's wake-up could wait for the loop's next "
    "unrelated event); they are async now. `Engine.written` kept an entry for every rollout ever reconciled; it "
    "is dropped when the rollout is gone.",
]


def _notes(runs: Sequence[Run]) -> list[str]:
    notes = [
        "A step is one of the four steps of the new revision; per-step figures divide everything the operator sent "
        "to the apiserver from the new revisions' apply to the last Succeeded (starting the canary, every "
        "analysis tick, the promotion, Events) by 4 N.",
        "Linear growth shows as ratio 1 for the per-step and latency rows and at most the N ratio for RSS; RSS "
        "includes the interpreter and libraries (idle before the first rollout: "
        + ", ".join(f"N={r.n} {_mib(r.rss_idle_mib)}" for r in runs) + ").",
        "First release (N rollouts created at once → all Succeeded): "
        + ", ".join(f"N={r.n} {r.first_release_s:.0f} s, {r.first_release_writes / r.n:.1f} writes and "
                    f"{r.first_release_requests / r.n:.1f} requests per rollout" for r in runs) + ".",
        "Operator CPU time while the new revisions rolled out: "
        + ", ".join(f"N={r.n} {r.cpu_s:.0f} s ({r.cpu_s / r.rollout_s * 100:.0f}% of one CPU)" for r in runs) + ".",
    ]
    notes.append(
        "Where a step's time goes: the rollouts' new revisions were applied at once, so their steps fall due within "
        "seconds of each other and the work comes in bursts of N reconciles. setWeight 50 is written by the "
        "reconcile whose evaluation completes the analysis step, setWeight 100 by the reconcile right after the one "
        "that wrote 50 (a weight is written and recorded before the next step moves it again), each a chain of "
        "sequential API requests ("
        + ", ".join(f"N={r.n}: {_num(sum(r.step_reconcile_requests) / len(r.step_reconcile_requests))} in a "
                    "weight-writing reconcile" for r in runs if r.step_reconcile_requests)
        + "); in a burst every request queues in the apiserver and etcd, which share the 2 CPUs with the "
        "controllers, kwok, Prometheus, the operator and other work on the machine (the apiserver without its watch "
        "cache: every watcher's events are decoded from etcd again), so a step's latency grows with the burst (N) "
        "once they are saturated, while the operator's own CPU stays below one core. The step that needs no "
        "reconcile of its own shows it: setWeight 50, carried out by the evaluation that completes the analysis "
        "step, "
        + ", ".join(f"p99 {ms(Summary.of(r.step_latency.get(50, [])).p99)} at N={r.n}" for r in runs)
        + "; setWeight 25 (woken by the canary becoming ready) and 100 (asked for at once after 50) each wait for a "
        "reconcile of their own, behind the burst, for one of the operator's 64 workers, all waiting on the "
        "apiserver.")
    if len(runs) > 1:
        base = min(runs, key=lambda r: r.n)
        big = max(runs, key=lambda r: r.n)

        def per(r: Run, kind: str) -> str:
            return _num(r.requests_by.get(kind, 0) / r.n)
        notes.append(
            f"What still grows faster than N: API requests per step ({_num(base.requests_per_step)} at N={base.n}, "
            f"{_num(big.requests_per_step)} at N={big.n}) because reconciles per rollout do "
            f"({_num(base.reconciles / base.n)} → {_num(big.reconciles / big.n)}), while writes per step stay flat. "
            "The longer every rollout takes on the saturated machine, the more analysis evaluations (one every "
            "interval while it is active) and 5 s safety-net polls while it waits for pods (`core.plan.POLL_SECONDS`) "
            "it gets; those read from memory now, but the periodic re-check of the user's Services and Ingress "
            f"grows with the duration too: every 60 s (get services {per(base, 'get services')} → "
            f"{per(big, 'get services')} per rollout; a failed write already makes the next reconcile check at once).")
    costed = [r for r in runs if apiserver_cost(r) == apiserver_cost(r)]
    if costed:
        cpus = len(os.sched_getaffinity(0))
        notes.append(
            "Why the p99 target cannot be met here when all N steps fall due at once: the apiserver is the busiest "
            "process (table above) and every request costs it CPU ("
            + ", ".join(f"N={r.n}: {_ms1(apiserver_cost(r))} per request, {r.apiserver_requests / r.rollout_s:.0f} "
                        f"requests/s, {r.cpu_by.get('kube-apiserver', 0) / r.rollout_s * 100:.0f}% of one CPU"
                        for r in costed)
            + "). A step's weight writes of N rollouts due at once need at least N × (writes per weight-writing "
            f"reconcile) × (CPU per request) ÷ {cpus} CPUs of apiserver time even if it had the whole machine and "
            "nothing else ran (no reads, no controllers, no operator): "
            + ", ".join(f"N={r.n}: {ms(burst_floor(r, cpus))}" for r in costed)
            + f". The last of those steps cannot be carried out sooner, so with the whole control plane on "
            f"{cpus} CPUs the p99 target of {TARGET_P99_S:g} s is out of reach once that floor nears it; the rest of "
            "the measured latency is the other work queued with it (the controllers' writes the steps cause, the "
            "operator's reads, analysis ticks).")
    notes += FIXES
    for r in runs:
        if r.reconcile_errors or r.log_errors or r.problems:
            notes.append(f"N={r.n}: {r.reconcile_errors:.0f} reconcile errors, {r.log_errors} error lines in the "
                         f"operator log" + (f"; {'; '.join(r.problems)}" if r.problems else ""))
    return notes


METHOD = f"""\
N ModelRollouts progressing at once on one operator (`modelrollout run`, default `--workers 64`, watching one
namespace) against the local control plane (two kwok nodes, each taking up to 1M pods, so 2 N pods fit;
kube-controller-manager with `--kube-api-qps {CONTROLLER_QPS}` instead of 20, so that its Deployment and ReplicaSet
controllers keep up) and a real Prometheus (1 s scrape). One exporter process (`bench.scale_exporter`) serves 2 N series
`model_api_compatibility_score{{rollout, revision, track}}` (each rollout's stable and canary revision, value 1),
scraped by Prometheus; each rollout's analysis queries `{QUERY}` (min 0.99) and so selects its own canary
series. Per N a fresh environment: the N rollouts (NGINX router: Service + Ingress each, {REPLICAS} replica)
are created at once and released (first release, Succeeded); then every one gets a new revision at once
(a PATCH of `spec.template`), with steps `setWeight 25` → `analysis {{passes: 2}}` → `setWeight 50` →
`setWeight 100` and an analysis every {INTERVAL_S:g} s, and the benchmark waits until all N are Succeeded on the
new revision. Measured in that window: the latency of the three setWeight steps, from the step becoming due
to the operator's PATCH of the canary Ingress with its weight (done, apiserver audit log; the PATCH is matched
to a weight by the benchmark's watch on the canary Ingresses). Due: for `setWeight 25` the later of
`status.stepStartedAt` of step 0 and the controller-manager's status update that made the canary Deployment
ready (its pod must be ready before traffic moves); for 50 and 100, `status.stepStartedAt` of that step, written
by the reconcile that finished the step before (the next one is due at once); the reconcile that records the
analysis step's last pass carries out `setWeight 50` itself, so its status shows step 3 started at that moment,
which is when 50 fell due. A reconcile: the operator's `modelrollout_reconciles_total`; the writes of one
reconcile: the operator's writes of one rollout in the audit log, cut where the fixed order in which a reconcile
writes (workloads and routes, status, the rollout's annotations, Events) starts again. Analysis lateness: the period
between consecutive `status.lastAnalysisAt` minus the interval. RSS: the operator's VmHWM (peak) and VmRSS when
the last rollout is Succeeded (`/proc/PID/status`). API requests and writes: the operator's requests in the
namespace in the audit log (user agents `OpenAPI-Generator`, the engine, and `kopf`; the operator shares the
admin user with the benchmark, whose client is told apart by its own agent). Prometheus queries: Prometheus's
own `prometheus_http_requests_total{{handler="/api/v1/query"}}` over the window (the benchmark queries nothing
then), per analysis interval of wall time and per evaluation (the operator's
`modelrollout_analysis_evaluations_total`).
"""


# ---------------------------------------------------------------------------------------------- CLI


def measure(ns: Sequence[int], *, keep: bool = False, interval_s: float = INTERVAL_S,
            on_run: Callable[[list[Run]], None] | None = None) -> tuple[Result, list[Run]]:
    """One run per N (each in a fresh environment); ``on_run`` gets the runs so far after each one."""
    started = now()
    runs: list[Run] = []
    with sigterm_as_exit():
        for n in ns:
            with environment(f"{NAME}-{n}", with_prometheus=True, keep=keep, controller_qps=CONTROLLER_QPS) as env:
                print(f"[{NAME}] N={n}: environment up in {env.setup_seconds:.1f}s ({env.root})", file=sys.stderr)
                run = run_scale(env, n, interval_s=interval_s)
                runs.append(run)
                s = Summary.of(run.latencies)
                print(f"[{NAME}] N={n}: {run.succeeded}/{n} Succeeded in {run.rollout_s:.0f}s; step p50 {ms(s.p50)} "
                      f"p99 {ms(s.p99)}; RSS peak {run.rss_peak_mib:.0f} MiB end {run.rss_end_mib:.0f} MiB; "
                      f"{run.requests_per_step:.1f} req/step {run.writes_per_step:.2f} writes/step; "
                      f"{run.queries_per_interval:.1f} queries/interval; writes {run.writes_by}", file=sys.stderr)
                if on_run is not None:
                    on_run(runs)
    return build_result(runs, now() - started), runs


def load_run(raw: dict[str, Any]) -> Run:
    """A Run from its ``dataclasses.asdict`` form read back from JSON (integer keys came back as strings)."""
    run = Run(**raw)
    run.step_latency = {int(k): list(v) for k, v in raw["step_latency"].items()}
    run.detail = [(str(a), int(b), float(c), float(d)) for a, b, c, d in raw["detail"]]
    return run


def main(argv: list[str] | None = None) -> int:
    from bench.report import per_n_cli

    def run(args: argparse.Namespace, save: Callable[[Mapping[str, Any]], None]) -> Result:
        started = now()

        def saved(runs: list[Run]) -> None:
            save({"result": {"wall_seconds": now() - started, "date": today()}, "runs": [asdict(r) for r in runs]})

        result, runs = measure(sorted(set(args.n)), keep=args.keep, interval_s=args.interval, on_run=saved)
        save({"result": json.loads(result.to_json()), "runs": [asdict(r) for r in runs]})
        return result

    def render(saved: Mapping[str, Any]) -> Result:
        return build_result([load_run(r) for r in saved["runs"]], float(saved["result"]["wall_seconds"]),
                            str(saved["result"]["date"]))

    return per_n_cli(argv, name=NAME, doc=__doc__, default_n=DEFAULT_N, measure=run, render=render,
                     options=lambda p: p.add_argument("--interval", type=float, default=INTERVAL_S,
                                                      help="analysis interval, seconds"))


if __name__ == "__main__":
    sys.exit(main())
