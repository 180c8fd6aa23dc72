"""The objects the operator's watches deliver, read instead of a GET when they are known to be current.

kopf watches the ModelRollouts, the Deployments the operator owns (their events wake the rollout's daemon) and the
canary Ingresses it owns. Each event's body is kept here, so that a reconcile reads the rollout, its two
Deployments and the NGINX router's canary Ingress from memory instead of four GETs. What makes a watched body
trustworthy is the operator's own writes: a write is answered with the object's new resourceVersion, and until the
watch has delivered that version (the write's echo) the kept body is older than what the operator knows, so the
read goes to the apiserver instead. Events that arrive before the echo are older than the write (a watch delivers
in resourceVersion order, and the write was applied on top of them); after the echo the watch is at least as new as
the write. kopf may fold a burst of events into its last one, so an echo can go missing: then a GET that answers
with the same resourceVersion as the kept body shows that the watch has caught up.

Until the echo, the apiserver's answer to the write (the object as written; for the rollout, whose writes answer
with a plain dict) is read instead of a GET, for as long as no watch event other than an echo of the operator's own
earlier writes arrives: such an event may carry another writer's change newer than the answer, so from then on
the read is a GET (whose answer, when no event arrived while it was in flight, is read in turn). Under load the
watch lags behind the writes, so a reconcile between a write and its echo reads the write's answer instead of
adding a GET where the apiserver is short (figures: docs/benchmarks.md, Scale, fix (10)). A write whose echo is not
matched within ``PENDING_TTL`` forgets the kept body too, so nothing stale is ever trusted; an object never seen on
a watch (not watched, not yet listed) is read from the apiserver. resourceVersions are only compared for equality,
never ordered (the API treats them as opaque).

Absence is known too, because a canary Deployment or Ingress is missing for much of a rollout (before the first
weight, after promotion) and a reconcile must not ask for it each time (docs/benchmarks.md, Scale, fix (8)): an object
is known absent once the watch delivered its DELETED event, a GET answered 404, or the operator deleted it itself,
and stays so until a watch event shows it again or the operator writes it. A DELETED event while an own write is
unconfirmed proves nothing about that write (the write may have recreated it) and leaves the key to the API. After
the operator's own delete, events for the object are ignored until the watch delivers its DELETED echo (they are
older than the delete), for at most ``PENDING_TTL``.
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
OWN_KEPT = 4
"""Own writes per object whose late echoes are recognised (under load one write's echo can come after the next)."""
ABSENT_MAX = 50_000
"""Known-absent keys kept at most (those of deleted rollouts are never asked for again); past it they are all
forgotten, which costs GETs, never correctness."""


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
        self._events: dict[Key, int] = {}
        """key -> watch events seen for it (tells a write whether any arrived while it was in flight)."""
        self._pending: dict[Key, tuple[str, float]] = {}
        """key -> (resourceVersion of the operator's last write, when); removed when the watch caught up."""
        self._answer: dict[Key, Body] = {}
        """key -> what the apiserver answered the unconfirmed write with (or a GET since): read instead of a GET
        while no event of another writer arrived after it."""
        self._own: dict[Key, tuple[str, ...]] = {}
        """key -> resourceVersions of the operator's last few writes (their late echoes are not another writer)."""
        self._doubt: set[Key] = set()
        """Keys whose unconfirmed write was followed by an event that is not an own echo: read the API."""
        self._absent: set[Key] = set()
        """Keys known not to exist (see the module's docstring)."""
        self._deleting: dict[Key, float] = {}
        """key -> when the operator deleted it; until the watch's DELETED echo, older events are ignored."""
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def saw(self, key: Key, body: Mapping[str, Any], *, deleted: bool = False) -> None:
        """A watch event for ``key`` (kopf's body is copied: the kept one must not change under a reader)."""
        if deleted:
            with self._lock:
                self._seen.pop(key, None)
                self._deleting.pop(key, None)
                if key in self._pending:  # an own write may have made it again: ask the API
                    self._events[key] = self._events.get(key, 0) + 1
                    self._doubt.add(key)
                else:  # nothing more to remember of it than its absence
                    self._events.pop(key, None)
                    self._own.pop(key, None)
                    self._note_absent(key)
            return
        kept = self._keep(key, body)
        rv = _version(kept)
        with self._lock:
            self._prune(self._clock())
            self._events[key] = self._events.get(key, 0) + 1
            if key in self._deleting:
                return  # older than the operator's own delete, whose echo is still on its way
            self._seen[key] = kept
            self._absent.discard(key)
            pending = self._pending.get(key)
            if pending is not None and pending[0] == rv:
                self._confirm(key)
            elif pending is not None and rv not in self._own.get(key, ()):
                self._doubt.add(key)  # another writer's change (or a folded echo): the answer may be older

    def removed(self, key: Key) -> None:
        """The operator deleted ``key`` (the apiserver said so): it is absent from now on."""
        with self._lock:
            self._seen.pop(key, None)
            self._confirm(key)
            self._events.pop(key, None)  # a write in flight meanwhile compares unequal: it is not trusted
            self._own.pop(key, None)
            self._note_absent(key)
            self._deleting[key] = self._clock()

    def events(self, key: Key) -> int:
        """How many watch events ``key`` has had (pass it to :meth:`wrote` from before the write was sent)."""
        with self._lock:
            return self._events.get(key, 0)

    def wrote(self, key: Key, resource_version: str | None, answer: Mapping[str, Any] | None = None,
              events_before: int | None = None) -> None:
        """The operator wrote ``key``; the apiserver answered with ``answer`` at ``resource_version``.

        ``events_before``: :meth:`events` from before the write was sent; if an event arrived while the write
        was in flight, it may be newer than the answer, so the answer is not read in place of the API.
        """
        if resource_version is None:
            return
        now = self._clock()
        kept = None if answer is None else self._keep(key, answer)
        with self._lock:
            self._prune(now)
            self._absent.discard(key)
            self._deleting.pop(key, None)
            self._own[key] = (*self._own.get(key, ())[-(OWN_KEPT - 1):], resource_version)
            if _version(self._seen.get(key)) == resource_version:
                self._confirm(key)
                return  # the echo came first
            self._pending[key] = (resource_version, now)
            self._doubt.discard(key)
            self._answer.pop(key, None)
            if kept is not None and events_before is not None and events_before == self._events.get(key, 0):
                self._answer[key] = kept
            else:
                self._doubt.add(key)

    def fresh(self, key: Key) -> Body | None:
        """The kept body when it is at least as new as the operator's own writes, else None."""
        return self._known(key)[1]

    def _known(self, key: Key) -> tuple[bool, Body | None]:
        """(True, the kept body or None when known absent) when that is current, else (False, None)."""
        with self._lock:
            self._prune(self._clock())
            if key in self._pending:
                answer = None if key in self._doubt else self._answer.get(key)
                return answer is not None, answer
            kept = self._seen.get(key)
            return (kept is not None or key in self._absent), kept

    def read(self, key: Key, get: Callable[[], Body | None]) -> Body | None:
        """The kept body when it is current (None when known absent), else ``get()`` (a GET; None when the object
        does not exist)."""
        known, kept = self._known(key)
        if known:
            self.hits += 1
            return kept
        self.misses += 1
        with self._lock:
            events_before = self._events.get(key, 0)
        got = get()
        rv = _version(got)
        answer = None if got is None else self._keep(key, got)
        with self._lock:
            if key in self._pending:
                if rv is not None and _version(self._seen.get(key)) == rv:
                    self._confirm(key)  # the watch has caught up; only its echo was folded away
                elif answer is not None and events_before == self._events.get(key, 0):
                    self._answer[key] = answer  # newer than the write and every event so far
                    self._doubt.discard(key)
            elif got is None and key not in self._seen:
                self._note_absent(key)  # a watch event or an own write will say when it exists
        return got

    def _keep(self, key: Key, body: Mapping[str, Any]) -> Body:
        trim = self._trim.get(key[0])
        return trim(dict(body)) if trim is not None else _copy(body)

    def _confirm(self, key: Key) -> None:
        self._pending.pop(key, None)
        self._answer.pop(key, None)
        self._doubt.discard(key)

    def _note_absent(self, key: Key) -> None:
        if len(self._absent) >= ABSENT_MAX:
            self._absent.clear()
        self._absent.add(key)

    def _prune(self, now: float) -> None:
        stale = [k for k, (_, at) in self._pending.items() if now - at > PENDING_TTL]
        for k in stale:  # the watch never confirmed the write: forget what it said, read the API
            self._confirm(k)
            self._seen.pop(k, None)
        for k in [k for k, at in self._deleting.items() if now - at > PENDING_TTL]:
            del self._deleting[k]  # the DELETED echo was folded away: events count again

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
    """What a reconcile reads of a Deployment (``workloads.track_state``: of the pod template only the
    containers' images), copied."""
    meta, spec = body.get("metadata") or {}, body.get("spec") or {}
    keep = ("name", "namespace", "uid", "resourceVersion", "generation", "labels", "annotations", "ownerReferences")
    pod = (spec.get("template") or {}).get("spec") or {}
    images = {k: [{"image": c.get("image")} for c in pod[k] or []]
              for k in ("initContainers", "containers") if k in pod}
    out: Body = {
        "metadata": {k: _copy(meta[k]) for k in keep if k in meta},
        "spec": {k: _copy(spec[k]) for k in ("replicas", "selector") if k in spec},
        "status": _copy(body.get("status") or {}),
    }
    if "template" in spec:
        out["spec"]["template"] = {"spec": images}
    return out


def rollout_trimmer(managers: Callable[[list[Body] | None], Mapping[str, str]]) -> Callable[[Body], Body]:
    """A trim for rollouts: the object without its managedFields (``trim_object``) but for who set each control
    annotation, as ``managers`` reads them (``core.approval.annotation_managers``), one entry per annotation in
    the shape it reads. managedFields list every field of the status for each writer: the larger part of a
    rollout kept in memory."""
    def trim(body: Body) -> Body:
        out = trim_object(body)
        who = managers((body.get("metadata") or {}).get("managedFields"))
        if who:
            out["metadata"]["managedFields"] = [
                {"manager": manager, "fieldsV1": {"f:metadata": {"f:annotations": {f"f:{key}": {}}}}}
                for key, manager in who.items()]
        return out
    return trim


def trim_object(body: Body) -> Body:
    """An object without its managedFields (what no reconcile reads), copied."""
    meta = {k: v for k, v in (body.get("metadata") or {}).items() if k != "managedFields"}
    out: Body = _copy({**body, "metadata": meta})
    return out
