"""Webhook notifications of rollout events (I/O): a JSON POST per event, sent off the reconcile thread.

:meth:`Notifier.notify` is called by the engine after a decision was carried out; it only puts the
notifications (built by :mod:`modelrollout.core.notifications`) on a bounded queue, so a slow or dead
receiver never delays a reconcile (or a rollback). One worker thread posts them in order, retrying failed
attempts with exponential backoff (bounded attempts; ``Retry-After`` is honoured). When the queue is full a
notification is dropped and counted, never blocking.

The URL may carry credentials (userinfo, a token in the query string): only ``scheme://host/path`` is ever
logged, userinfo is sent as an ``Authorization: Basic`` header, and header values are never logged.
"""

from __future__ import annotations

import base64
import contextlib
import email.utils
import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from modelrollout import api, telemetry
from modelrollout.core.model import Event
from modelrollout.core.notifications import Notice, notices
from modelrollout.core.refusal import finite_json

log = logging.getLogger("modelrollout.notify")

DEFAULT_TIMEOUT = 5.0
MAX_TIMEOUT = 60.0
MAX_ATTEMPTS = 5
BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 30.0
MAX_RETRY_AFTER_SECONDS = 120.0
QUEUE_SIZE = 1000
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
"""HTTP statuses worth another attempt; any other non-2xx answer is final."""


def redact(url: str) -> str:
    """``scheme://host[:port]/path`` of ``url``: no userinfo, query string or fragment."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<unparseable url>"
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _request_parts(url: str) -> tuple[str, dict[str, str]]:
    """The URL without userinfo, and the headers that carry it (HTTP Basic) instead."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, {}
    netloc = parts.hostname or ""
    if ":" in netloc:
        netloc = f"[{netloc}]"
    if parts.port:
        netloc += f":{parts.port}"
    user = urllib.parse.unquote(parts.username or "")
    password = urllib.parse.unquote(parts.password or "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc)), {"Authorization": f"Basic {token}"}


@dataclass(frozen=True)
class Target:
    """Where a rollout's notifications go."""

    url: str
    timeout: float = DEFAULT_TIMEOUT
    events: frozenset[str] = frozenset()
    """Events to send; empty: all."""

    def __repr__(self) -> str:  # never show the URL's secrets in a traceback or a log line
        return f"Target({redact(self.url)!r}, timeout={self.timeout}, events={sorted(self.events)})"


@dataclass(frozen=True)
class Response:
    status: int
    retry_after: float | None = None


Poster = Callable[[str, bytes, dict[str, str], float], Response]
"""(url, body, headers, timeout) -> Response; raises OSError when there is no answer."""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a redirect is an answer (3xx, final), never followed with the payload


_LOOPBACK = ("127.0.0.1", "localhost", "::1")
_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())
_proxied = urllib.request.build_opener(_NoRedirect())


def retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP-date), capped; None if absent."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return min(float(text), MAX_RETRY_AFTER_SECONDS)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max(0.0, when.timestamp() - now), MAX_RETRY_AFTER_SECONDS)


def http_post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> Response:
    """POST with urllib; any HTTP answer is a Response, no answer raises OSError."""
    target, auth = _request_parts(url)
    req = urllib.request.Request(target, data=body, headers={**headers, **auth}, method="POST")
    opener = _direct if urllib.parse.urlsplit(target).hostname in _LOOPBACK else _proxied
    try:
        with opener.open(req, timeout=timeout) as resp:
            resp.read(65536)
            return Response(resp.status)
    except urllib.error.HTTPError as exc:
        with exc:
            return Response(exc.code, retry_after(exc.headers.get("Retry-After") if exc.headers else None,
                                                  time.time()))


def _why(exc: BaseException, url: str) -> str:
    """A failure in words without any part of the URL beyond what redact() shows."""
    text = str(getattr(exc, "reason", "") or exc) or type(exc).__name__
    for secret in {url, urllib.parse.urlsplit(url).query, urllib.parse.urlsplit(url).netloc} - {""}:
        text = text.replace(secret, "<redacted>")
    return f"{type(exc).__name__}: {text}"[:300]


@dataclass(frozen=True)
class Delivery:
    target: Target
    notice: Notice


