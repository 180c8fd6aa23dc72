"""breach-to-stable: from a breaching value being queryable in Prometheus to 0% canary on the router.

Per trial: a ModelRollout routed by NGINX (Service + Ingress NAME -> NAME-stable, spec.traffic.ingress), steps
setWeight 20 -> pause {}, analysis every 1 s of ``min(model_api_compatibility_score{rollout, track})`` with
min 0.99, failureLimit 0, onFailure rollback, rollback.scaleDownDelay 0s; its canary exporter (a real
``compat_probe.refserver``, score 1.0) is scraped by Prometheus every 1 s. Once the rollout waits at the pause
with 20% on the canary, the exporter's score is set to 0.5 (``t_set``); the benchmark polls Prometheus's query
API every 10 ms with the operator's own query and stamps ``t0`` when 0.5 is first returned, while a watch on
the canary Ingress NAME-canary stamps ``t1`` when it is DELETED (the NGINX router's "0% canary").

    PYTHONPATH=operator python -m bench.breach_to_stable [--trials 20] [--update-docs] [--json FILE] [--keep]
"""

from __future__ import annotations

import itertools
import random
import statistics
import sys
import time
from dataclasses import dataclass, field

from bench.common import (
    SUMMARY_HEADER,
    WRITE_VERBS,
    BenchTimeout,
    Env,
    Exporter,
    Json,
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
    parse_k8s_time,
    poll,
    prometheus_value,
    reconciles,
    rollout,
    secs,
    service,
    sigterm_as_exit,
    summary_row,
    today,
    trace_block,
)
from devenv.localenv.procs import CommandFailed

NAME = "breach_to_stable"
TITLE = "Breach to stable (metric breach → 0% canary)"
SCRAPE_S = 1.0
INTERVAL_S = 1.0
TARGET_SLACK_S = 1.0
TARGET_S = SCRAPE_S + INTERVAL_S + TARGET_SLACK_S
PROM_POLL_S = 0.010
REPLICAS = 2
HOLD_S = 2.0
"""Seconds the rollout is left at the pause before the breach (plus 0..1 s at random), to measure the
analysis period and to spread the breach over the phase of the scrape and analysis clocks."""
STEPS: list[Json] = [{"setWeight": 20}, {"pause": {}}]
COMPAT = 'min(model_api_compatibility_score{rollout="{{rollout}}",track="{{track}}"})'
MAX_FAILURES = 3

METHOD = f"""\
From the moment a breaching value is queryable in Prometheus (`t0`) to 0% canary on the router (`t1`).
Per trial a ModelRollout with the NGINX router (Service + Ingress `NAME` → `NAME-stable`,
`spec.traffic.ingress`), {REPLICAS} replicas, steps `setWeight 20` → `pause {{}}`, analysis every
{INTERVAL_S:g} s of `{COMPAT}` with `min: 0.99`, `failureLimit: 0`, `onFailure: rollback`, and
`rollback.scaleDownDelay: 0s`. Its canary exporter (a real `compat_probe.refserver`, score 1.0) is scraped
by Prometheus every {SCRAPE_S:g} s. The new revision is applied 0–1 s (at random) after the exporter's first
sample is queryable, so the phase of the operator's analysis ticks against the scrapes differs from trial to
trial. Once the rollout waits at the pause with 20% on the canary (and a
passing analysis), it is left there {HOLD_S:g} s plus 0–1 s at random; then the exporter's score is set to
0.5 (`POST /admin/score`; `t_set` when it returns). The benchmark polls Prometheus's query API every
{PROM_POLL_S * 1000:.0f} ms with the operator's own query and stamps `t0` at the first answer of 0.5; a
watch on the canary Ingress `NAME-canary`, opened before the breach, stamps `t1` when the DELETED event
arrives (the NGINX router's reset: the canary Ingress is gone, all traffic on stable). The breakdown comes
from the apiserver's audit log: the engine's requests for this rollout's objects (`NAME`, `NAME-canary`,
`NAME-stable`, the Deployments `NAME-REVISION`, Events `NAME.…`) are cut into reconciles where the order a
reconcile writes in (workloads and routes, status, the rollout's annotations, Events) starts again; the reconcile
that rolled back is the one
with the DELETE of the canary Ingress, and it starts at its first request at or after `t0` (a reconcile that
writes nothing is in the same cut as the next one, and one such follows every status write at the pause). A
reconcile reads the rollout and its Deployments from the operator's watch cache, which leaves no trace in
the audit log, so that first request is usually its GET of the canary Ingress, after the Prometheus query:
the wait for the tick below includes the reconcile's reads from memory and the query.
"""


