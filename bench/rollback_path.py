"""rollback-path: the API writes (and the time) from ``modelrollout.io/abort=true`` to all traffic on stable.

Three scenarios, run interleaved on one control plane, each a ModelRollout of 4 replicas with steps
setWeight 50 -> pause {} -> setWeight 100 and rollback.scaleDownDelay 0s, aborted while it waits at the pause:

  A  NGINX router (Service + Ingress NAME -> NAME-stable), warm stable (the default: stable keeps 4 replicas),
     rollback.prewarm.enabled;
  B  NGINX router, rollback.dynamicStableScale: true (stable is scaled to 2 at weight 50; the rollback scales it
     back to 4 and waits until it is ready before the canary Ingress goes);
  C  the Service router (replica ratio, no Ingress: stable 2 / canary 2 at weight 50; the rollback scales stable
     back to 4 and the canary to 0).

``t0`` is taken just before the real kubectl is started with ``kubectl annotate mro NAME
modelrollout.io/abort=true``; ``t1`` when all traffic is on stable: A/B the DELETED event of the canary Ingress
(a watch), C the first poll of the apiserver (every 20 ms) that sees the canary Deployment at spec.replicas 0
and the stable Deployment with 4 ready replicas. Each revision runs in its own Deployment, NAME-REVISION: the
stable revision's is shown as NAME-REV1, the canary's as NAME-REV2. The operator's writes
(create/update/patch/delete) from t0 to the end of the reconcile that set phase RolledBack come from the apiserver's
audit log.

    PYTHONPATH=operator python -m bench.rollback_path [--trials 10] [--update-docs] [--json FILE] [--keep]
"""

from __future__ import annotations

import contextlib
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from kubernetes import client

from bench.common import (
    BENCH_AGENT,
    SUMMARY_HEADER,
    WRITE_VERBS,
    BenchTimeout,
    Env,
    Json,
    ObjectWatch,
    Request,
    Result,
    Summary,
    Table,
    WatchEvent,
    environment,
    ingress,
    load_average,
    load_text,
    median_index,
    ms,
    now,
    poll,
    reconciles,
    rollout,
    service,
    sigterm_as_exit,
    summary_row,
    today,
    trace_block,
)
from devenv.localenv.procs import CommandFailed

NAME = "rollback_path"
TITLE = "Rollback path (abort → all traffic on stable: API writes and time)"
ABORT = "modelrollout.io/abort"
REPLICAS = 4
WEIGHT = 50
STEPS: list[Json] = [{"setWeight": WEIGHT}, {"pause": {}}, {"setWeight": 100}]
SETTLE_S = 0.5
"""Seconds (plus 0..SETTLE_S at random) the rollout is left at the pause before the abort: no reconcile running."""
C_POLL_S = 0.020
TAIL_S = 1.0
"""After RolledBack is seen, the operator's writes in this long are collected too (reported apart)."""
MAX_FAILURES = 3


@dataclass(frozen=True)
class Scenario:
    key: str
    label: str
    router: str
    """``nginx`` or ``service``."""
    rollback: Json
    stable_at_pause: int
    """Stable replicas while the rollout waits at weight 50."""


SCENARIOS = (
    Scenario("A", "warm stable + prewarm (NGINX)", "nginx",
             {"scaleDownDelay": "0s", "prewarm": {"enabled": True}}, REPLICAS),
    Scenario("B", "dynamicStableScale (NGINX)", "nginx",
             {"scaleDownDelay": "0s", "dynamicStableScale": True}, REPLICAS - 2),
    Scenario("C", "Service router (replica ratio)", "service", {"scaleDownDelay": "0s"}, REPLICAS - 2),
)