class Notifier:
    """Posts notifications from a bounded queue in one worker thread, with retries and backoff."""

    def __init__(self, default_url: str | None = None, *, default_timeout: float = DEFAULT_TIMEOUT,
                 max_attempts: int = MAX_ATTEMPTS, backoff: float = BACKOFF_SECONDS,
                 max_backoff: float = MAX_BACKOFF_SECONDS, queue_size: int = QUEUE_SIZE,
                 post: Poster = http_post, user_agent: str = "modelrollout",
                 wait: Callable[[float], bool] | None = None) -> None:
        self.default = Target(default_url, min(default_timeout, MAX_TIMEOUT)) if default_url else None
        self.max_attempts = max(1, max_attempts)
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.post = post
        self.user_agent = user_agent
        self._queue: queue.Queue[Delivery | None] = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._wait = wait if wait is not None else self._stop.wait
        """Sleeps between attempts; True: stop retrying (the tests pass one that records the delays)."""
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- the reconcile side: never blocks ---------------------------------------------------------
    def target_for(self, spec: api.ModelRolloutSpec | None) -> Target | None:
        """The rollout's spec.notify.webhook, else the operator-wide default, else None."""
        hook = spec.notify.webhook if spec is not None and spec.notify is not None else None
        if hook is not None:
            return Target(hook.url, min(max(hook.timeout.total_seconds(), 0.1), MAX_TIMEOUT), frozenset(hook.events))
        return self.default

    def notify(self, rollout: dict[str, Any], spec: api.ModelRolloutSpec | None, revision: str,
               old: api.ModelRolloutStatus, new: api.ModelRolloutStatus, events: Sequence[Event],
               now: datetime) -> int:
        """Queue the notifications of a decision that was carried out; how many were queued."""
        if not events:
            return 0
        target = self.target_for(spec)
        if target is None:
            return 0
        meta = rollout["metadata"]
        found = notices(namespace=meta.get("namespace", "default"), name=meta["name"], uid=meta.get("uid", ""),
                        revision=revision, old=old, new=new, events=events, now=now, wanted=target.events)
        return sum(self.submit(Delivery(target, n)) for n in found)

    def submit(self, delivery: Delivery) -> bool:
        self._ensure_worker()
        try:
            self._queue.put_nowait(delivery)
        except queue.Full:
            telemetry.NOTIFICATIONS.labels(delivery.notice.event, "dropped").inc()
            log.warning("notification %s %s dropped: queue full (%d waiting) for %s", delivery.notice.event,
                        delivery.notice.id, self._queue.qsize(), redact(delivery.target.url))
            return False
        return True

    def _ensure_worker(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(target=self._run, name="modelrollout-notify", daemon=True)
                self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the worker after the notification it is posting (queued ones are abandoned)."""
        self._stop.set()
        with self._lock:
            thread = self._thread
        if thread is not None:
            with contextlib.suppress(queue.Full):
                self._queue.put_nowait(None)
            thread.join(timeout)

    # -- the worker side --------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            item = self._queue.get()
            if item is None:
                continue
            try:
                self.deliver(item)
            except Exception:  # the worker must survive anything a receiver does
                log.exception("notification %s %s: unexpected error", item.notice.event, item.notice.id)

    def deliver(self, delivery: Delivery) -> bool:
        """Post one notification, retrying; True when the receiver accepted it (2xx)."""
        notice, target = delivery.notice, delivery.target
        where = redact(target.url)
        payload, _ = finite_json(notice.payload)  # no Infinity/NaN: not JSON, a receiver could not parse it
        body = json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
        headers = {"Content-Type": "application/json", "User-Agent": self.user_agent,
                   "X-ModelRollout-Event": notice.event, "X-ModelRollout-Delivery": notice.id}
        for attempt in range(1, self.max_attempts + 1):
            wait = min(self.backoff * 2 ** (attempt - 1), self.max_backoff)
            final = attempt >= self.max_attempts
            try:
                resp = self.post(target.url, body, headers, target.timeout)
            except (OSError, ValueError) as exc:  # no answer (refused, timed out, DNS)
                problem = _why(exc, target.url)
            else:
                if 200 <= resp.status < 300:
                    telemetry.NOTIFICATIONS.labels(notice.event, "delivered").inc()
                    log.info("notification %s %s delivered to %s (attempt %d)", notice.event, notice.id, where,
                             attempt)
                    return True
                problem = f"HTTP {resp.status}"
                if resp.status not in RETRY_STATUS:
                    final = True
                elif resp.retry_after is not None:
                    wait = resp.retry_after
            if final:
                telemetry.NOTIFICATIONS.labels(notice.event, "failed").inc()
                log.warning("notification %s %s to %s failed after %d attempts: %s", notice.event, notice.id,
                            where, attempt, problem)
                return False
            log.info("notification %s %s to %s: %s; attempt %d/%d in %.1fs", notice.event, notice.id, where,
                     problem, attempt + 1, self.max_attempts, wait)
            if self._wait(wait):
                return False
        return False
