"""peer: this operator and Argo Rollouts side by side on one local control plane (scale and breach → stable).

Per N a fresh environment (control plane with kwok nodes, Prometheus with a 1 s scrape, the operator watching its
namespace) in which, one after another, each controller runs

- the scale scenario: N rollouts (NGINX traffic routing: Services and an Ingress each, 1 replica) created at once
  and released; then every one gets a new revision at once, steps ``setWeight 20`` → ``setWeight 100``, no
  analysis, until all N are promoted. Measured in that window: the time until all N are promoted, the
  controller's API requests per rollout (Events excluded; apiserver audit log, by user agent), its CPU seconds,
  its RSS at the end, and the apiserver's requests of all clients (the benchmark's own left out);
- (first N only) the breach scenario: ``setWeight 20`` → ``pause {}`` with an analysis every 1 s of the same
  Prometheus query on a real exporter; the exporter's score drops below the threshold and the time from the
  breach being queryable in Prometheus (t0) to all traffic on stable (t1: the canary Ingress deleted or at
  weight 0, seen by a watch) is taken over trials.

Argo Rollouts v1.10.2 (``hack/argo/build.sh``, built on demand) runs out of cluster, namespaced, without leader
election, once with its client defaults (40 requests/s, burst 80) and once with ``--qps 1000 --burst 1000``.

    PYTHONPATH=operator python -m bench.peer [--n 100 300] [--trials 10] [--update-docs] [--json FILE] [--keep]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

from kubernetes import client

from bench.common import (
    BENCH_AGENT,
    GROUP,
    PLURAL,
    VERSION,
    BenchTimeout,
    Env,
    Exporter,
    Json,
    ObjectWatch,
    Result,
    Summary,
    Table,
    WatchEvent,
    environment,
    ingress,
    load_average,
    load_text,
    ms,
    now,
    parse_k8s_time,
    poll,
    prometheus_value,
    rollout,
    service,
    sigterm_as_exit,
    today,
)
from bench.scale import CONTROLLER_QPS, OPERATOR_AGENTS, ListWatch, cpu_seconds, proc_status
from devenv.localenv.controlplane import built
from devenv.localenv.procs import CommandFailed, ManagedProcess, free_port, port_open

NAME = "peer"
TITLE = "Side by side with Argo Rollouts (scale and breach → stable, one control plane)"
ARGO_VERSION = "v1.10.2"
ARGO_GROUP, ARGO_VERSION_API = "argoproj.io", "v1alpha1"
ARGO_AGENTS = ("rollouts-controller",)
"""Argo's clients keep client-go's default user agent: the binary's name, ``rollouts-controller/…``."""
ARGO_RAISED_QPS = 1000
STEPS: list[Json] = [{"setWeight": 20}, {"setWeight": 100}]
REPLICAS = 1
DEFAULT_N = (100, 300)
DEFAULT_TRIALS = 10
CREATE_THREADS = 4
BREACH_STEPS: list[Json] = [{"setWeight": 20}, {"pause": {}}]
BREACH_REPLICAS = 2
BREACH_INTERVAL_S = 1.0
HOLD_S = 2.0
COMPAT = 'min(model_api_compatibility_score{rollout="{{rollout}}",track="{{track}}"})'
WEIGHT = "nginx.ingress.kubernetes.io/canary-weight"

MODELROLLOUT = "ModelRollout"
ARGO_DEFAULT = "Argo (defaults)"
ARGO_RAISED = f"Argo (--qps {ARGO_RAISED_QPS})"


# ---------------------------------------------------------------------------------------------- pure parts


@dataclass
class Tally:
    """What the apiserver's audit log says about one window (completed requests, ``received`` ≤ the window's end)."""

    controller: int = 0
    """The controller's requests in its namespace, Events excluded."""
    controller_events: int = 0
    controller_by: Counter[str] = field(default_factory=Counter)
    """``verb resource[/subresource][ (dry run)]`` -> the controller's requests (Events excluded)."""
    all_clients: int = 0
    """Every client's requests in every namespace (and cluster-scoped), the benchmark's own excluded."""


def tally(lines: Iterable[bytes], *, namespace: str, agents: Sequence[str], until: float,
          exclude_agent: str = BENCH_AGENT) -> Tally:
    """Count the audit log ``lines`` (JSON, one event a line) by user agent.

    A request is the controller's when its user agent starts with one of ``agents`` and its object is in
    ``namespace``; only ``ResponseComplete`` stages count, requests received after ``until`` (the :func:`now`
    clock) and lines that do not parse (one still being written) are skipped.
    """
    out = Tally()
    prefixes = tuple(agents)
    for line in lines:
        if b'"ResponseComplete"' not in line:
            continue
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if ev.get("stage") != "ResponseComplete":
            continue
        try:
            received = parse_k8s_time(str(ev["requestReceivedTimestamp"]))
        except (KeyError, ValueError):
            continue
        if received > until:
            continue
        agent = str(ev.get("userAgent") or "")
        if agent.startswith(exclude_agent):
            continue
        out.all_clients += 1
        ref = ev.get("objectRef") or {}
        if not agent.startswith(prefixes) or ref.get("namespace") != namespace:
            continue
        resource = str(ref.get("resource") or "")
        if resource == "events":
            out.controller_events += 1
            continue
        out.controller += 1
        sub = str(ref.get("subresource") or "")
        dry = " (dry run)" if "dryRun=" in str(ev.get("requestURI") or "") else ""
        out.controller_by[f"{ev.get('verb')} {resource}" + (f"/{sub}" if sub else "") + dry] += 1
    return out