METHOD = f"""\
The API writes on the rollback path, and the time from the abort to all traffic on stable, with a warm stable
and pre-warming, with `dynamicStableScale`, and with the Service router. Per trial a ModelRollout of
{REPLICAS} replicas, steps `setWeight {WEIGHT}` → `pause {{}}` → `setWeight 100`, `rollback.scaleDownDelay: 0s`,
first released (`model:1`, Succeeded), then updated to `model:2` and left at the pause (AwaitingApproval,
weight {WEIGHT}, the Deployments settled) for {SETTLE_S:g}–{SETTLE_S * 2:g} s. Scenarios, interleaved trial by
trial on one control plane:

- **A** NGINX router (Service + Ingress `NAME` → `NAME-stable`), warm stable (the default: stable keeps all
  {REPLICAS} replicas) and `rollback.prewarm.enabled: true`;
- **B** NGINX router with `rollback.dynamicStableScale: true` (stable scaled down to 2 at weight {WEIGHT}; a
  rollback scales it back to {REPLICAS} and waits until it is ready before traffic moves back), no prewarm;
- **C** the Service router (no Ingress; replica ratio, stable 2 / canary 2 at weight {WEIGHT}; a rollback
  scales stable back to {REPLICAS} and the canary to 0), no prewarm.

`t0` is taken just before the real kubectl from the control plane's bin dir is started with
`kubectl annotate mro NAME {ABORT}=true`. `t1` is when all traffic is on stable: for A and B the arrival of
the DELETED event of the canary Ingress `NAME-canary` (a watch opened before the abort); for C the first poll
of the apiserver (both Deployments read every {C_POLL_S * 1000:.0f} ms) that sees the canary revision's Deployment
(`NAME-REV2`; each revision runs in its own, `NAME-REVISION`) at `spec.replicas: 0` and the stable revision's
(`NAME-REV1`) with {REPLICAS} ready replicas. The writes come from the apiserver's
audit log: every create/update/patch/delete in the namespace by the operator (the same kubeconfig user as
kubectl and this benchmark, so told apart by user agent) from `t0` to the end of the reconcile whose status
write set phase RolledBack (seen by a watch on the ModelRollout), grouped by resource and name. Reconciles
are found by cutting the engine's requests for this rollout's objects (`NAME`, `NAME-canary`, `NAME-REV1`,
Events `NAME.…`) where the order a reconcile writes in (workloads and routes, status, the rollout's
annotations, Events) starts again: the reconcile that set RolledBack ends with its last write. kubectl's own
PATCH of the annotation is not counted.
"""


Write = Request
"""One completed request from the audit log (times on the :func:`now` clock)."""


@dataclass
class Trial:
    name: str
    scenario: str
    total: float
    """t1 - t0: the headline number."""
    rolled_back: float = float("nan")
    """The RolledBack watch event - t0."""
    to_patch: float = float("nan")
    """t0 -> kubectl's PATCH of the annotation done."""
    operator: float = float("nan")
    """kubectl's PATCH done -> t1: the operator's share."""
    stable_scale_to_ready: float = float("nan")
    """The operator's stable scale-up PATCH received -> stable seen with all replicas ready (B: watch, C: poll)."""
    ready_to_route: float = float("nan")
    """B: stable seen ready (watch) -> the DELETE of the canary Ingress received (negative: traffic moved first)."""
    canary_zero: float = float("nan")
    """C: first poll with the canary at spec.replicas 0, after t0."""
    stable_ready: float = float("nan")
    """C: first poll with stable at 4 ready, after t0."""
    counts: dict[str, int] = field(default_factory=dict)
    """Category -> the operator's writes from t0 to the RolledBack status write (inclusive)."""
    by_target: dict[str, int] = field(default_factory=dict)
    """'verb resource[/sub] name' -> count, same window."""
    tail: dict[str, int] = field(default_factory=dict)
    """'verb resource[/sub] name' -> count, the operator's writes in TAIL_S after the RolledBack status write."""
    failed_writes: int = 0
    """Writes in the window answered with a non-2xx code."""
    kopf_writes: int = 0
    """Writes in the window by kopf's own client (not the engine)."""
    reconciles: int = 0
    """Reconciles (:func:`bench.common.reconciles`) from t0 to the one that set RolledBack, inclusive."""
    trace: list[str] = field(default_factory=list)