@dataclass
class Trial:
    name: str
    scrape: float
    """t0 - t_set: the new value reaches Prometheus (scrape wait + ingestion)."""
    detect: float
    """t1 - t0: the headline number."""
    total: float
    """t1 - t_set."""
    tick_wait: float = float("nan")
    """Reconcile start (its first request in the audit log) - t0: the tick wait, reads from memory, the query."""
    to_delete: float = float("nan")
    """DELETE of the canary Ingress received - reconcile start."""
    delivery: float = float("nan")
    """t1 - DELETE completed: the watch event reaches the benchmark."""
    reaction: float = float("nan")
    """t1 - reconcile start."""
    periods: list[float] = field(default_factory=list)
    """Intervals between the operator's analysis evaluations (status.lastAnalysisAt) while waiting at the pause."""
    status_writes_per_tick: float = float("nan")
    """The operator's status PATCHes per analysis tick while waiting at the pause (one is needed)."""
    requests_per_tick: float = float("nan")
    """All requests of the operator's engine per analysis tick while waiting at the pause."""
    reconciles_per_tick: float = float("nan")
    """Reconciles that write (:func:`bench.common.reconciles`) per analysis tick at the pause (one is needed)."""
    message: str = ""
    trace: list[str] = field(default_factory=list)
    """The operator's requests of the reconcile that rolled back (audit log), times from t0."""


def analysis_spec(prometheus_url: str) -> Json:
    return {
        "analysis": {
            "interval": f"{INTERVAL_S:g}s",
            "prometheus": {"address": prometheus_url, "timeout": "2s"},
            "metrics": [{"name": "api-compatibility", "query": COMPAT, "min": 0.99, "failureLimit": 0,
                         "onFailure": "rollback"}],
        },
        "rollback": {"scaleDownDelay": "0s"},
    }


def _waiting_at_pause(st: Json) -> bool:
    analysis = st.get("analysis") or []
    return (st.get("phase") == "AwaitingApproval" and st.get("currentWeight") == 20
            and bool(analysis) and all(m.get("verdict") == "Pass" for m in analysis))


