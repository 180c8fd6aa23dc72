"""What the operator knows about the cluster between requests: the facts the port (:mod:`modelrollout.kube`) owns.

:class:`WatchCache` keeps one record per watched object; :class:`Recent` keeps time-bounded answers (a passing
check, a pod listing's reason, a DaemonSet seen absent). Neither makes requests: the port feeds them.

The objects the operator's watches deliver are read instead of a GET when they are known to be current.

kopf watches the ModelRollouts, the Deployments the operator owns (their events wake the rollout's daemon), every
Service and Ingress, and the DaemonSets, ConfigMaps and pods that carry the operator's rollout label (listings of those
are answered from here: :meth:`WatchCache.listed`). Each event's body is kept here, so that a reconcile reads the
rollout, its two Deployments and the NGINX router's canary Ingress from memory instead of four GETs. What makes a
watched body trustworthy is the operator's own writes: a write is answered with the object's new resourceVersion, and
until the watch has delivered that version (the write's echo) the kept body is older than what the operator knows, so
the read goes to the apiserver instead. Events that arrive before the echo are older than the write (a watch delivers
in resourceVersion order, and the write was applied on top of them); after the echo the watch is at least as new as the
write. kopf may fold a burst of events into its last one, so an echo can go missing: then a GET that answers with the
same resourceVersion as the kept body shows that the watch has caught up.

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
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
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


@dataclass(frozen=True)
class OwnWrite:
    """One of the operator's own writes of an object: the resourceVersion it made, and whether its echo is news
    to nobody (``quiet``: a status update or a consumed annotation; a spec change is news to the reconciler)."""

    version: str
    quiet: bool


@dataclass
class _Record:
    """Everything known about one object (guarded by the cache's lock)."""

    body: Body | None = None
    """The last body a watch delivered (trimmed), or None."""
    events: int = 0
    """Watch events seen for it (tells a write whether any arrived while it was in flight)."""
    pending: tuple[str, float] | None = None
    """(resourceVersion of the operator's last write, when) until the watch has caught up with it."""
    answer: Body | None = None
    """What the apiserver answered the unconfirmed write with (or a GET since): read instead of a GET while no
    event of another writer arrived after it."""
    doubt: bool = False
    """The unconfirmed write was followed by an event that is not an own echo: read the API."""
    own: tuple[OwnWrite, ...] = ()
    """The operator's last few writes (their late echoes are not another writer)."""
    absent: bool = False
    """Known not to exist (see the module's docstring)."""
    deleting: float | None = None
    """When the operator deleted it; until the watch's DELETED echo, older events are ignored."""
    group: str | None = None
    """The value of the cache's group label on the last body kept or answer read (see :meth:`WatchCache.listed`)."""

    def confirm(self) -> None:
        self.pending, self.answer, self.doubt = None, None, False

    def expire(self, now: float) -> None:
        """Forget what time has made untrustworthy: an own write the watch never confirmed (and the body it
        distrusts), an own delete whose DELETED echo was folded away (events count again)."""
        if self.pending is not None and now - self.pending[1] > PENDING_TTL:
            self.confirm()
            self.body = None
        if self.deleting is not None and now - self.deleting > PENDING_TTL:
            self.deleting = None

    def own_versions(self) -> tuple[str, ...]:
        return tuple(w.version for w in self.own)


class WatchCache:
    """Thread-safe: watch events arrive on kopf's event loop, reads and writes come from reconcile threads."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic,
                 trim: Mapping[str, Callable[[Body], Body]] | None = None,
                 listed_only: frozenset[str] = frozenset(), group_label: str | None = None) -> None:
        self._clock = clock
        self._trim = dict(trim or {})
        self._listed_only = listed_only
        """Plurals read only through :meth:`listed` (pods): a DELETED event forgets the record instead of keeping
        it as known absent, since no one asks for one of them by name."""
        self._records: dict[Key, _Record] = {}
        self._names: dict[tuple[str, str], set[str]] = {}
        """(plural, namespace) -> the names that have a record: what :meth:`listed` reads."""
        self._complete: set[str] = set()
        """Plurals whose watch lists every object it selects before any read (:meth:`listed_in_full`)."""
        self._group_label = group_label
        self._groups: dict[tuple[str, str, str], set[str]] = {}
        """(plural, namespace, value of ``group_label``) -> the names whose record is in that group: what
        :meth:`listed` of one group reads, so a reconcile's listing costs its own objects, not the namespace's."""
        self._absent = 0
        """Records marked absent (bounded by ``ABSENT_MAX``)."""
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def _record(self, key: Key, now: float) -> _Record:
        """The record of ``key`` (made when missing), expired as of ``now``; call with the lock held."""
        rec = self._records.get(key)
        if rec is None:
            rec = self._records[key] = _Record()
            self._names.setdefault((key[0], key[1]), set()).add(key[2])
        rec.expire(now)
        return rec

    def _forget(self, key: Key) -> None:
        """Drop the record of ``key``; call with the lock held."""
        self._regroup(key, self._records.pop(key), None)
        names = self._names.get((key[0], key[1]))
        if names is not None:
            names.discard(key[2])
            if not names:
                del self._names[(key[0], key[1])]

    def saw(self, key: Key, body: Mapping[str, Any], *, deleted: bool = False) -> None:
        """A watch event for ``key`` (kopf's body is copied: the kept one must not change under a reader)."""
        kept = None if deleted else self._keep(key, body)
        with self._lock:
            rec = self._record(key, self._clock())
            if deleted:
                if key[0] in self._listed_only and rec.pending is None:
                    self._present(rec)
                    self._forget(key)
                elif rec.pending is not None:  # an own write may have made it again: ask the API
                    rec.body, rec.deleting = None, None
                    rec.events += 1
                    rec.doubt = True
                else:  # nothing more to remember of it than its absence
                    self._replace(key, rec, _Record())
                return
            rec.events += 1
            if rec.deleting is not None:
                return  # older than the operator's own delete, whose echo is still on its way
            rv = _version(kept)
            rec.body = kept
            self._regroup(key, rec, kept)
            self._present(rec)
            if rec.pending is not None and rec.pending[0] == rv:
                rec.confirm()
            elif rec.pending is not None and rv not in rec.own_versions():
                rec.doubt = True  # another writer's change (or a folded echo): the answer may be older

    def removed(self, key: Key) -> None:
        """The operator deleted ``key`` (the apiserver said so): it is absent from now on."""
        with self._lock:
            now = self._clock()
            # events start again from 0: a write in flight meanwhile compares unequal and is not trusted
            self._replace(key, self._record(key, now), _Record(deleting=now))

    def listed_in_full(self, plural: str) -> None:
        """Every read of ``plural`` comes after its watch has delivered each object it selects (the caller
        guarantees it): from now on a name it never showed, nor the operator wrote, is known absent instead of
        asked for. Only for a kind whose reads ask only for objects the watch selects."""
        with self._lock:
            self._complete.add(plural)

    def has(self, key: Key) -> bool:
        """Whether anything is known of ``key`` (a watch event, a read, a write or a delete made a record)."""
        with self._lock:
            return key in self._records

    def events(self, key: Key) -> int:
        """How many watch events ``key`` has had (pass it to :meth:`wrote` from before the write was sent)."""
        with self._lock:
            rec = self._records.get(key)
            return 0 if rec is None else rec.events

    def wrote(self, key: Key, resource_version: str | None, answer: Mapping[str, Any] | None = None,
              events_before: int | None = None, *, quiet: bool = False) -> None:
        """The operator wrote ``key``; the apiserver answered with ``answer`` at ``resource_version``.

        ``events_before``: :meth:`events` from before the write was sent; if an event arrived while the write
        was in flight, it may be newer than the answer, so the answer is not read in place of the API.
        ``quiet``: the write's echo is news to nobody (:meth:`quiet_echo`).
        """
        if resource_version is None:
            return
        now = self._clock()
        kept = None if answer is None else self._keep(key, answer)
        with self._lock:
            rec = self._record(key, now)
            self._present(rec)
            rec.deleting = None
            rec.own = (*rec.own[-(OWN_KEPT - 1):], OwnWrite(resource_version, quiet))
            if _version(rec.body) == resource_version:
                rec.confirm()
                return  # the echo came first
            rec.pending = (resource_version, now)
            rec.doubt = False
            rec.answer = None
            if kept is not None:
                self._regroup(key, rec, kept)
            if kept is not None and events_before is not None and events_before == rec.events:
                rec.answer = kept
            else:
                rec.doubt = True

    def quiet_echo(self, key: Key, resource_version: str | None) -> bool:
        """The watch event at ``resource_version`` is the echo of one of the operator's last quiet writes."""
        with self._lock:
            rec = self._records.get(key)
            return rec is not None and resource_version is not None and any(
                w.quiet and w.version == resource_version for w in rec.own)

    def fresh(self, key: Key) -> Body | None:
        """The kept body when it is at least as new as the operator's own writes, else None."""
        return self._known(key)[1]

    def _known(self, key: Key, absence: bool = True) -> tuple[bool, Body | None]:
        """(True, the kept body or None when known absent) when that is current, else (False, None).
        ``absence``: whether a known absence is an answer."""
        with self._lock:
            if key not in self._records:
                return absence and key[0] in self._complete, None
            rec = self._record(key, self._clock())
            return self._current(rec, absence)

    @staticmethod
    def _current(rec: _Record, absence: bool = True) -> tuple[bool, Body | None]:
        """:meth:`_known` of a record (call with the lock held)."""
        if rec.pending is not None:
            answer = None if rec.doubt else rec.answer
            return answer is not None, answer
        return (rec.body is not None or (absence and rec.absent)), rec.body

    def listed(self, plural: str, namespace: str, group: str | None = None) -> list[Body]:
        """The kept bodies of ``plural`` in ``namespace`` (as :meth:`fresh` reads each; an object whose own write
        is not yet confirmed, with nothing current to read, is left out), in name order. What a LIST would answer
        once the watch of ``plural`` has listed: only the objects that watch selects.

        ``group``: only those whose group label (``group_label``) has this value, read from the index of that
        group: the cost is that group's size, not the namespace's."""
        if group is not None and self._group_label is None:
            raise ValueError("listed(group=...) needs a cache made with a group_label")
        with self._lock:
            now = self._clock()
            out = []
            names = self._names.get((plural, namespace), ()) if group is None else \
                self._groups.get((plural, namespace, group), ())
            for name in sorted(names):
                known, body = self._current(self._record((plural, namespace, name), now))
                if known and body is not None and (group is None or self._group_of(body) == group):
                    out.append(body)
            return out

    def _group_of(self, body: Mapping[str, Any]) -> str | None:
        if self._group_label is None:
            return None
        value = ((body.get("metadata") or {}).get("labels") or {}).get(self._group_label)
        return None if value is None else str(value)

    def _regroup(self, key: Key, rec: _Record, body: Mapping[str, Any] | None) -> None:
        """Index ``rec`` under the group of ``body`` (None: under none); call with the lock held."""
        group = None if body is None else self._group_of(body)
        if group == rec.group:
            return
        if rec.group is not None:
            names = self._groups.get((key[0], key[1], rec.group))
            if names is not None:
                names.discard(key[2])
                if not names:
                    del self._groups[(key[0], key[1], rec.group)]
        if group is not None:
            self._groups.setdefault((key[0], key[1], group), set()).add(key[2])
        rec.group = group

    def read(self, key: Key, get: Callable[[], Body | None], *, absence: bool = True) -> Body | None:
        """The kept body when it is current (None when known absent), else ``get()`` (a GET; None when the object
        does not exist).

        ``absence=False`` for a kind whose watch selects only some of its objects (by label) while reads also ask
        for others: an object not selected is never seen on the watch, so neither a 404 nor a DELETED event (the
        object may have stopped matching) says it is still absent later; such a read asks the apiserver."""
        known, kept = self._known(key, absence)
        if known:
            self.hits += 1
            return kept
        self.misses += 1
        events_before = self.events(key)
        got = get()
        rv = _version(got)
        answer = None if got is None else self._keep(key, got)
        with self._lock:
            rec = self._record(key, self._clock())
            if rec.pending is not None:
                if rv is not None and _version(rec.body) == rv:
                    rec.confirm()  # the watch has caught up; only its echo was folded away
                elif answer is not None and events_before == rec.events:
                    rec.answer = answer  # newer than the write and every event so far
                    self._regroup(key, rec, answer)
                    rec.doubt = False
            elif got is None and rec.body is None and absence:
                self._note_absent(rec)  # a watch event or an own write will say when it exists
        return got

    def _keep(self, key: Key, body: Mapping[str, Any]) -> Body:
        trim = self._trim.get(key[0])
        return trim(dict(body)) if trim is not None else _copy(body)

    def _replace(self, key: Key, old: _Record, new: _Record) -> None:
        """Put ``new`` (known absent) in place of ``old``; call with the lock held."""
        self._present(old)
        new.group = old.group  # still indexed there until forgotten (listed skips what is absent)
        self._records[key] = new
        self._note_absent(new)

    def _present(self, rec: _Record) -> None:
        if rec.absent:
            rec.absent = False
            self._absent -= 1

    def _note_absent(self, rec: _Record) -> None:
        if rec.absent:
            return
        if self._absent >= ABSENT_MAX:  # forget every absence, and the records that held nothing else
            for key, other in list(self._records.items()):
                other.absent = False
                if other is not rec and other.body is None and other.pending is None and other.deleting is None \
                        and not other.own:
                    self._forget(key)
            self._absent = 0
        rec.absent = True
        self._absent += 1

    def __len__(self) -> int:
        """Kept bodies (of objects not known to be stale)."""
        with self._lock:
            now = self._clock()
            for rec in self._records.values():
                rec.expire(now)
            return sum(rec.body is not None for rec in self._records.values())


PRUNE_EVERY = 60.0
"""Seconds between sweeps of :class:`Recent` for expired keys."""


class Recent:
    """Facts about rollouts remembered across reconciles for a while (thread-safe; expired keys are dropped)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._until: dict[Hashable, tuple[float, Any]] = {}
        self._lock = threading.Lock()
        self._pruned = clock()

    def holds(self, key: Hashable) -> bool:
        return self.get(key, _MISSING) is not _MISSING

    def get(self, key: Hashable, default: Any = None) -> Any:
        """The value noted for ``key`` while its TTL lasts, else ``default``."""
        with self._lock:
            until, value = self._until.get(key, (0.0, default))
            return value if until > self._clock() else default

    def forget(self, key: Hashable) -> None:
        with self._lock:
            self._until.pop(key, None)

    def note(self, key: Hashable, ttl: float, value: Any = True) -> None:
        now = self._clock()
        with self._lock:
            if now - self._pruned > PRUNE_EVERY:  # bounded by the keys noted within their TTL
                self._until = {k: v for k, v in self._until.items() if v[0] > now}
                self._pruned = now
            self._until[key] = (now + ttl, value)


_MISSING = object()


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


def trim_service(body: Body) -> Body:
    """What a reconcile reads of a Service (``kube.Service``: its selector, ports and owners), copied."""
    meta, spec = body.get("metadata") or {}, body.get("spec") or {}
    keep = ("name", "namespace", "uid", "resourceVersion", "ownerReferences")
    return {"metadata": {k: _copy(meta[k]) for k in keep if k in meta},
            "spec": {k: _copy(spec[k]) for k in ("selector", "ports") if k in spec}}


def trim_pod(body: Body) -> Body:
    """What a reconcile reads of a pod (``workloads.pod_failure``, ``prewarm``: its name, labels and node, its
    conditions and its containers' states and images), copied."""
    meta, spec, status = body.get("metadata") or {}, body.get("spec") or {}, body.get("status") or {}
    keep = ("name", "namespace", "uid", "resourceVersion", "labels")
    out: Body = {"metadata": {k: _copy(meta[k]) for k in keep if k in meta},
                 "spec": {k: spec[k] for k in ("nodeName",) if k in spec},
                 "status": {}}
    if "conditions" in status:
        out["status"]["conditions"] = [{k: c[k] for k in ("type", "status", "reason", "message") if k in c}
                                       for c in status["conditions"] or []]
    for field in ("initContainerStatuses", "containerStatuses"):
        if field in status:
            out["status"][field] = [{k: _copy(cs[k]) for k in ("name", "image", "ready", "state") if k in cs}
                                    for cs in status[field] or []]
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