CATEGORIES = ("routing", "stable", "deployment", "status", "other")
CATEGORY_LABELS = {
    "routing": "routing writes (ingresses)",
    "stable": "stable scale-ups (Deployment NAME-REV1)",
    "deployment": "other Deployment writes (NAME-REV2)",
    "status": "status writes (modelrollouts/status)",
    "other": "other writes",
}


def category(w: Write, stable_dep: str) -> str:
    if w.resource == "ingresses":
        return "routing"
    if w.resource == "deployments" and w.subresource in ("", "scale"):
        return "stable" if w.name == stable_dep else "deployment"
    if w.resource == "modelrollouts" and w.subresource == "status":
        return "status"
    return "other"


# ---------------------------------------------------------------------------------------------- audit log


def audit_requests(env: Env) -> list[Write]:
    """Every completed request in the namespace since the audit mark, with user and response code."""
    return sorted(env.audit.since_mark(env.namespace), key=lambda r: r.received)


def by_operator(r: Write, user: str) -> bool:
    """The operator's process: its engine (OpenAPI-Generator) or kopf; not kubectl, not this benchmark."""
    return r.user == user and not r.agent.startswith("kubectl") and r.agent != BENCH_AGENT


# ---------------------------------------------------------------------------------------------- watches


class DeploymentWatch(ObjectWatch):
    """:class:`ObjectWatch` on one Deployment (events stamped on arrival)."""

    def __enter__(self) -> DeploymentWatch:
        self._resp = client.AppsV1Api(self.api_client).list_namespaced_deployment(
            self.namespace, field_selector=f"metadata.name={self.name}", watch=True, timeout_seconds=300,
            _preload_content=False, _request_timeout=(5, 330))
        self._thread = threading.Thread(target=self._read, name=f"watch-deployment-{self.name}", daemon=True)
        self._thread.start()
        return self


def _ready(obj: Json) -> int:
    return int((obj.get("status") or {}).get("readyReplicas") or 0)


def _spec_replicas(obj: Json) -> int:
    return int((obj.get("spec") or {}).get("replicas") or 0)


# ---------------------------------------------------------------------------------------------- one trial


def manifest(sc: Scenario, name: str, image: str) -> Json:
    body = rollout(name, image=image, steps=STEPS, replicas=REPLICAS, rollback=sc.rollback)
    if sc.router == "service":
        body["spec"]["traffic"] = {"service": {"name": name}}
    return body


def _at_pause(st: Json) -> bool:
    return st.get("phase") == "AwaitingApproval" and st.get("currentWeight") == WEIGHT


def _settled(env: Env, sc: Scenario, stable_dep: str, canary_dep: str) -> bool | None:
    apps = client.AppsV1Api(env.api_client)
    want = {stable_dep: sc.stable_at_pause, canary_dep: REPLICAS - 2}
    for dep, n in want.items():
        obj = env.api_client.sanitize_for_serialization(apps.read_namespaced_deployment(dep, env.namespace))
        st = obj.get("status") or {}
        if _spec_replicas(obj) != n or _ready(obj) != n or int(st.get("replicas") or 0) != n:
            return None
    return True