def run_trial(env: Env, name: str, rng: random.Random, previous: str | None) -> Trial:
    prom = env.prometheus
    assert prom is not None
    exporter = Exporter(env.root, name).start()
    try:
        prom.set_targets([(exporter.address, {})])
        env.apply(service(name), ingress(name, f"{name}-stable"))
        spec = analysis_spec(prom.url)
        env.apply(rollout(name, image="model:1", steps=STEPS, replicas=REPLICAS, **spec))
        env.wait_status(name, lambda s: s.get("phase") == "Succeeded", 120, f"{name} first release Succeeded")
        query = COMPAT.replace("{{rollout}}", name).replace("{{track}}", "canary")
        # the canary's series must be in Prometheus before traffic moves, or analysis starts inconclusive
        def first_sample() -> bool | None:
            env.check_alive()
            return True if prometheus_value(prom, query) == 1.0 else None

        poll(first_sample, 60, 0.1, f"{query} == 1 in Prometheus")
        # The rollout's analysis clock starts with its first traffic step; started right after a scrape landed,
        # its phase against the scrapes would be nearly the same every trial. Randomise it.
        time.sleep(rng.uniform(0.0, max(SCRAPE_S, INTERVAL_S)))
        env.apply(rollout(name, image="model:2", steps=STEPS, replicas=REPLICAS, **spec))
        env.wait_status(name, _waiting_at_pause, 120, f"{name} AwaitingApproval at weight 20 with passing analysis")
        if previous is not None:
            env.wait_gone(previous, 60)
        canary_ingress = f"{name}-canary"
        with env.watch("ingress", canary_ingress) as watch, env.watch("modelrollout", name) as mro:
            watch.wait_for(lambda e: e.type == "ADDED" and e.weight == "20", 10, f"{canary_ingress} at weight 20")
            mro.wait_for(lambda e: e.type == "ADDED", 10, f"watch on {name}")
            env.audit.mark()
            hold_from = now()
            time.sleep(HOLD_S + rng.uniform(0.0, 1.0))
            exporter.set_score(0.5)
            t_set = now()
            t0 = poll(lambda: now() if prometheus_value(prom, query) == 0.5 else None, 30, PROM_POLL_S,
                      f"{query} == 0.5 in Prometheus")
            gone: WatchEvent = watch.wait_for(lambda e: e.type == "DELETED", 30, f"{canary_ingress} deleted")
            t1 = gone.at
        st = env.wait_status(name, lambda s: s.get("phase") == "RolledBack", 30, f"{name} RolledBack")
        trial = Trial(name, scrape=t0 - t_set, detect=t1 - t0, total=t1 - t_set, message=str(st.get("message")))
        ticks = sorted({parse_k8s_time(str(e.status["lastAnalysisAt"])) for e in mro.events
                        if hold_from <= e.at < t_set and e.status.get("lastAnalysisAt")})
        trial.periods = [b - a for a, b in itertools.pairwise(ticks)]
        _breakdown(env, trial, canary_ingress, name, t0, t1, ticks)
        return trial
    finally:
        exporter.stop()
        prom.set_targets([])


def _breakdown(env: Env, trial: Trial, canary_ingress: str, name: str, t0: float, t1: float,
               ticks: list[float]) -> None:
    def find(reqs: list[Request]) -> Request | None:
        for r in reqs:
            if r.by_operator_engine and r.verb == "delete" and r.resource == "ingresses" and r.name == canary_ingress:
                return r
        return None

    delete = env.audit.wait_for(env.namespace, find)
    if delete is None:
        return
    engine = sorted((r for r in env.audit.since_mark(env.namespace) if r.engine_for(name)),
                    key=lambda r: r.received)
    # its first request at or after t0: a reconcile just before it that wrote nothing is in the same part
    rolled_back = next((part for part in reconciles(engine) if delete in part), [])
    start = next((r.received for r in rolled_back if r.received >= t0 or r == delete), None)
    if start is not None:
        trial.tick_wait = start - t0
        trial.to_delete = delete.received - start
        trial.reaction = t1 - start
        lines = [(r.received, r.describe(t0)) for r in rolled_back if r.received >= start]
        lines.append((t1, f"{(t1 - t0) * 1000:7.1f} ms        watch delivers DELETED canary Ingress (t1)"))
        trial.trace = [text for _, text in sorted(lines)]
    trial.delivery = t1 - delete.completed
    # While waiting at the pause nothing changes but the analysis: count the operator's requests per tick,
    # from just before the first evaluation seen to just before the last one (len(ticks) - 1 whole ticks).
    if len(ticks) >= 2:
        lead = 0.1  # a reconcile that must GET the rollout (watch cache not current) does so before its `now`
        window = [r for r in engine if ticks[0] - lead <= r.received < ticks[-1] - lead]
        n = len(ticks) - 1
        trial.status_writes_per_tick = sum(1 for r in window if r.verb == "patch" and r.subresource == "status") / n
        trial.requests_per_tick = len(window) / n
        trial.reconciles_per_tick = sum(1 for part in reconciles(window)
                                        if any(r.verb in WRITE_VERBS for r in part)) / n


