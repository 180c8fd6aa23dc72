"""kopf handlers, kept thin: each rollout gets one daemon that reconciles when woken or when due.

Watch events on ModelRollouts and on the Deployments the operator owns only wake the rollout's daemon;
the daemon runs :meth:`Engine.reconcile` in a worker thread (the Kubernetes and Prometheus clients are
synchronous) and sleeps until the next wake-up or the time the decision asked for.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf

from modelrollout import api, telemetry
from modelrollout.engine import Engine
from modelrollout.kube import LABEL_ROLLOUT, LABEL_TRACK, SERVICE_NAME_LABEL, Kube, retry_after
from modelrollout.notify import Notifier
from modelrollout.watchcache import Key
from modelrollout.workloads import failing

log = logging.getLogger("modelrollout.handlers")

RESYNC_SECONDS = 60.0
"""A rollout with nothing to wait for is still looked at this often."""

CANARY_SLICES = f"{LABEL_ROLLOUT},{LABEL_TRACK}=canary"
"""The EndpointSlices of the ``NAME-canary`` Services (a slice copies its Service's labels)."""
LABELLED = {("apps", "deployments"): LABEL_ROLLOUT, ("apps", "daemonsets"): LABEL_ROLLOUT,
            ("", "configmaps"): LABEL_ROLLOUT, ("", "pods"): LABEL_ROLLOUT,
            ("discovery.k8s.io", "endpointslices"): CANARY_SLICES}
"""The kinds watched only where they carry the operator's rollout label (a server-side label selector, the same
as their handlers' ``labels`` filter), so the operator's memory and the watches' traffic do not grow with the
other applications' pods and ConfigMaps; of the EndpointSlices only the canary Services' (the only ones read)."""


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.finalizer = "modelrollout.io/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="modelrollout.io")
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    for (group, plural), selector in LABELLED.items():  # only the operator's objects are sent, not every pod
        settings.watching.label_selectors[group, "v1", plural] = selector
    workers = int(getattr(memo, "workers", 64))
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=workers))
    if getattr(memo, "engine", None) is None:
        memo.engine = Engine(Kube.connect(fence=getattr(memo, "fence", None)),
                             default_prometheus=getattr(memo, "prometheus_address", None) or None,
                             notifier=Notifier(getattr(memo, "notify_webhook", None) or None))
    # kopf processes no event and starts no daemon until every indexed watch has listed its objects, and an index
    # handler runs before that gate lifts (deployment_listed): a Deployment of the operator's that the watch never
    # showed does not exist, and a reconcile does not ask the apiserver for it.
    memo.engine.kube.watched.listed_in_full("deployments")
    memo.wakeups = {}