def run_trial(env: Env, sc: Scenario, name: str, rng: random.Random, previous: str | None) -> Trial:
    if sc.router == "nginx":
        env.apply(service(name), ingress(name, f"{name}-stable"))
    else:
        env.apply(service(name))
    env.apply(manifest(sc, name, "model:1"))
    rev1 = env.wait_status(name, lambda s: s.get("phase") == "Succeeded", 120,
                           f"{name} first release Succeeded")["stableRevision"]
    env.apply(manifest(sc, name, "model:2"))
    rev2 = env.wait_status(name, _at_pause, 120, f"{name} AwaitingApproval at weight {WEIGHT}")["canaryRevision"]
    # each revision runs in its own Deployment, NAME-REVISION
    canary_ingress, stable_dep, canary_dep = f"{name}-canary", f"{name}-{rev1}", f"{name}-{rev2}"
    poll(lambda: _settled(env, sc, stable_dep, canary_dep), 60, 0.05,
         f"{name}: stable {sc.stable_at_pause}/canary {REPLICAS - 2} replicas, all ready")
    if previous is not None:
        env.wait_gone(previous, 60)
    argv = env.kubectl_argv("-n", env.namespace, "annotate", "mro", name, f"{ABORT}=true", "--overwrite")
    apps = client.AppsV1Api(env.api_client)
    trial = Trial(name, sc.key, total=float("nan"))
    stable_ready_at = float("nan")
    with contextlib.ExitStack() as stack:
        mro = stack.enter_context(env.watch("modelrollout", name))
        stable_watch = stack.enter_context(DeploymentWatch(env.api_client, env.namespace, "deployment", stable_dep))
        mro.wait_for(lambda e: e.type == "ADDED", 10, f"watch on {name}")
        stable_watch.wait_for(lambda e: e.type == "ADDED", 10, f"watch on {stable_dep}")
        ing_watch: ObjectWatch | None = None
        if sc.router == "nginx":
            ing_watch = stack.enter_context(env.watch("ingress", canary_ingress))
            ing_watch.wait_for(lambda e: e.type == "ADDED" and e.weight == str(WEIGHT), 10,
                               f"{canary_ingress} at weight {WEIGHT}")
        time.sleep(SETTLE_S + rng.uniform(0.0, SETTLE_S))
        env.audit.mark()
        t0 = now()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env.cp.env())
        try:
            if ing_watch is not None:
                gone: WatchEvent = ing_watch.wait_for(lambda e: e.type == "DELETED", 60, f"{canary_ingress} deleted")
                trial.total = gone.at - t0
            else:
                seen: dict[str, float] = {}

                def all_on_stable() -> float | None:
                    canary = apps.read_namespaced_deployment(canary_dep, env.namespace)
                    stable = apps.read_namespaced_deployment(stable_dep, env.namespace)
                    at = now()
                    if (canary.spec.replicas or 0) == 0:
                        seen.setdefault("canary", at)
                    ready = (stable.status.ready_replicas if stable.status is not None else None) or 0
                    if (stable.spec.replicas or 0) == REPLICAS and ready >= REPLICAS:
                        seen.setdefault("stable", at)
                    return at if "canary" in seen and "stable" in seen else None

                t1 = poll(all_on_stable, 60, C_POLL_S, f"{canary_dep} at 0 and {stable_dep} {REPLICAS} ready")
                trial.total = t1 - t0
                trial.canary_zero = seen["canary"] - t0
                trial.stable_ready = seen["stable"] - t0
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=5)
        if proc.returncode != 0:
            raise CommandFailed(subprocess.CompletedProcess(argv, proc.returncode, out, err))
        rb = mro.wait_for(lambda e: e.status.get("phase") == "RolledBack", 60, f"{name} RolledBack")
        trial.rolled_back = rb.at - t0
        ready_events = [e for e in stable_watch.events if e.at >= t0 and _spec_replicas(e.obj) == REPLICAS
                        and _ready(e.obj) >= REPLICAS]
        if ready_events:
            stable_ready_at = ready_events[0].at
    time.sleep(TAIL_S)
    _writes(env, trial, name, (stable_dep, canary_dep), t0, t0 + trial.total, rb.at, stable_ready_at)
    return trial


def key(w: Write, name: str, deps: tuple[str, str]) -> str:
    """'verb resource[/sub] NAME-…': the trial's rollout name replaced, the stable and canary revisions'
    Deployments shown as NAME-REV1 and NAME-REV2, Event names collapsed."""
    target = w.resource + (f"/{w.subresource}" if w.subresource else "")
    if w.resource == "events":
        obj = "NAME.…"
    elif w.resource == "deployments" and w.name in deps:
        obj = f"NAME-REV{deps.index(w.name) + 1}"
    else:
        obj = w.name.replace(name, "NAME", 1)
    return f"{w.verb} {target} {obj}"