def measure(trials: int, *, keep: bool = False) -> tuple[Result, list[Trial]]:
    rng = random.Random(20240611)
    started = now()
    loads: list[float] = []
    done: list[Trial] = []
    failures: list[str] = []
    reconcile_mean = float("nan")
    with sigterm_as_exit(), environment(NAME, with_prometheus=True, keep=keep) as env:
        print(f"[{NAME}] environment up in {env.setup_seconds:.1f}s ({env.root})", file=sys.stderr)
        previous: str | None = None
        for i in range(trials + 1):
            name = f"breach-{i:02d}"
            label = "warm-up" if i == 0 else f"trial {i}/{trials}"
            load = load_average()
            env.check_alive()  # a component that died (or was killed) fails the benchmark at once, with its log
            try:
                trial = run_trial(env, name, rng, previous)
            except (BenchTimeout, CommandFailed) as exc:
                failures.append(f"{name}: {exc}")
                print(f"[{NAME}] {label} {name} FAILED: {exc}", file=sys.stderr)
                if len(failures) > MAX_FAILURES:
                    raise
                continue
            finally:
                env.delete_rollout(name)
                previous = name
            print(f"[{NAME}] {label} {name}: t1-t0 {ms(trial.detect)}, t1-t_set {ms(trial.total)} "
                  f"(scrape {ms(trial.scrape)}, tick wait {ms(trial.tick_wait)}, reaction {ms(trial.reaction)})",
                  file=sys.stderr)
            if i > 0:
                done.append(trial)
                loads.append(load)
        metrics = env.operator_metrics()
        count = metrics.get("modelrollout_reconcile_seconds_count", 0.0)
        if count:
            reconcile_mean = metrics.get("modelrollout_reconcile_seconds_sum", 0.0) / count
    result = build_result(done, failures, now() - started, reconcile_mean)
    result.load = load_text(loads)
    result.raw["load_average_1m"] = loads
    return result, done