@dataclass(frozen=True)
class Target:
    """ModelRollout / Argo ≤ ``limit``, for one figure."""

    what: str
    ours: float
    theirs: float
    limit: float
    unit: str = ""

    @property
    def ratio(self) -> float:
        return self.ours / self.theirs if self.theirs else float("nan")

    @property
    def met(self) -> bool:
        return self.ratio <= self.limit

    def verdict(self) -> str:
        """``met`` or by how much the ratio exceeds the limit (percent of the limit)."""
        r = self.ratio
        if r != r:
            return "n/a"
        if self.met:
            return "met"
        return f"missed by {(r / self.limit - 1) * 100:.0f}% (ratio {r:.2f}, target ≤ {self.limit:g})"


def target_rows(targets: Sequence[Target]) -> list[list[str]]:
    """The ratio/target table's rows: figure, ModelRollout, Argo, ratio, target, verdict."""
    return [[t.what, _fmt(t.ours, t.unit), _fmt(t.theirs, t.unit),
             "n/a" if t.ratio != t.ratio else f"{t.ratio:.2f}", f"≤ {t.limit:g}", t.verdict()] for t in targets]


TARGET_HEADER = ["figure", "ModelRollout", "Argo", "ratio", "target", "verdict"]


def _fmt(value: float, unit: str) -> str:
    if value != value:
        return "n/a"
    if unit == "ms":
        return ms(value)
    if unit == "MiB":
        return f"{value:.0f} MiB"
    if unit == "s":
        return f"{value:.1f} s"
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


# ---------------------------------------------------------------------------------------------- Argo


def install_argo_crds(env: Env, bin_dir: Path) -> None:
    for crd in sorted((bin_dir / "crds").glob("*.yaml")):
        env.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd))
    crds = [f"crd/{plural}.{ARGO_GROUP}" for plural in ("rollouts", "analysistemplates", "analysisruns")]
    # kubectl wait fails at once while a new CRD has no status.conditions yet: ask again until it holds
    poll(lambda: env.kubectl("wait", "--for=condition=Established", *crds, "--timeout=10s",
                             check=False).returncode == 0 or None, 60, 0.2, "the Argo CRDs Established")


def argo_process(env: Env, bin_dir: Path, namespace: str, *, qps: int | None, log: Path) -> ManagedProcess:
    """Argo's controller out of cluster for ``namespace``; metrics and healthz on 127.0.0.1 (see the build)."""
    argv = [str(bin_dir / "rollouts-controller"), "--namespaced", f"--namespace={namespace}", "--leader-elect=false",
            f"--kubeconfig={env.cp.kubeconfig}", f"--metricsPort={free_port()}", f"--healthzPort={free_port()}"]
    if qps is not None:
        argv += [f"--qps={qps}", f"--burst={qps}"]
    return ManagedProcess(name=f"argo-rollouts-{namespace}", argv=argv, log=log)


@contextlib.contextmanager
def argo_running(env: Env, bin_dir: Path, namespace: str, qps: int | None) -> Iterator[ManagedProcess]:
    proc = argo_process(env, bin_dir, namespace, qps=qps, log=env.root / f"argo-{namespace}.log")
    proc.start()
    try:
        port = int(next(a for a in proc.argv if a.startswith("--healthzPort=")).split("=")[1])

        def up() -> bool | None:
            proc.check_alive()
            return True if port_open(port) else None

        poll(up, 60, 0.05, "Argo's healthz endpoint")
        yield proc
    finally:
        proc.stop(10)


def argo_rollout(name: str, *, image: str, steps: list[Json], replicas: int, **canary: Any) -> Json:
    """An Argo Rollout routed by NGINX like :func:`bench.common.rollout`: Ingress NAME -> NAME-stable; the user
    creates both Services (Argo only edits their selectors)."""
    return {
        "apiVersion": f"{ARGO_GROUP}/{ARGO_VERSION_API}", "kind": "Rollout", "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                         "spec": {"containers": [{"name": "model", "image": image,
                                                  "ports": [{"containerPort": 8080}]}]}},
            "strategy": {"canary": {"canaryService": f"{name}-canary", "stableService": f"{name}-stable",
                                    "trafficRouting": {"nginx": {"stableIngress": name}},
                                    "steps": steps, **canary}},
        },
    }


def argo_services(name: str) -> list[Json]:
    """The Services Argo's NGINX routing names: NAME-stable and NAME-canary, selecting the rollout's pods (Argo
    adds the pod-template hash to their selectors)."""
    out = []
    for track in ("stable", "canary"):
        svc = service(f"{name}-{track}")
        svc["spec"]["selector"] = {"app": name}
        out.append(svc)
    return out