def _writes(env: Env, trial: Trial, name: str, deps: tuple[str, str], t0: float, t1: float, rb_at: float,
            stable_ready_at: float) -> None:
    """``deps``: the stable and the canary revision's Deployments."""
    def rolled_back_write(reqs: list[Write]) -> Write | None:
        # the watch event can arrive before the PATCH's response is complete: match on the time it was received
        statuses = [r for r in reqs if r.by_operator_engine and r.resource == "modelrollouts"
                    and r.subresource == "status" and r.verb == "patch" and r.name == name
                    and t0 <= r.received <= rb_at]
        return statuses[-1] if statuses else None

    last = env.audit.wait_for(env.namespace, lambda _: rolled_back_write(audit_requests(env)), timeout=10)
    if last is None:
        raise BenchTimeout(f"{name}: no status write before RolledBack in the audit log")
    reqs = audit_requests(env)
    user = last.user
    abort = next((r for r in reqs if r.agent.startswith("kubectl") and r.verb == "patch"
                  and r.resource == "modelrollouts" and r.name == name and not r.subresource), None)
    if abort is not None:
        trial.to_patch = abort.completed - t0
        trial.operator = t1 - abort.completed
    ops = [r for r in reqs if by_operator(r, user)]
    # the reconcile that set RolledBack ends with its last write
    engine = [r for r in reqs if r.received >= t0 and r.engine_for(name)]
    parts = reconciles(engine)
    n = next(i for i, part in enumerate(parts) if last in part)
    end = parts[n][-1].received
    window = [r for r in ops if t0 <= r.received <= end]
    writes = [r for r in window if r.verb in WRITE_VERBS]
    counts = Counter(category(w, deps[0]) for w in writes)
    trial.counts = {c: counts.get(c, 0) for c in CATEGORIES}
    trial.by_target = dict(Counter(key(w, name, deps) for w in writes))
    trial.failed_writes = sum(1 for w in writes if not 200 <= w.code < 300)
    trial.kopf_writes = sum(1 for w in writes if w.agent.startswith("kopf"))
    trial.reconciles = n + 1
    trial.tail = dict(Counter(key(w, name, deps) for w in ops
                              if end < w.received <= last.received + TAIL_S and w.verb in WRITE_VERBS))
    stable_ups = [w for w in writes if category(w, deps[0]) == "stable"]
    if stable_ups and stable_ready_at == stable_ready_at:
        trial.stable_scale_to_ready = stable_ready_at - stable_ups[0].received
    route = next((w for w in writes if w.resource == "ingresses" and w.verb == "delete"), None)
    if route is not None and stable_ready_at == stable_ready_at and stable_ups:
        trial.ready_to_route = route.received - stable_ready_at
    marks = [(t0 + trial.total, f"{trial.total * 1000:7.1f} ms        all traffic on stable (t1)"),
             (t0 + trial.rolled_back, f"{trial.rolled_back * 1000:7.1f} ms        watch delivers phase RolledBack")]
    if stable_ups and stable_ready_at == stable_ready_at:
        marks.append((stable_ready_at, f"{(stable_ready_at - t0) * 1000:7.1f} ms        watch delivers "
                                       f"{deps[0]} with {REPLICAS} ready"))
    shown = ([abort] if abort is not None else []) + writes
    lines = [(r.received, r.describe(t0)) for r in shown] + marks
    trial.trace = [text for _, text in sorted(lines, key=lambda x: x[0])]


# ---------------------------------------------------------------------------------------------- the run


