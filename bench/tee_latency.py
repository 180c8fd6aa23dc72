"""Latency the compat-probe's tee proxy adds, at a fixed request rate, plain JSON and streamed (SSE).

    PYTHONPATH=operator python -m bench.tee_latency [--rate 200] [--seconds 10] [--shadow-fraction 0.1] \
        [--update-docs]          # replace its section of docs/benchmarks.md (make bench keeps that section)

Three processes on 127.0.0.1: a model-server stand-in (aiohttp; JSON answers of ~300 bytes, or a stream of
8 server-sent events 2 ms apart), the probe in tee mode in front of it (copying ``--shadow-fraction`` of
the requests to a second stand-in as the stable track), and this load generator. The generator sends an
open-loop schedule (one request every 1/rate s, not waiting for answers, over a keep-alive pool) once
straight to the stand-in and once through the probe, and reports the latency percentiles of both and
their difference: the latency the proxy adds. For streams, time to the first event and to the last.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from aiohttp import ClientSession, ClientTimeout, TCPConnector, web

ROOT = Path(__file__).resolve().parents[1]
EVENTS = 8
EVENT_GAP = 0.002


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ------------------------------------------------------------------------------------------ stand-in


async def _json_answer(request: web.Request) -> web.Response:
    await request.read()
    doc = {"object": "chat.completion", "model": "m", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "x" * 200}, "finish_reason": "stop"}]}
    return web.json_response(doc)


async def _sse_answer(request: web.Request) -> web.StreamResponse:
    await request.read()
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for index in range(EVENTS):
        finish = "stop" if index == EVENTS - 1 else None
        chunk = {"object": "chat.completion.chunk", "choices": [
            {"index": 0, "delta": {"content": "tok"}, "finish_reason": finish}]}
        await response.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        await asyncio.sleep(EVENT_GAP)
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


def serve_stand_in(port: int) -> None:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", _json_answer)
    app.router.add_post("/v1/stream", _sse_answer)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


# ---------------------------------------------------------------------------------------- generator


async def _one(session: ClientSession, url: str, stream: bool, out: list[tuple[float, float]]) -> None:
    started = time.perf_counter()
    first = 0.0
    async with session.post(url, data=b'{"model": "m"}', headers={"Content-Type": "application/json"}) as resp:
        async for _ in resp.content.iter_any():
            if not first:
                first = time.perf_counter() - started
        resp.raise_for_status()
    out.append((first if stream else 0.0, time.perf_counter() - started))


async def _load(url: str, rate: float, seconds: float, stream: bool) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    count = int(rate * seconds)
    async with ClientSession(connector=TCPConnector(limit=256), timeout=ClientTimeout(total=30)) as session:
        for _ in range(20):  # warm the pools
            await _one(session, url, stream, [])
        start = time.perf_counter()
        tasks = []
        for index in range(count):
            delay = start + index / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(_one(session, url, stream, out)))
        await asyncio.gather(*tasks)
    return out


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000.0


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_port(port: int, what: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tee_latency", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, nargs="+", default=[100.0, 200.0],
                        help="requests per second, one run each (100 200)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per run (10)")
    parser.add_argument("--shadow-fraction", default="0.1", help="share copied to the stable stand-in (0.1)")
    parser.add_argument("--update-docs", action="store_true",
                        help="replace this benchmark's section of docs/benchmarks.md with this run")
    parser.add_argument("--stand-in", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stand_in:
        serve_stand_in(args.stand_in)
        return 0

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "operator"), str(ROOT)])}
    canary, stable, probe = _free_port(), _free_port(), _free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "bench.tee_latency", "--stand-in", str(port)], env=env)
             for port in (canary, stable)]
    procs.append(subprocess.Popen(
        [sys.executable, "-m", "compat_probe", "--target", f"http://127.0.0.1:{canary}",
         "--shadow-target", f"http://127.0.0.1:{stable}", "--shadow-fraction", args.shadow_fraction,
         "--shadow-protocol", "openai-chat", "--listen", f"127.0.0.1:{probe}", "--log-level", "WARNING"],
        env=env))
    try:
        for port, what in ((canary, "canary stand-in"), (stable, "stable stand-in"), (probe, "probe")):
            _wait_port(port, what)
        rows = []
        for rate, stream, path in [(r, s, p) for r in args.rate
                                   for s, p in ((False, "/v1/chat/completions"), (True, "/v1/stream"))]:
            direct = asyncio.run(_load(f"http://127.0.0.1:{canary}{path}", rate, args.seconds, stream))
            cpu_before = _cpu_seconds(procs[2].pid)
            tee = asyncio.run(_load(f"http://127.0.0.1:{probe}{path}", rate, args.seconds, stream))
            cpu_ms = (_cpu_seconds(procs[2].pid) - cpu_before) * 1000.0 / (len(tee) + 20)  # + the warm-up
            for label, index in (("first event", 0), ("whole answer", 1)) if stream else (("whole answer", 1),):
                d = [sample[index] for sample in direct]
                t = [sample[index] for sample in tee]
                rows.append((f"{rate:g}/s", ("SSE stream, " if stream else "JSON, ") + label, len(t),
                             _pct(d, 0.5), _pct(d, 0.99), _pct(t, 0.5), _pct(t, 0.99),
                             _pct(t, 0.5) - _pct(d, 0.5), _pct(t, 0.99) - _pct(d, 0.99),
                             statistics.mean(t) * 1000 - statistics.mean(d) * 1000, cpu_ms))
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)
    load = os.getloadavg()[0]
    lines = [f"{args.seconds:g} s per run, shadow fraction {args.shadow_fraction}, "
             f"load average {load:.1f} at the end ({os.cpu_count()} CPUs):", "",
             "| rate | answer | requests | direct p50 | direct p99 | via tee p50 | via tee p99 | added p50 "
             "| added p99 | added mean | probe CPU per request |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for rate, name, count, *ms in rows:
        lines.append(f"| {rate} | {name} | {count} | " + " | ".join(f"{value:.2f} ms" for value in ms) + " |")
    table = "\n".join(lines)
    print(table)
    if args.update_docs:
        _update_docs(table)
    return 0


DOC = ROOT / "docs" / "benchmarks.md"
_BEGIN, _END = "<!-- BEGIN bench:tee_latency -->", "<!-- END bench:tee_latency -->"
_INTRO = """## Tee proxy: added latency