def build_result(trials: list[Trial], failures: list[str], wall: float, reconcile_mean: float) -> Result:
    detect = [t.detect for t in trials]
    total = [t.total for t in trials]
    reaction = [t.reaction for t in trials]
    periods = [p for t in trials for p in t.periods]
    per_tick_writes = [t.status_writes_per_tick for t in trials]
    per_tick_requests = [t.requests_per_tick for t in trials]
    per_tick_reconciles = [t.reconciles_per_tick for t in trials]
    p99_total, p99_detect = Summary.of(total).p99, Summary.of(detect).p99
    headline = Table(
        f"Breach to stable, scrape {SCRAPE_S:g} s, analysis interval {INTERVAL_S:g} s "
        f"(target: p99 ≤ scrape + interval + {TARGET_SLACK_S:g} s = {TARGET_S:g} s)",
        SUMMARY_HEADER,
        [summary_row("t1 − t0: breach queryable in Prometheus → canary Ingress gone (0% canary)", detect),
         summary_row("t1 − t_set: exporter reports the breach → canary Ingress gone", total),
         summary_row("t0 − t_set: exporter → queryable (scrape wait + ingestion)", [t.scrape for t in trials])],
    )
    breakdown = Table(
        "Where the time goes (apiserver audit log)",
        SUMMARY_HEADER,
        [summary_row("t0 → the reconcile that rolled back starts: its first API request (waiting for the "
                     "analysis tick, reads from the watch cache, the Prometheus query)",
                     [t.tick_wait for t in trials]),
         summary_row("reconcile start → DELETE canary Ingress (the reads after the query, decide)",
                     [t.to_delete for t in trials]),
         summary_row("DELETE done → the watch event arrives", [t.delivery for t in trials]),
         summary_row("reconcile start → t1 (the operator's reaction)", reaction),
         summary_row("analysis period (between evaluations: status.lastAnalysisAt at the pause)", periods)],
    )
    r = Summary.of(reaction)
    rows = []
    for label, scrape, interval in (("fast (this benchmark)", SCRAPE_S, INTERVAL_S),
                                    ("default-ish: CRD default interval, 15 s scrape", 15.0, 15.0),
                                    ("CRD default interval, 1 s scrape", 1.0, 15.0)):
        worst = scrape + interval + r.p99
        mean = scrape / 2 + interval / 2 + r.mean
        measured = f"p99 {secs(p99_total)}" if scrape == SCRAPE_S and interval == INTERVAL_S else "—"
        rows.append([label, f"{scrape:g} s", f"{interval:g} s", secs(mean), secs(worst), measured])
    bound = Table(
        "Computed bound for t1 − t_set: scrape wait (0..scrape) + tick wait (0..interval) + reaction "
        f"(measured: mean {ms(r.mean)}, p99 {ms(r.p99)})",
        ["setting", "scrape", "analysis interval", "expected mean", "worst case", "measured"],
        rows,
    )
    met_total = p99_total <= TARGET_S
    met_detect = p99_detect <= TARGET_S
    verdict = (f"p99 t1 − t0 = {secs(p99_detect)}, p99 t1 − t_set = {secs(p99_total)}; target p99 ≤ "
               f"{TARGET_S:g} s (scrape {SCRAPE_S:g} s + interval {INTERVAL_S:g} s + {TARGET_SLACK_S:g} s): "
               + ("met" if met_total and met_detect else "NOT met"))
    notes = [
        f"t0 has a resolution of about {PROM_POLL_S * 1000:.0f} ms plus one query (the poll interval); "
        "t1 is the arrival of a watch event, not a poll.",
        "t1 − t0 is the operator's share: at most one analysis interval of waiting for the next evaluation, "
        "plus one reconcile (the rollout and both Deployments from the watch cache, the Prometheus query, GET of "
        "the canary Ingress; then DELETE it, scale the canary to 0, write status, emit events) and the watch "
        "delivery.",
        f"The analysis period is interval + the part of the reconcile after `now` is read: median "
        f"{ms(statistics.median(periods)) if periods else 'n/a'}.",
        f"While the rollout waits at the pause, every analysis tick costs {_mean(per_tick_reconciles):.1f} "
        f"reconciles, {_mean(per_tick_requests):.1f} API requests and {_mean(per_tick_writes):.1f} status PATCHes "
        "of the operator's engine (audit log; reconciles that write: one that writes nothing only adds its reads "
        "to the next one)" + ("; one reconcile with one PATCH would do." if _mean(per_tick_writes) > 1.05 else
                               ": the one status PATCH that records the evaluation.")
        + (" The second reconcile is woken by the operator's own status write (kopf on.event → the daemon's "
           "Event), and its status PATCH changes nothing: the status compared before writing carries None-valued "
           "nested fields (e.g. stableModel.version, history[].step/token/by) that the apiserver never stores, "
           "so it always looks different." if _mean(per_tick_reconciles) > 1.5 else ""),
        f"The operator's own histogram `modelrollout_reconcile_seconds` (observe + decide + carry out, every "
        f"reconcile of the run): mean {ms(reconcile_mean)}.",
    ]
    notes += [f"Failed trial: {f}" for f in failures]
    mid = median_index(detect)
    appendix = trace_block(
        f"The operator's requests in the reconcile that rolled back, median trial ({trials[mid].name}, t1 − t0 = "
        f"{ms(trials[mid].detect)}), from the audit log, ms after t0 (received, +duration, client, verb, resource, "
        "name):", trials[mid].trace) if mid >= 0 else ""
    return Result(
        name=NAME, title=TITLE, method=METHOD, date=today(), trials=len(trials), failed_trials=len(failures),
        wall_seconds=wall, tables=[headline, breakdown, bound], verdict=verdict, notes=notes,
        raw={"t1_minus_t0": detect, "t1_minus_tset": total, "t0_minus_tset": [t.scrape for t in trials],
             "tick_wait": [t.tick_wait for t in trials], "reconcile_to_delete": [t.to_delete for t in trials],
             "delivery": [t.delivery for t in trials], "reaction": reaction, "analysis_period": periods,
             "status_writes_per_tick": per_tick_writes, "requests_per_tick": per_tick_requests,
             "reconciles_per_tick": per_tick_reconciles},
        appendix=appendix,
    )


def _mean(values: list[float]) -> float:
    vals = [v for v in values if v == v]
    return sum(vals) / len(vals) if vals else float("nan")


def main(argv: list[str] | None = None) -> int:
    from bench.report import cli

    return cli(argv, name=NAME, doc=__doc__, measure=measure, default_trials=20,
               trials_help="measured trials (at least 20; plus one warm-up)")


if __name__ == "__main__":
    sys.exit(main())