def measure(trials: int, *, keep: bool = False) -> tuple[Result, list[Trial]]:
    """``trials`` measured trials per scenario (plus one warm-up each), the scenarios interleaved."""
    rng = random.Random(20240613)
    started = now()
    loads: list[float] = []
    done: list[Trial] = []
    failures: list[str] = []
    with sigterm_as_exit(), environment(NAME, with_prometheus=False, keep=keep) as env:
        print(f"[{NAME}] environment up in {env.setup_seconds:.1f}s ({env.root})", file=sys.stderr)
        previous: str | None = None
        for i in range(trials + 1):
            for sc in SCENARIOS:
                name = f"rb-{sc.key.lower()}-{i:02d}"
                label = "warm-up" if i == 0 else f"trial {i}/{trials}"
                load = load_average()
                try:
                    trial = run_trial(env, sc, name, rng, previous)
                except (BenchTimeout, CommandFailed) as exc:
                    failures.append(f"{name}: {exc}")
                    print(f"[{NAME}] {sc.key} {label} {name} FAILED: {exc}", file=sys.stderr)
                    if len(failures) > MAX_FAILURES:
                        raise
                    continue
                finally:
                    env.delete_rollout(name)
                    previous = name
                print(f"[{NAME}] {sc.key} {label} {name}: t1-t0 {ms(trial.total)}, RolledBack "
                      f"{ms(trial.rolled_back)}, writes {trial.counts} in {trial.reconciles} reconciles"
                      + (f", tail {trial.tail}" if trial.tail else ""), file=sys.stderr)
                if i > 0:
                    done.append(trial)
                    loads.append(load)
    result = build_result(done, failures, now() - started)
    result.load = load_text(loads)
    result.raw["load_average_1m"] = loads
    return result, done


def _count_text(values: list[int]) -> str:
    """``1`` when every trial had the same count, else ``min–max (median m)``."""
    if not values:
        return "n/a"
    lo, hi = min(values), max(values)
    if lo == hi:
        return str(lo)
    return f"{lo}–{hi} (median {sorted(values)[(len(values) - 1) // 2]})"


