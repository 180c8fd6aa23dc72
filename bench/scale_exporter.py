"""One exporter process serving a compatibility score per rollout and revision, for the scale benchmark.

    python -m bench.scale_exporter --port PORT --series FILE

``FILE`` is JSON: ``[{"rollout": NAME, "revision": REV, "track": TRACK, "value": 1.0}, ...]``. It is read
again whenever its modification time changes (the benchmark rewrites it atomically), so one process serves
the N rollouts' series, labelled ``rollout``/``revision``/``track``, to the real Prometheus that scrapes
it; each rollout's analysis query selects its own series with ``{{rollout}}`` and ``{{revision}}``.
Binds 127.0.0.1 only; stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

METRIC = "model_api_compatibility_score"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Series:
    """The series file, re-read when it changes (thread-safe)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime: int | None = None
        self._text = b""
        self._lock = threading.Lock()

    def exposition(self) -> bytes:
        with self._lock:
            try:
                mtime = self.path.stat().st_mtime_ns
            except OSError:
                return self._text
            if mtime != self._mtime:
                self._text = render(json.loads(self.path.read_text() or "[]"))
                self._mtime = mtime
            return self._text


def render(items: Sequence[dict[str, Any]]) -> bytes:
    """Prometheus text exposition format (0.0.4) of the series. Pure."""
    def lines() -> Iterator[str]:
        yield f"# HELP {METRIC} API compatibility of the model server (1 = fully compatible)."
        yield f"# TYPE {METRIC} gauge"
        for s in items:
            labels = ",".join(f'{k}="{_escape(str(s[k]))}"' for k in ("rollout", "revision", "track"))
            yield f"{METRIC}{{{labels}}} {float(s.get('value', 1.0))!r}"

    return ("\n".join(lines()) + "\n").encode()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale_exporter", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--series", type=Path, required=True)
    args = parser.parse_args(argv)
    series = Series(args.series)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *a: Any) -> None:
            pass

        def do_GET(self) -> None:
            if self.path.split("?")[0] not in ("/metrics", "/healthz"):
                self.send_error(404)
                return
            body = series.exposition() if self.path.startswith("/metrics") else b"ok\n"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True

    def stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.serve_forever(poll_interval=0.5)
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