class NoDiffBase(kopf.DiffBaseStorage):
    """No diff base: the operator has no change handlers (on.create/update/delete), only event handlers and a daemon,
    so the essence kopf would build (a deep copy) on every watch event of every kind is never compared. Nothing is
    stored on the objects."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def _wake(memo: kopf.Memo, uid: str | None) -> None:
    event = memo.wakeups.get(uid) if uid else None
    if event is not None:
        event.set()


def _wake_rollout(memo: kopf.Memo, engine: Engine, namespace: str, name: str) -> None:
    """Wake a rollout known by name (an object's rollout label), through its uid as the watch keeps it."""
    kept = engine.kube.watched.fresh((api.PLURAL, namespace, name))
    _wake(memo, ((kept or {}).get("metadata") or {}).get("uid"))


@kopf.on.event(api.GROUP, api.VERSION, api.PLURAL)
async def rollout_changed(uid: str, name: str, namespace: str | None, body: kopf.Body, memo: Any,
                          type: str | None, **_: Any) -> None:
    engine: Engine | None = getattr(memo, "engine", None)
    _keep(engine, (api.PLURAL, namespace or "default", name), body, type)
    if engine is not None and engine.own_write(namespace or "default", name, body.metadata.get("resourceVersion")):
        return  # the echo of the operator's own status write: nothing changed that it does not know
    _wake(memo, uid)


# Both wake-up handlers are async: they only set an asyncio.Event, which must happen on the event loop (a sync
# handler runs in kopf's executor thread, where Event.set() is not thread-safe and queues behind other handlers).
@kopf.index("apps", "v1", "deployments", labels={LABEL_ROLLOUT: kopf.PRESENT})
async def deployment_listed(body: kopf.Body, memo: kopf.Memo, name: str, namespace: str | None,
                            **_: Any) -> None:
    """Every Deployment of the operator's, kept for reads. An index (it indexes nothing): kopf runs it for each
    object of the initial listing before any other handler may run (see ``startup``), and for every later event
    but a deletion (``deployment_changed`` keeps those)."""
    _keep(getattr(memo, "engine", None), ("deployments", namespace or "default", name), body, None)


@kopf.on.event("apps", "v1", "deployments", labels={LABEL_ROLLOUT: kopf.PRESENT})
async def deployment_changed(body: kopf.Body, memo: kopf.Memo, uid: str, name: str, namespace: str | None,
                             type: str | None, **_: Any) -> None:
    seen: dict[str, tuple[Any, ...]] = memo.setdefault("deployments_seen", {})
    if type == "DELETED":
        _keep(getattr(memo, "engine", None), ("deployments", namespace or "default", name), body, type)
        seen.pop(uid, None)
    else:
        signature = _track_signature(body)
        if signature is None or seen.get(uid) == signature:
            return  # nothing the engine reads from a Deployment changed: a reconcile would find nothing new
        seen[uid] = signature
    for ref in body.metadata.get("ownerReferences") or []:
        if ref.get("kind") == api.KIND:
            _wake(memo, ref.get("uid"))


@kopf.on.event("networking.k8s.io", "v1", "ingresses")
async def ingress_changed(body: kopf.Body, memo: kopf.Memo, name: str, namespace: str | None, type: str | None,
                          **_: Any) -> None:
    """Every Ingress (the NGINX router's canary Ingresses and the users' Ingresses they copy, which carry no label
    of the operator's): only kept for reads; they wake no one."""
    _keep(getattr(memo, "engine", None), ("ingresses", namespace or "default", name), body, type)


@kopf.on.event("discovery.k8s.io", "v1", "endpointslices", labels={LABEL_ROLLOUT: kopf.PRESENT, LABEL_TRACK: "canary"})
async def endpoints_changed(body: kopf.Body, memo: kopf.Memo, name: str, namespace: str | None, type: str | None,
                            **_: Any) -> None:
    """The ``NAME-canary`` Services' EndpointSlices (they copy the Service's labels): which canary pods a router can
    reach. A change of their ready endpoints wakes the rollout, which may be waiting for them before it moves
    traffic; a slice rewritten with the same ready pods wakes no one."""
    engine: Engine | None = getattr(memo, "engine", None)
    labels = body.metadata.get("labels") or {}
    rollout, service = labels.get(LABEL_ROLLOUT), labels.get(SERVICE_NAME_LABEL)
    canary = engine is not None and bool(rollout) and service == f"{rollout}-canary"
    before = engine.kube.ready_endpoints_of(namespace or "default", service) if engine and canary else None
    _keep(engine, ("endpointslices", namespace or "default", name), body, type)
    if engine is not None and canary and engine.kube.ready_endpoints_of(namespace or "default", service) != before:
        _wake_rollout(memo, engine, namespace or "default", str(rollout))


@kopf.on.event("", "v1", "services")
async def service_changed(body: kopf.Body, memo: kopf.Memo, name: str, namespace: str | None, type: str | None,
                          **_: Any) -> None:
    """Every Service (the users' root Services carry no label of the operator's), trimmed to its selector, ports
    and owners: only kept for reads (routers, per-track Services); they wake no one."""
    _keep(getattr(memo, "engine", None), ("services", namespace or "default", name), body, type)


@kopf.on.event("", "v1", "configmaps", labels={LABEL_ROLLOUT: kopf.PRESENT})
async def config_map_changed(body: kopf.Body, memo: kopf.Memo, name: str, namespace: str | None, type: str | None,
                             **_: Any) -> None:
    """The operator's ConfigMaps (each revision's model config, NAME-revisions): only kept for reads."""
    _keep(getattr(memo, "engine", None), ("configmaps", namespace or "default", name), body, type)


@kopf.on.event("apps", "v1", "daemonsets", labels={LABEL_ROLLOUT: kopf.PRESENT})
async def daemon_set_changed(body: kopf.Body, memo: kopf.Memo, name: str, namespace: str | None, type: str | None,
                             **_: Any) -> None:
    """The prewarm DaemonSets: only kept for reads (a rollout waiting for one looks again when due)."""
    _keep(getattr(memo, "engine", None), ("daemonsets", namespace or "default", name), body, type)


@kopf.on.event("", "v1", "pods", labels={LABEL_ROLLOUT: kopf.PRESENT})
async def pod_changed(body: kopf.Body, memo: kopf.Memo, uid: str, name: str, namespace: str | None,
                      type: str | None, **_: Any) -> None:
    """The pods of the rollouts' Deployments and prewarm DaemonSets, trimmed to their labels, node, conditions
    and container states, kept for reads (why pods do not start). A pod that starts or stops failing to start
    (``workloads.failing``) wakes its rollout, which names the reason; readiness wakes it through the Deployment's
    status."""
    engine: Engine | None = getattr(memo, "engine", None)
    _keep(engine, ("pods", namespace or "default", name), body, type)
    seen: dict[str, tuple[str, ...]] = memo.setdefault("pods_failing", {})
    now = () if type == "DELETED" else failing(dict(body))
    if seen.get(uid, ()) == now:
        return
    if now:
        seen[uid] = now
    else:
        seen.pop(uid, None)
    rollout = (body.metadata.get("labels") or {}).get(LABEL_ROLLOUT)
    if engine is not None and rollout:
        _wake_rollout(memo, engine, namespace or "default", str(rollout))


def _keep(engine: Engine | None, key: Key, body: kopf.Body, type: str | None) -> None:
    """Every watch event's body goes to the engine's port (before any filter), so a reconcile can read it
    instead of a GET."""
    if engine is not None:
        engine.kube.saw(key, body, deleted=type == "DELETED")


def _track_signature(body: kopf.Body) -> tuple[Any, ...] | None:
    """What the engine reads from a Deployment (``workloads.track_state``), or None while the controller has not
    observed its latest spec yet (the wake-up comes when it has: a write's own echo wakes no one)."""
    meta, spec, status = body.get("metadata") or {}, body.get("spec") or {}, body.get("status") or {}
    generation = int(meta.get("generation") or 0)
    if int(status.get("observedGeneration") or 0) < generation:
        return None
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k.startswith("modelrollout.io/")}
    return (generation, tuple(sorted(annotations.items())), spec.get("replicas"), status.get("replicas"),
            status.get("updatedReplicas"), status.get("readyReplicas"))