def _targets_text(per_trial: list[dict[str, int]]) -> str:
    """The writes by target, each with its count (a range when the trials differ)."""
    keys = sorted({k for d in per_trial for k in d})
    return ", ".join(f"`{k}` ×{_count_text([d.get(k, 0) for d in per_trial])}" for k in keys) or "none"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def build_result(trials: list[Trial], failures: list[str], wall: float) -> Result:
    groups = {sc.key: [t for t in trials if t.scenario == sc.key] for sc in SCENARIOS}
    headline = Table(
        "t1 − t0: `kubectl annotate … abort=true` started → all traffic on stable",
        SUMMARY_HEADER,
        [summary_row(f"{sc.key}: {sc.label} — "
                     + ("canary Ingress DELETED (watch)" if sc.router == "nginx"
                        else f"canary at 0 and stable {REPLICAS}/{REPLICAS} ready (20 ms poll)"),
                     [t.total for t in groups[sc.key]]) for sc in SCENARIOS],
    )
    rows: list[list[str]] = []
    for sc in SCENARIOS:
        g = groups[sc.key]
        rows.append([f"{sc.key}: {sc.label}"] + [_count_text([t.counts.get(c, 0) for t in g]) for c in CATEGORIES]
                    + [_count_text([sum(t.counts.values()) for t in g]), _count_text([t.reconciles for t in g]),
                       str(len(g))])
    counts = Table(
        "The operator's writes from t0 to the end of the reconcile that set RolledBack (audit log; per trial, the "
        "same in every trial unless a range is shown)",
        ["scenario", *(CATEGORY_LABELS[c] for c in CATEGORIES), "all writes", "reconciles", "n"],
        rows,
    )
    breakdown_rows: list[list[str]] = []
    for sc in SCENARIOS:
        g = groups[sc.key]
        breakdown_rows.append(summary_row(f"{sc.key}: t0 → kubectl's PATCH of the annotation done",
                                          [t.to_patch for t in g]))
        breakdown_rows.append(summary_row(f"{sc.key}: that PATCH done → t1 (the operator's share)",
                                          [t.operator for t in g]))
        breakdown_rows.append(summary_row(f"{sc.key}: t0 → phase RolledBack (watch)", [t.rolled_back for t in g]))
    b, c = groups["B"], groups["C"]
    breakdown_rows += [
        summary_row("B: stable scale-up PATCH → stable seen with 4 ready (watch)",
                    [t.stable_scale_to_ready for t in b]),
        summary_row("B: stable seen ready → DELETE of the canary Ingress (traffic moves back)",
                    [t.ready_to_route for t in b]),
        summary_row("C: t0 → canary seen at spec.replicas 0 (poll)", [t.canary_zero for t in c]),
        summary_row(f"C: t0 → stable seen with {REPLICAS} ready (poll)", [t.stable_ready for t in c]),
    ]
    breakdown = Table("Where the time goes", SUMMARY_HEADER, breakdown_rows)

    def n_of(g: list[Trial], cat: str, word: str) -> str:
        values = [t.counts.get(cat, 0) for t in g]
        text = _count_text(values)
        return f"{text} {word}" + ("" if text == "1" else "s")

    def short(key: str) -> str:
        g = groups[key]
        if not g:
            return f"{key}: no trials"
        return (f"{key}: {n_of(g, 'routing', 'routing write')}, {n_of(g, 'stable', 'stable scale-up')}, "
                f"{n_of(g, 'deployment', 'canary Deployment write')}, {n_of(g, 'status', 'status write')} "
                f"(p50 {ms(Summary.of([t.total for t in g]).p50)})")

    verdict = ("The operator's writes from the abort to RolledBack — " + "; ".join(short(sc.key) for sc in SCENARIOS)
               + ". kwok makes pods ready at once: B's and C's real cost, stable's new pods starting, is not in "
               "these times")
    a = groups["A"]
    kopf = sum(t.kopf_writes for t in trials)
    notes = [
        "kwok marks a pod ready the moment it is scheduled, so the times of B and C leave out their real cost: "
        "stable's new pods starting — a model server loading its weights (often minutes), plus an image pull "
        "when the image is not pre-pulled. A starts no pod at all. The machine-independent result is the write "
        "counts and which of them must wait for pods: A moves traffic back with one routing write and no "
        "scale-up; B must scale stable up and wait until it is ready before its routing write (its t1 − t0 "
        "becomes stable's start-up time); with C the routing is the scaling itself.",
        "Window: from t0 to the end of the reconcile whose status write set RolledBack (that write, then the "
        "removal of the abort annotation and the reconcile's Events: its last write, found by cutting the "
        "engine's requests for the rollout where the order a reconcile writes in starts again). Reconciles are "
        "counted the same way; one that writes nothing is counted with the next. Writes of later reconciles in "
        f"the {TAIL_S:g} s after are listed apart below.",
        "t1 for A and B is the arrival of a watch event (no poll granularity); for C it is stamped after the "
        f"poll's two reads return (a poll every {C_POLL_S * 1000:.0f} ms plus the reads). t0 is taken just before "
        "the kubectl process starts, so t1 − t0 includes kubectl's start-up (the rows \"t0 → kubectl's PATCH of "
        "the annotation done\").",
        "The operator runs with the same kubeconfig user as kubectl and this benchmark; its requests are told "
        "apart by user agent (its engine's `OpenAPI-Generator`, and kopf's `kopf/…`, which wrote "
        + ("nothing in the windows" if not kopf else f"{kopf} times in the windows, counted")
        + "). Routing writes are those on `ingresses`; a write of the stable revision's Deployment `NAME-REV1` "
        "during a "
        "rollback is a scale-up (the Service router's reset also drops its weight annotation in the same "
        "PATCH); status writes are PATCHes of `modelrollouts/status`; other writes are everything else "
        "(the annotation removal, Events, the prewarm DaemonSet).",
    ]
    for sc in SCENARIOS:
        g = groups[sc.key]
        if not g:
            continue
        notes.append(f"{sc.key} writes by target (per trial): {_targets_text([t.by_target for t in g])}. Later "
                     f"reconciles in the {TAIL_S:g} s after: {_targets_text([t.tail for t in g])}.")
    if a and any(t.counts.get("other", 0) for t in a):
        notes.append("A's DaemonSet write is the trim of the prewarm DaemonSet (`NAME-prewarm`, server-side apply): "
                     "after a rollback it keeps only stable's (and the last revisions') images, dropping the "
                     "canary's. It comes after the routing write, so it costs the rollback no time.")
    if b:
        after = sum(1 for t in b if t.ready_to_route == t.ready_to_route and t.ready_to_route >= 0)
        notes.append(
            f"B: the canary Ingress was deleted after stable was seen ready ({REPLICAS}/{REPLICAS}, a watch on the "
            f"Deployment) in {after} of {len(b)} trials: traffic waits for the scaled-up stable, as documented. "
            f"It takes {_count_text([t.reconciles for t in b])} reconciles: the abort one (scale-up, status "
            "RollingBack, annotation, Events), then the ones woken by the stable Deployment's status changes; "
            "the one that sees it ready deletes the canary Ingress, scales the canary to 0 and writes RolledBack.")
    if c:
        first = sum(1 for t in c if t.canary_zero < t.stable_ready)
        early = sum(1 for t in c if t.rolled_back < t.stable_ready)
        gap = Summary.of([t.stable_ready - t.canary_zero for t in c]).p50
        notes.append(
            f"C: in {first} of {len(c)} trials a poll saw the canary at 0 replicas before stable had {REPLICAS} "
            f"ready pods (p50 {ms(gap)} apart here), and in {early} of {len(c)} phase RolledBack (\"stable … serves "
            "100%\") came before stable was ready: the Service router's reset PATCHes stable up and the canary "
            "to 0 back to back in one reconcile without waiting for stable's pods. With pods that take minutes "
            f"to start, the root Service is served by stable's {REPLICAS - 2} remaining pods alone until then.")
        if all(t.counts.get("deployment", 0) >= 2 for t in c):
            notes.append(
                "C: the canary Deployment is PATCHed to 0 twice in the same reconcile — once by the Service "
                "router's reset and once more by the rollback's own ScaleCanary(0) (scaleDownDelay 0s, decided "
                "from the canary's replicas observed before the reset): one redundant write.")
    failed = sum(t.failed_writes for t in trials)
    if failed:
        notes.append(f"{failed} of the counted writes were answered with a non-2xx code (e.g. a 404 on an "
                     "object already gone); they are counted as writes.")
    notes += [f"Failed trial: {f}" for f in failures]
    appendix_parts = []
    for sc in SCENARIOS:
        g = groups[sc.key]
        mid = median_index([t.total for t in g])
        if mid >= 0:
            appendix_parts.append(trace_block(
                f"{sc.key} ({sc.label}), median trial {g[mid].name} (t1 − t0 = {ms(g[mid].total)}): kubectl's PATCH "
                "and the operator's writes, ms after t0 (received, +duration, client, verb, resource, name → code):",
                g[mid].trace))
    raw: dict[str, list[float]] = {}
    for sc in SCENARIOS:
        g = groups[sc.key]
        raw[f"{sc.key} t1_minus_t0"] = [t.total for t in g]
        raw[f"{sc.key} rolled_back"] = [t.rolled_back for t in g]
        raw[f"{sc.key} operator"] = [t.operator for t in g]
        for cat in CATEGORIES:
            raw[f"{sc.key} writes {cat}"] = [float(t.counts.get(cat, 0)) for t in g]
    raw["B stable_scale_to_ready"] = [t.stable_scale_to_ready for t in b]
    raw["B ready_to_route"] = [t.ready_to_route for t in b]
    raw["C canary_zero"] = [t.canary_zero for t in c]
    raw["C stable_ready"] = [t.stable_ready for t in c]
    return Result(
        name=NAME, title=TITLE, method=METHOD, date=today(), trials=len(trials), failed_trials=len(failures),
        wall_seconds=wall, tables=[headline, counts, breakdown], verdict=verdict, notes=notes, raw=raw,
        appendix="\n".join(appendix_parts),
    )


def main(argv: list[str] | None = None) -> int:
    from bench.report import cli

    return cli(argv, name=NAME, doc=__doc__, measure=measure, default_trials=10,
               trials_help="measured trials per scenario (at least 10; plus one warm-up each)")


if __name__ == "__main__":
    sys.exit(main())
