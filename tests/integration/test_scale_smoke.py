"""The scale benchmark's scenario (bench/scale.py) with a few rollouts at once: correctness only, no timing.

The same code as ``python -m bench.scale``, run against the session's control plane and Prometheus with its own
operator: every rollout is released, then all get a new revision at once and must reach Succeeded through
setWeight 25 → analysis → 50 → 100, each reading its own series from one exporter, within the write budget.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bench.common import BENCH_AGENT, AuditLog, Env, now
from bench.scale import TARGET_WRITES_PER_STEP, WEIGHT_STEPS, run_scale
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from devenv.localenv.controlplane import ControlPlane
from devenv.localenv.operatorproc import operator_process
from devenv.localenv.procs import free_port, port_open, wait_until
from devenv.localenv.prometheus import Prometheus

N = 12


@pytest.fixture
def env(crd: ControlPlane, namespace: str, prometheus: Prometheus, tmp_path: Path) -> Iterator[Env]:
    port = free_port()
    api_client: Any = config.new_client_from_config(config_file=str(crd.kubeconfig))  # type: ignore[no-untyped-call]
    api_client.user_agent = BENCH_AGENT
    # The operator starts once the apiserver serves watches of ModelRollouts: on a control plane that has just
    # installed the CRD its watch cache is still initializing and answers 429, which kopf logs as an ERROR (and
    # retries), and this test counts error lines in the operator's log.
    wait_until(lambda: _rollouts_watchable(api_client, namespace), 30, 0.1, what="a watch of ModelRollouts served")
    op = operator_process(crd.kubeconfig, tmp_path / "operator.log", namespaces=[namespace], metrics_port=port)
    op.start()
    try:

        def up() -> bool:
            op.check_alive()
            return port_open(port)

        wait_until(up, 60, 0.05, what="operator metrics endpoint")
        yield Env(root=tmp_path, cp=crd, namespace=namespace, operator=op, operator_metrics_port=port,
                  prometheus=prometheus, api_client=api_client, audit=AuditLog(crd.audit_log), started=now())
    finally:
        op.stop()
        api_client.close()
        print(f"--- operator log tail ({op.log})\n{op.log_tail(40)}")


def _rollouts_watchable(api_client: Any, namespace: str) -> bool:
    """A one-second watch of the namespace's ModelRollouts is served (not refused while the storage initializes)."""
    try:
        resp = client.CustomObjectsApi(api_client).list_namespaced_custom_object(
            "modelrollout.io", "v1alpha1", namespace, "modelrollouts", watch=True, timeout_seconds=1,
            _preload_content=False, _request_timeout=5)
    except ApiException as exc:
        if exc.status in (404, 429, 503):
            return False
        raise
    resp.close()
    return True


def test_rollouts_at_once_all_succeed_within_the_write_budget(env: Env) -> None:
    run = run_scale(env, N, interval_s=2.0, timeout=150, log=print)
    assert run.succeeded == N
    assert not run.problems, run.problems
    for weight in WEIGHT_STEPS.values():
        assert len(run.step_latency[weight]) == N, f"every rollout's setWeight {weight} was matched to its PATCH"
    assert run.weight_writes == len(WEIGHT_STEPS) * N, "one canary Ingress write per setWeight step"
    assert len(run.step_reconcile_writes) == len(WEIGHT_STEPS) * N
    assert run.step_writes_max <= TARGET_WRITES_PER_STEP, (run.step_reconcile_writes, run.writes_by)
    assert run.reconcile_errors == 0 and run.log_errors == 0
    assert run.evaluations >= 2 * N, "every rollout passed its analysis step (2 passes)"
    assert run.prom_queries >= run.evaluations, "every evaluation queried Prometheus"
    assert run.rss_peak_mib > 0 and run.requests > 0
    # a reconcile reads the rollout, its Deployments and the canary Ingress from the watch cache (4 GETs each
    # without it); GETs are left for objects just written whose echo is still on its way
    reads = sum(run.requests_by.get(f"get {kind}", 0) for kind in ("modelrollouts", "deployments", "ingresses"))
    assert run.reconciles > 0 and reads < run.reconciles, (reads, run.reconciles, run.requests_by)
    # Services, Ingresses (the user's and the canary's), the prewarm DaemonSet and the operator's ConfigMaps are
    # read from the operator's watches while they are healthy, and an object the operator just wrote from the
    # apiserver's answer to the write until its echo: no GET of them per reconcile, and no LIST of ConfigMaps or
    # pods (NAME-revisions, replaced at promotion, is read from the watch too; the replace is guarded by its
    # resourceVersion). The new revision's Deployment is not asked for before it is made: the operator's
    # Deployments are listed before any reconcile runs, so a name the watch never showed does not exist. Left: the
    # rollouts look for their prewarm DaemonSet, which does not exist here; the first look in a namespace LISTs its
    # labelled DaemonSets once (Kube.daemon_set) and every rollout's absent DaemonSet is known from then on.
    gets = {kind: run.requests_by.get(f"get {kind}", 0)
            for kind in ("services", "ingresses", "configmaps", "daemonsets", "deployments")}
    assert gets == {"services": 0, "ingresses": 0, "configmaps": 0, "daemonsets": 0, "deployments": 0}, \
        run.requests_by
    assert run.requests_by.get("list daemonsets", 0) <= 1, run.requests_by
    assert run.requests_by.get("list configmaps", 0) == run.requests_by.get("list pods", 0) == 0, run.requests_by