The compat-probe in tee mode sits in the path of client requests (docs/compat-probe.md). `bench/tee_latency.py`
runs a model-server stand-in (aiohttp; JSON answers of about 300 bytes, or 8 server-sent events 2 ms apart),
the probe in front of it (copying a fraction of requests to a second stand-in as the stable track) and an
open-loop load generator (a request every 1/rate s over a keep-alive pool, not waiting for answers), once
straight to the stand-in and once through the probe, all on 127.0.0.1. "Added" is the percentile through
the probe minus the same percentile direct; for streams, to the first event and to the end. "Probe CPU per
request" is the probe process's user + system CPU time during the run divided by its requests (shadow
copies included): the inverse of the rate one core can hold, and unlike the tails it barely depends on
what else runs on the machine. The probe is
one Python process (one event loop for the proxy): with the load average above the CPU count (other work on
the machine), its p99 is set by CPU contention, which the direct p99 of the same run shows too: once the
rate times the CPU per request nears the share of a core the probe gets, requests queue in it (at 200
streams/s it needs about 0.2 of a core, about what it gets at load 7-9 on 2 CPUs). Rerun on an idle machine
for the proxy's own tail; in a pod, give the sidecar a CPU request of rate × CPU per request.
"""


def _update_docs(table: str) -> None:
    block = f"{_BEGIN}\n{_INTRO}\n{table}\n{_END}\n"
    text = DOC.read_text()
    start, end = text.find(_BEGIN), text.find(_END)
    if start >= 0 and end > start:
        text = text[:start] + block + text[end + len(_END) + 1:]
    else:
        text = text.replace("## Rerun", block + "\n## Rerun", 1)
    DOC.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