def argo_canary_ingress(name: str) -> str:
    return f"{name}-{name}-canary"


def argo_promoted(obj: Json) -> bool:
    """The controller saw the latest spec and the pods of it are the stable ones, healthy."""
    st = obj.get("status") or {}
    gen = (obj.get("metadata") or {}).get("generation")
    return (str(st.get("observedGeneration") or "") == str(gen) and st.get("phase") == "Healthy"
            and bool(st.get("stableRS")) and st.get("stableRS") == st.get("currentPodHash"))


def modelrollout_promoted(obj: Json, revision: str) -> bool:
    st = obj.get("status") or {}
    return st.get("phase") == "Succeeded" and st.get("stableRevision") == revision


# ---------------------------------------------------------------------------------------------- scale


@dataclass
class ScaleRun:
    controller: str
    n: int
    promoted_s: float = float("nan")
    promoted: int = 0
    first_release_s: float = float("nan")
    requests: int = 0
    events: int = 0
    requests_by: dict[str, int] = field(default_factory=dict)
    cpu_s: float = float("nan")
    rss_end_mib: float = float("nan")
    apiserver_requests: int = 0
    load_start: float = float("nan")

    @property
    def requests_per_rollout(self) -> float:
        return self.requests / self.n if self.n else float("nan")


class Promotions:
    """A namespace-wide watch of one kind of rollout: the first arrival of each rollout promoted on a target."""

    def __init__(self, env: Env, namespace: str, *, argo: bool) -> None:
        self.lock = threading.Lock()
        self.latest: dict[str, Json] = {}
        self.done_at: dict[str, float] = {}
        self.target: Callable[[str, Json], bool] = lambda name, obj: False
        self.watch = ListWatch(env.cp.kubeconfig, namespace, "modelrollouts", self.on_event)
        if argo:  # the same list-and-watch loop, on Argo's Rollouts
            self.watch.lister = functools.partial(
                client.CustomObjectsApi(self.watch.api_client).list_namespaced_custom_object,
                ARGO_GROUP, ARGO_VERSION_API, namespace, "rollouts")

    def on_event(self, at: float, kind: str, obj: Json) -> None:
        name = obj["metadata"]["name"]
        with self.lock:
            self.latest[name] = obj
            if name not in self.done_at and self.target(name, obj):
                self.done_at[name] = at

    def aim(self, target: Callable[[str, Json], bool]) -> None:
        """From now on record when each rollout satisfies ``target`` (those that already do count at once)."""
        with self.lock:
            self.target = target
            self.done_at = {}
            at = now()
            for name, obj in self.latest.items():
                if target(name, obj):
                    self.done_at[name] = at

    def wait_all(self, names: Sequence[str], timeout: float, what: str, alive: Callable[[], None],
                 log: Callable[[str], None]) -> float:
        """Until every one of ``names`` is done; the last arrival."""
        last_report = [now()]

        def check() -> float | None:
            alive()
            with self.lock:
                done = [self.done_at[n] for n in names if n in self.done_at]
            if now() - last_report[0] >= 15:
                last_report[0] = now()
                log(f"{what}: {len(done)}/{len(names)} (load {load_average():.1f})")
            return max(done) if len(done) == len(names) else None

        return poll(check, timeout, 0.25, what)


def _parallel(fn: Callable[[str], object], names: Iterable[str]) -> None:
    with ThreadPoolExecutor(CREATE_THREADS) as pool:
        for _ in pool.map(fn, names):
            pass


def _create_namespace(env: Env, ns: str) -> None:
    env.cp.kubectl("create", "namespace", ns)
    poll(lambda: True if env.cp.kubectl("get", "serviceaccount", "default", "-n", ns, check=False).returncode == 0
         else None, 60, 0.2, f"ServiceAccount {ns}/default")


def _delete_namespace(env: Env, ns: str, timeout: float, log: Callable[[str], None]) -> None:
    """Remove a finished run's objects so the next run starts on the same etcd size; bounded."""
    env.cp.kubectl("delete", "namespace", ns, "--wait=false", check=False)
    try:
        poll(lambda: True if env.cp.kubectl("get", "namespace", ns, check=False).returncode != 0 else None,
             timeout, 1.0, f"namespace {ns} gone")
    except BenchTimeout:
        log(f"namespace {ns} still terminating after {timeout:.0f}s; going on")