@kopf.daemon(api.GROUP, api.VERSION, api.PLURAL, cancellation_timeout=5.0, backoff=1.0)
async def rollout_daemon(name: str, namespace: str | None, uid: str, memo: Any, stopped: kopf.DaemonStopped,
                         logger: logging.Logger | logging.LoggerAdapter[Any], **_: Any) -> None:
    namespace = namespace or "default"
    wake = memo.wakeups.setdefault(uid, asyncio.Event())
    engine: Engine = memo.engine
    try:
        while not stopped:
            wake.clear()
            try:
                delay = await asyncio.to_thread(engine.reconcile, namespace, name)
            except Exception as exc:
                telemetry.RECONCILE_ERRORS.labels(namespace, name).inc()
                logger.warning("reconcile failed, retrying: %s: %s", type(exc).__name__, exc)
                delay = 1.0
                backoff = retry_after(exc)
                if backoff is not None:  # the apiserver said when: no wake-up may retry sooner
                    await stopped.wait(max(backoff, delay))
                    continue
            timeout = RESYNC_SECONDS if delay is None else min(max(delay, 0.0), RESYNC_SECONDS)
            if timeout > 0:
                await _sleep(wake, stopped, timeout)
    finally:
        memo.wakeups.pop(uid, None)


async def _sleep(wake: asyncio.Event, stopped: kopf.DaemonStopped, timeout: float) -> None:
    """Until woken, ``timeout`` passed, or the operator stops (a graceful stop or a leader handing over then
    need not wait for kopf's cancellation timeout; no reconcile is ever cut off in its thread)."""
    waiters = {asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stopped.wait())}
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
