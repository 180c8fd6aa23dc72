"""The objects the operator's watches deliver, read instead of a GET when they are known to be current.

kopf watches the ModelRollouts, the Deployments the operator owns (their events wake the rollout's daemon) and the
canary Ingresses it owns. Each event's body is kept here, so that a reconcile reads the rollout, its two
Deployments and the NGINX router's canary Ingress from memory instead of four GETs. What makes a watched body
trustworthy is the operator's own writes: a write is answered with the object's new resourceVersion, and until the
watch has delivered that version (the write's echo) the kept body is older than what the operator knows, so the
read goes to the apiserver instead. Events that arrive before the echo are older than the write (a watch delivers
in resourceVersion order, and the write was applied on top of them); after the echo the watch is at least as new as
the write. kopf may fold a burst of events into its last one, so an echo can go missing: then a GET that answers
with the same resourceVersion as the kept body shows that the watch has caught up. A write whose echo is not
matched within ``PENDING_TTL`` forgets the kept body too, so nothing stale is ever trusted; an object never seen on
a watch (not watched, not yet listed, deleted) is always read from the apiserver. resourceVersions are only
compared for equality, never ordered (the API treats them as opaque).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

Body = dict[str, Any]
Key = tuple[str, str, str]
"""(resource plural, namespace, name)"""

PENDING_TTL = 60.0
"""Seconds an unmatched own write keeps its object's kept body distrusted before both are forgotten."""


def _version(body: Mapping[str, Any] | None) -> str | None:
    if body is None:
        return None
    rv = (body.get("metadata") or {}).get("resourceVersion")
    return None if rv is None else str(rv)


class WatchCache:
    """Thread-safe: watch events arrive on kopf's event loop, reads and writes come from reconcile threads."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic,
                 trim: Mapping[str, Callable[[Body], Body]] | None = None) -> None:
        self._clock = clock
        self._trim = dict(trim or {})
        self._seen: dict[Key, Body] = {}
        self._pending: dict[Key, tuple[str, float]] = {}
        """key -> (resourceVersion of the operator's last write, when); removed when the watch caught up."""
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def saw(self, key: Key, body: Mapping[str, Any], *, deleted: bool = False) -> None:
        """A watch event for ``key`` (kopf's body is copied: the kept one must not change under a reader)."""
        if deleted:
            with self._lock:
                self._seen.pop(key, None)
                self._pending.pop(key, None)
            return
        trim = self._trim.get(key[0])
        kept = trim(dict(body)) if trim is not None else _copy(body)
        rv = _version(kept)
        with self._lock:
            self._seen[key] = kept
            pending = self._pending.get(key)
            if pending is not None and pending[0] == rv:
                del self._pending[key]

    def wrote(self, key: Key, resource_version: str | None) -> None:
        """The operator wrote ``key``; its answer carried ``resource_version``."""
        if resource_version is None:
            return
        now = self._clock()
        with self._lock:
            self._prune(now)
            if _version(self._seen.get(key)) == resource_version:
                return  # the echo came first
            self._pending[key] = (resource_version, now)

    def fresh(self, key: Key) -> Body | None:
        """The kept body when it is at least as new as the operator's own writes, else None."""
        with self._lock:
            self._prune(self._clock())
            if key in self._pending:
                return None
            return self._seen.get(key)

    def read(self, key: Key, get: Callable[[], Body | None]) -> Body | None:
        """The kept body when it is current, else ``get()`` (a GET; None when the object does not exist)."""
        kept = self.fresh(key)
        if kept is not None:
            self.hits += 1
            return kept
        self.misses += 1
        got = get()
        rv = _version(got)
        with self._lock:
            if rv is not None and key in self._pending and _version(self._seen.get(key)) == rv:
                del self._pending[key]  # the watch has caught up; only its echo was folded away
        return got

    def _prune(self, now: float) -> None:
        stale = [k for k, (_, at) in self._pending.items() if now - at > PENDING_TTL]
        for k in stale:  # the watch never confirmed the write: forget what it said, read the API
            del self._pending[k]
            self._seen.pop(k, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._seen)


def _copy(value: Any) -> Any:
    """A deep copy of JSON-shaped data (dicts, lists, scalars): cheaper than copy.deepcopy."""
    if isinstance(value, Mapping):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def trim_deployment(body: Body) -> Body:
    """What a reconcile reads of a Deployment (``workloads.track_state``), copied."""
    meta, spec = body.get("metadata") or {}, body.get("spec") or {}
    keep = ("name", "namespace", "uid", "resourceVersion", "generation", "labels", "annotations", "ownerReferences")
    return {
        "metadata": {k: _copy(meta[k]) for k in keep if k in meta},
        "spec": {k: _copy(spec[k]) for k in ("replicas", "selector", "template") if k in spec},
        "status": _copy(body.get("status") or {}),
    }


def trim_object(body: Body) -> Body:
    """An object without its managedFields (what no reconcile reads), copied."""
    meta = {k: v for k, v in (body.get("metadata") or {}).items() if k != "managedFields"}
    out: Body = _copy({**body, "metadata": meta})
    return out