def run_scale(env: Env, controller: str, n: int, *, namespace: str, pid: int, alive: Callable[[], None],
              log: Callable[[str], None]) -> ScaleRun:
    """The scale scenario for one controller (already running for ``namespace``)."""
    argo = controller != MODELROLLOUT
    run = ScaleRun(controller=controller, n=n, load_start=load_average())
    timeout = 180 + 1.5 * n
    names = [f"p{i:04d}" for i in range(n)]
    custom = client.CustomObjectsApi(env.api_client)
    core = client.CoreV1Api(env.api_client)
    networking = client.NetworkingV1Api(env.api_client)
    if argo:
        group, version, plural = ARGO_GROUP, ARGO_VERSION_API, "rollouts"
        first = {x: argo_rollout(x, image="model:1", steps=STEPS, replicas=REPLICAS) for x in names}
        second = {x: argo_rollout(x, image="model:2", steps=STEPS, replicas=REPLICAS) for x in names}
    else:
        from bench.scale import revision

        group, version, plural = GROUP, VERSION, PLURAL
        first = {x: rollout(x, image="model:1", steps=STEPS, replicas=REPLICAS) for x in names}
        second = {x: rollout(x, image="model:2", steps=STEPS, replicas=REPLICAS) for x in names}
        rev1 = {x: revision(first[x]) for x in names}
        rev2 = {x: revision(second[x]) for x in names}

    def promoted_on(release: int) -> Callable[[str, Json], bool]:
        """Promoted on the first (1) or the second (2) release's template."""
        if argo:
            image = f"model:{release}"
            return lambda x, obj: argo_promoted(obj) and \
                obj["spec"]["template"]["spec"]["containers"][0]["image"] == image
        revs = rev1 if release == 1 else rev2
        return lambda x, obj: modelrollout_promoted(obj, revs[x])

    watch = Promotions(env, namespace, argo=argo)
    with watch.watch:
        watch.aim(promoted_on(1))
        t0 = now()

        def create(x: str) -> None:
            # a dict body is sent as it is
            core.create_namespaced_service(namespace, cast(Any, service(x)))
            if argo:
                for svc in argo_services(x):
                    core.create_namespaced_service(namespace, cast(Any, svc))
            networking.create_namespaced_ingress(namespace, cast(Any, ingress(x, f"{x}-stable")))
            custom.create_namespaced_custom_object(group, version, namespace, plural, first[x])

        _parallel(create, names)
        watch.wait_all(names, timeout, f"{controller}: first release of {n}", alive, log)
        run.first_release_s = now() - t0
        log(f"{controller} N={n}: first release in {run.first_release_s:.1f}s")

        watch.aim(promoted_on(2))
        cpu0 = cpu_seconds(pid)
        env.audit.mark()
        t1 = now()

        def update(x: str) -> None:
            custom.patch_namespaced_custom_object(group, version, namespace, plural, x,
                                                  {"spec": {"template": second[x]["spec"]["template"]}})

        _parallel(update, names)
        last = watch.wait_all(names, timeout, f"{controller}: {n} promoted", alive, log)
        t2 = now()
        run.promoted_s = last - t1
        run.promoted = len(watch.done_at)
        run.cpu_s = cpu_seconds(pid) - cpu0
        run.rss_end_mib = proc_status(pid).get("VmRSS", 0) / 1024
    agents = ARGO_AGENTS if argo else OPERATOR_AGENTS

    def counted() -> Tally:
        with env.audit.path.open("rb") as f:
            f.seek(env.audit.offset)
            return tally(f, namespace=namespace, agents=agents, until=t2)

    seen = settled(counted)
    run.requests, run.events = seen.controller, seen.controller_events
    run.requests_by = dict(seen.controller_by.most_common())
    run.apiserver_requests = seen.all_clients
    log(f"{controller} N={n}: all promoted in {run.promoted_s:.1f}s; {run.requests_per_rollout:.1f} requests per "
        f"rollout; CPU {run.cpu_s:.1f}s; RSS {run.rss_end_mib:.0f} MiB; apiserver {run.apiserver_requests}")
    return run


def settled(read: Callable[[], Tally], timeout: float = 10) -> Tally:
    """The audit log is written as requests complete: read it until two reads half a second apart agree."""
    previous = [-1]

    def check() -> Tally | None:
        t = read()
        same = t.all_clients == previous[0]
        previous[0] = t.all_clients
        return t if same else None

    return poll(check, timeout, 0.5, "the audit log settled")


# ---------------------------------------------------------------------------------------------- breach


@dataclass
class BreachTrial:
    controller: str
    name: str
    detect: float
    """t1 - t0: breach queryable in Prometheus → all traffic on stable (the headline)."""
    scrape: float
    """t0 - t_set."""


def _breach_query(name: str) -> str:
    return COMPAT.replace("{{rollout}}", name).replace("{{track}}", "canary")


def _argo_template(name: str, prometheus_url: str) -> Json:
    return {"apiVersion": f"{ARGO_GROUP}/{ARGO_VERSION_API}", "kind": "AnalysisTemplate",
            "metadata": {"name": f"{name}-compat"},
            "spec": {"metrics": [{"name": "api-compatibility", "interval": f"{BREACH_INTERVAL_S:g}s",
                                  "failureLimit": 0, "successCondition": "result[0] >= 0.99",
                                  "provider": {"prometheus": {"address": prometheus_url,
                                                              "query": _breach_query(name)}}}]}}


def _argo_paused_with_passing_analysis(env: Env, ns: str, name: str) -> bool | None:
    custom = client.CustomObjectsApi(env.api_client)
    ro = cast(Json, custom.get_namespaced_custom_object(ARGO_GROUP, ARGO_VERSION_API, ns, "rollouts", name))
    if (ro.get("status") or {}).get("phase") != "Paused":
        return None
    runs = cast(Json, custom.list_namespaced_custom_object(ARGO_GROUP, ARGO_VERSION_API, ns, "analysisruns"))
    for ar in runs.get("items", []):
        if not ar["metadata"]["name"].startswith(f"{name}-"):
            continue
        results = (ar.get("status") or {}).get("metricResults") or []
        if results and all(int(m.get("successful") or 0) >= 1 for m in results):
            return True
    return None


def run_argo_breach(env: Env, ns: str, name: str, rng: random.Random) -> BreachTrial:
    """One breach trial of Argo in ``ns``, measured as :func:`bench.breach_to_stable.run_trial` measures ours."""
    prom = env.prometheus
    assert prom is not None
    exporter = Exporter(env.root, name).start()
    custom = client.CustomObjectsApi(env.api_client)
    try:
        prom.set_targets([(exporter.address, {})])
        objects = [service(name), *argo_services(name), ingress(name, f"{name}-stable"),
                   _argo_template(name, prom.url)]
        env.kubectl("-n", ns, "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                                     "items": objects}))
        canary: Json = {"analysis": {"templates": [{"templateName": f"{name}-compat"}]},
                        "abortScaleDownDelaySeconds": 0}
        body = argo_rollout(name, image="model:1", steps=BREACH_STEPS, replicas=BREACH_REPLICAS, **canary)
        custom.create_namespaced_custom_object(ARGO_GROUP, ARGO_VERSION_API, ns, "rollouts", body)

        def healthy() -> bool | None:
            env.check_alive()
            obj = custom.get_namespaced_custom_object(ARGO_GROUP, ARGO_VERSION_API, ns, "rollouts", name)
            return True if argo_promoted(cast(Json, obj)) else None

        poll(healthy, 120, 0.1, f"Argo {name} first release Healthy")
        query = _breach_query(name)
        poll(lambda: True if prometheus_value(prom, query) == 1.0 else None, 60, 0.1, f"{query} == 1")
        time.sleep(rng.uniform(0.0, BREACH_INTERVAL_S))  # the analysis clock's phase against the scrapes varies
        custom.patch_namespaced_custom_object(ARGO_GROUP, ARGO_VERSION_API, ns, "rollouts", name,
                                              {"spec": {"template": {"spec": {"containers": [
                                                  {"name": "model", "image": "model:2",
                                                   "ports": [{"containerPort": 8080}]}]}}}})
        canary_ingress = argo_canary_ingress(name)
        poll(lambda: _argo_paused_with_passing_analysis(env, ns, name), 120, 0.1,
             f"Argo {name} Paused at weight 20 with a passing measurement")
        with ObjectWatch(env.api_client, ns, "ingress", canary_ingress) as watch:
            watch.wait_for(lambda e: e.type == "ADDED" and e.weight == "20", 10, f"{canary_ingress} at weight 20")
            time.sleep(HOLD_S + rng.uniform(0.0, 1.0))
            exporter.set_score(0.5)
            t_set = now()
            t0 = poll(lambda: now() if prometheus_value(prom, query) == 0.5 else None, 30, 0.010,
                      f"{query} == 0.5 in Prometheus")
            gone: WatchEvent = watch.wait_for(lambda e: e.type == "DELETED" or e.weight == "0", 30,
                                              f"{canary_ingress} at weight 0")
        return BreachTrial(ARGO_DEFAULT, name, detect=gone.at - t0, scrape=t0 - t_set)
    finally:
        exporter.stop()
        prom.set_targets([])


def run_breach(env: Env, bin_dir: Path, trials: int, log: Callable[[str], None]) -> dict[str, list[BreachTrial]]:
    """``trials`` measured trials (plus a warm-up) of each controller, ours first, in one environment."""
    from bench import breach_to_stable

    out: dict[str, list[BreachTrial]] = {MODELROLLOUT: [], ARGO_DEFAULT: []}
    rng = random.Random(20261207)
    previous: str | None = None
    for i in range(trials + 1):
        name = f"mbreach-{i:02d}"
        try:
            t = breach_to_stable.run_trial(env, name, rng, previous)
        except (BenchTimeout, CommandFailed) as exc:
            log(f"ModelRollout breach {name} FAILED: {exc}")
            continue
        finally:
            env.delete_rollout(name)
            previous = name
        log(f"ModelRollout breach {name}: t1-t0 {ms(t.detect)}")
        if i > 0:
            out[MODELROLLOUT].append(BreachTrial(MODELROLLOUT, name, t.detect, t.scrape))
    ns = "peer-argo-breach"
    _create_namespace(env, ns)
    with argo_running(env, bin_dir, ns, None) as argo:
        for i in range(trials + 1):
            name = f"abreach-{i:02d}"
            try:
                trial = run_argo_breach(env, ns, name, rng)
            except (BenchTimeout, CommandFailed) as exc:
                log(f"Argo breach {name} FAILED: {exc}")
                continue
            finally:
                env.kubectl("-n", ns, "delete", f"rollout.{ARGO_GROUP}/{name}", f"service/{name}",
                            f"service/{name}-stable", f"service/{name}-canary", f"ingress/{name}",
                            f"analysistemplate.{ARGO_GROUP}/{name}-compat", "--wait=false", "--ignore-not-found",
                            check=False)
            argo.check_alive()
            log(f"Argo breach {name}: t1-t0 {ms(trial.detect)}")
            if i > 0:
                out[ARGO_DEFAULT].append(trial)
    return out


# ---------------------------------------------------------------------------------------------- report


def targets_for(runs: Sequence[ScaleRun], breach: dict[str, list[BreachTrial]] | None) -> list[Target]:
    """The issue's targets for one N's three scale runs (and the breach trials, if given)."""
    by = {r.controller: r for r in runs}
    ours, argo, raised = by.get(MODELROLLOUT), by.get(ARGO_DEFAULT), by.get(ARGO_RAISED)
    out: list[Target] = []
    if ours is not None and argo is not None:
        out += [Target("time until all N promoted vs Argo (defaults)", ours.promoted_s, argo.promoted_s, 0.67, "s")]
    if ours is not None and raised is not None:
        out += [Target(f"time until all N promoted vs Argo (--qps {ARGO_RAISED_QPS})", ours.promoted_s,
                       raised.promoted_s, 1.0, "s")]
    if ours is not None and argo is not None:
        out += [Target("controller API requests per rollout (Events excluded)", ours.requests_per_rollout,
                       argo.requests_per_rollout, 1.0),
                Target("controller CPU", ours.cpu_s, argo.cpu_s, 1.0, "s"),
                Target("controller RSS at the end", ours.rss_end_mib, argo.rss_end_mib, 1.0, "MiB")]
    if breach and breach.get(MODELROLLOUT) and breach.get(ARGO_DEFAULT):
        out.append(Target("breach → stable p99", Summary.of([t.detect for t in breach[MODELROLLOUT]]).p99,
                          Summary.of([t.detect for t in breach[ARGO_DEFAULT]]).p99, 1.0, "ms"))
    return out


METHOD = f"""\
Both controllers on one local control plane (two kwok nodes; kube-controller-manager with `--kube-api-qps
{CONTROLLER_QPS}`), one after another in the same run, each in a namespace of its own (deleted after its run,
so each starts on the same etcd): this operator (`modelrollout run`, its defaults) and Argo Rollouts
{ARGO_VERSION} (`hack/argo/build.sh`: the Go module proxy's module, its `rollouts-controller`, out of cluster with
`--namespaced --namespace=NS --leader-elect=false --kubeconfig …`), once with Argo's client defaults (40
requests/s, burst 80) and once with `--qps {ARGO_RAISED_QPS} --burst {ARGO_RAISED_QPS}`. Argo's metrics and
healthz servers listen on 0.0.0.0 with no flag to change it; the build compiles them onto 127.0.0.1.

Scale: N rollouts, NGINX traffic routing for both (a Service and an Ingress `NAME` → `NAME-stable` each; Argo's
Rollout names the `NAME-stable` / `NAME-canary` Services the user creates, this operator creates its own), 1
replica, created at once and released; then each gets a new image at once (a PATCH of `spec.template`), steps
`setWeight 20` → `setWeight 100`, no analysis. Measured from the PATCHes to the arrival (a watch on the rollouts)
of the last one promoted (ours: `Succeeded` on the new revision; Argo: `Healthy`, `stableRS == currentPodHash`,
`observedGeneration` current): that time; the controller's API requests in its namespace per rollout, Events
excluded (apiserver audit log, by user agent: ours `OpenAPI-Generator` and `kopf`, Argo's `rollouts-controller`);
its CPU seconds (`/proc/PID/stat`); its RSS when the last is promoted (`VmRSS`); the apiserver's requests of all
clients in that window (audit log; the benchmark's own watch left out).

Breach → stable (first N's environment, before the scale runs): per trial one rollout, 2 replicas, steps
`setWeight 20` → `pause {{}}`, an analysis every {BREACH_INTERVAL_S:g} s of `{COMPAT}` (min 0.99, no failure
tolerated) on a real exporter (`compat_probe.refserver`) scraped every 1 s by the same Prometheus; ours as in
the breach-to-stable section (`onFailure: rollback`, `scaleDownDelay: 0s`), Argo with a background analysis
of an AnalysisTemplate of the prometheus provider (`successCondition: result[0] >= 0.99`, `failureLimit: 0`,
`abortScaleDownDelaySeconds: 0`). At the pause with a passing measurement, after {HOLD_S:g}–{HOLD_S + 1:g} s, the
exporter's score drops to 0.5; t0 is the first answer of 0.5 to the same query (polled every 10 ms), t1 the
arrival of the watch event that shows no traffic on the canary (ours deletes the canary Ingress; Argo sets its
`canary-weight` to 0).
"""


def excess_by_kind(ours: ScaleRun, theirs: ScaleRun, top: int = 6) -> list[tuple[str, float]]:
    """Request kinds (``verb resource``) ours sends more of per rollout than ``theirs``, largest first.

    Argo's custom resource is ``rollouts`` where ours is ``modelrollouts``: compared under one name."""
    def per(r: ScaleRun) -> Counter[str]:
        out: Counter[str] = Counter()
        for kind, count in r.requests_by.items():
            out[kind.replace("modelrollouts", "rollouts")] += count / r.n
        return out

    a, b = per(ours), per(theirs)
    diff = [(k, a[k] - b.get(k, 0.0)) for k in a]
    return sorted([(k, d) for k, d in diff if d >= 0.05], key=lambda kd: -kd[1])[:top]


def _scale_table(runs: Sequence[ScaleRun]) -> Table:
    order = {MODELROLLOUT: 0, ARGO_DEFAULT: 1, ARGO_RAISED: 2}
    rows = []
    for r in sorted(runs, key=lambda r: (r.n, order.get(r.controller, 3))):
        rows.append([str(r.n), r.controller, f"{r.promoted_s:.1f} s", f"{r.requests_per_rollout:.1f}",
                     f"{r.cpu_s:.1f} s", f"{r.rss_end_mib:.0f} MiB", f"{r.apiserver_requests:,}"])
    return Table("Scale: N rollouts stepping setWeight 20 → 100, 1 replica, no analysis",
                 ["N", "controller", "all N promoted", "controller API requests per rollout (Events excluded)",
                  "controller CPU", "RSS at the end", "apiserver requests, all clients"], rows)


def build_result(runs: Sequence[ScaleRun], breach: dict[str, list[BreachTrial]], wall: float,
                 date: str | None = None) -> Result:
    tables = [_scale_table(runs)]
    ns = sorted({r.n for r in runs})
    missed: list[str] = []
    for i, n in enumerate(ns):
        targets = targets_for([r for r in runs if r.n == n], breach if i == 0 else None)
        tables.append(Table(f"N = {n}: ModelRollout / Argo and the issue's targets", TARGET_HEADER,
                            target_rows(targets)))
        missed += [f"N={n}: {t.what} ({t.verdict()})" for t in targets if t.verdict().startswith("missed")]
    if breach.get(MODELROLLOUT) or breach.get(ARGO_DEFAULT):
        rows = []
        for who in (MODELROLLOUT, ARGO_DEFAULT):
            s = Summary.of([t.detect for t in breach.get(who, [])])
            rows.append([who, ms(s.p50), ms(s.p99), ms(s.max), str(s.n)])
        tables.insert(1, Table("Breach → stable: t1 − t0 (breach queryable → no traffic on the canary)",
                               ["controller", "p50", "p99", "max", "trials"], rows))
    verdict = ("every target met" if not missed else
               f"{len(missed)} target(s) missed: " + "; ".join(missed))
    notes = []
    for r in runs:
        top = ", ".join(f"{k} {v / r.n:.1f}" for k, v in list(r.requests_by.items())[:10])
        rate = r.requests / r.promoted_s if r.promoted_s > 0 else float("nan")
        dry = sum(v for k, v in r.requests_by.items() if k.endswith("(dry run)"))
        dry_text = (f" (dry runs {dry / r.n:.1f} per rollout; without them {(r.requests - dry) / r.n:.1f})"
                    if dry else "")
        notes.append(f"N={r.n} {r.controller}: requests per rollout by kind: {top}{dry_text}; Events "
                     f"{r.events / r.n:.1f} per "
                     f"rollout (left out above); {rate:.0f} requests/s over the window; first release of all N "
                     f"{r.first_release_s:.0f} s.")
    for n in ns:
        by = {r.controller: r for r in runs if r.n == n}
        ours, argo = by.get(MODELROLLOUT), by.get(ARGO_DEFAULT)
        if ours is not None and argo is not None:
            more = excess_by_kind(ours, argo)
            if more:
                notes.append(f"N={n}, why ours sends more (per rollout, ours − Argo's, the largest differences): "
                             + ", ".join(f"{k} +{d:.1f}" for k, d in more) + ".")
    notes += [
        "Argo's clients (one for Kubernetes' own objects, one for its custom resources, a dynamic one) are each "
        f"limited to 40 requests/s (burst 80) by default, so together they can exceed 40/s; raised to "
        f"{ARGO_RAISED_QPS}/s the same work took "
        + ", ".join(f"{r.promoted_s:.1f} s instead of {d.promoted_s:.1f} s at N={r.n}"
                    for r in runs if r.controller == ARGO_RAISED
                    for d in runs if d.controller == ARGO_DEFAULT and d.n == r.n) + ".",
        "Argo's figures are its controller process alone (Go); ours are the operator's Python process (kopf and "
        "the engine). Both read every object they act on from watches (informers): the rollouts, their "
        "Deployments/ReplicaSets, Services, Ingresses and pods; ours also its ConfigMaps and prewarm DaemonSets.",
        "Why the requests, the CPU and the time differ: both keep the analysed pods at promotion (this operator "
        "scales the canary revision's Deployment, NAME-REVISION, to full size and switches NAME-stable's selector "
        "to it). For each new revision ours sends two server-side dry runs before its first write, which Argo "
        "does not: of its Deployment, and of its canary Ingress at the first weight with every header pin and "
        "mirror the steps use, so that a template or route the apiserver or an admission webhook refuses makes "
        "the rollout Invalid and changes nothing. Besides, ours deletes the canary Ingress at promotion (Argo "
        "sets its weight to 0) and writes the record for rollback-to (NAME-revisions); its status is patched once "
        "per transition (Argo patches more often, see the kinds above). The CPU and the RSS are those of a Python "
        "process in which kopf handles every watch event and keeps state per watched object, against Go "
        "informers; with Argo's client limit raised, the time until all are promoted follows this operator's "
        "CPU.",
        "Breach → stable is bounded by the analysis interval (1 s) for both controllers: each acts at its next "
        "evaluation after the breach becomes queryable, so t1 − t0 is spread over the interval by the phase of that "
        "tick, and with 10 trials the p99 compares the slowest phases drawn, not the reaction (which follows the "
        "decision within milliseconds here: the breach-to-stable section's breakdown).",
    ]
    trials = max((len(v) for v in breach.values()), default=0)
    failed = 0
    return Result(name=NAME, title=TITLE, method=METHOD, date=date or today(), trials=trials,
                  failed_trials=failed, wall_seconds=wall, tables=tables, verdict=verdict, notes=notes,
                  load=load_text([r.load_start for r in runs]).replace("trials' starts", "scale runs' starts"),
                  raw={f"breach {k}": [t.detect for t in v] for k, v in breach.items()})


# ---------------------------------------------------------------------------------------------- CLI


def measure(ns: Sequence[int], trials: int, *, keep: bool = False,
            log: Callable[[str], None] = lambda s: print(f"[{NAME}] {s}", file=sys.stderr),
            on_run: Callable[[list[ScaleRun], dict[str, list[BreachTrial]]], None] | None = None,
            ) -> tuple[Result, list[ScaleRun], dict[str, list[BreachTrial]]]:
    started = now()
    bin_dir = built("argo")
    runs: list[ScaleRun] = []
    breach: dict[str, list[BreachTrial]] = {}
    with sigterm_as_exit():
        for i, n in enumerate(ns):
            with environment(f"{NAME}-{n}", with_prometheus=True, keep=keep, controller_qps=CONTROLLER_QPS) as env:
                log(f"N={n}: environment up in {env.setup_seconds:.1f}s ({env.root})")
                install_argo_crds(env, bin_dir)
                if i == 0 and trials > 0:
                    breach = run_breach(env, bin_dir, trials, log)
                for controller, qps in ((ARGO_DEFAULT, None), (ARGO_RAISED, ARGO_RAISED_QPS), (MODELROLLOUT, 0)):
                    if controller == MODELROLLOUT:
                        run = run_scale(env, controller, n, namespace=env.namespace, pid=env.operator.pid,
                                        alive=env.check_alive, log=log)
                    else:
                        ns_name = f"peer-argo-{'default' if qps is None else 'raised'}"
                        _create_namespace(env, ns_name)
                        with argo_running(env, bin_dir, ns_name, qps) as argo:
                            def alive(p: ManagedProcess = argo) -> None:
                                env.check_alive()
                                p.check_alive()

                            run = run_scale(env, controller, n, namespace=ns_name, pid=argo.pid, alive=alive,
                                            log=log)
                        _delete_namespace(env, ns_name, 120 + n, log)
                    runs.append(run)
                    if on_run is not None:
                        on_run(runs, breach)
    return build_result(runs, breach, now() - started), runs, breach


def main(argv: list[str] | None = None) -> int:
    from bench.report import per_n_cli

    def run(args: argparse.Namespace, save: Callable[[Mapping[str, Any]], None]) -> Result:
        started = now()

        def saved(runs: list[ScaleRun], breach: dict[str, list[BreachTrial]]) -> None:
            save({"date": today(), "wall_seconds": now() - started, "runs": [asdict(r) for r in runs],
                  "breach": {k: [asdict(t) for t in v] for k, v in breach.items()}})

        result, runs, breach = measure(sorted(set(args.n)), args.trials, keep=args.keep, on_run=saved)
        saved(runs, breach)
        return result

    def render(saved: Mapping[str, Any]) -> Result:
        runs = [ScaleRun(**{**r, "requests_by": dict(r["requests_by"])}) for r in saved["runs"]]
        breach = {k: [BreachTrial(**t) for t in v] for k, v in saved["breach"].items()}
        return build_result(runs, breach, float(saved["wall_seconds"]), str(saved["date"]))

    return per_n_cli(argv, name=NAME, doc=__doc__, default_n=DEFAULT_N, measure=run, render=render,
                     options=lambda p: p.add_argument("--trials", type=int, default=DEFAULT_TRIALS,
                                                      help="breach trials per controller (0: none)"))


if __name__ == "__main__":
    sys.exit(main())
