"""A TCP relay: accepts on one address and copies bytes both ways to another (no TLS termination).

The real node (devenv.localenv.node, ``up(..., apiserver_for_pods=True)``) runs one on the bridge address so
that pods reach the local apiserver, which listens on 127.0.0.1 only: the ``kubernetes`` Service's
EndpointSlice names the bridge address (Kubernetes refuses loopback endpoints), kube-proxy sends pods there,
and the relay passes the TLS stream through to the apiserver, whose certificate names the Service IP.

    python -m devenv.localenv.tcprelay --listen 172.30.254.1:6443 --to 127.0.0.1:6443 [--tag NAME]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

CHUNK = 1 << 16


def _addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        if writer.can_write_eof():
            try:
                writer.write_eof()
            except (ConnectionError, OSError):
                writer.close()


async def serve(listen: tuple[str, int], to: tuple[str, int]) -> None:
    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.wait_for(asyncio.open_connection(*to), 10)
        except (OSError, TimeoutError):
            client_w.close()
            return
        try:
            await asyncio.gather(_pipe(client_r, up_w), _pipe(up_r, client_w))
        finally:
            for w in (client_w, up_w):
                w.close()

    server = await asyncio.start_server(handle, *listen, reuse_address=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"relaying {listen[0]}:{listen[1]} -> {to[0]}:{to[1]}", flush=True)
    async with server:
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devenv.localenv.tcprelay", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--listen", type=_addr, required=True, help="HOST:PORT to accept on")
    parser.add_argument("--to", type=_addr, required=True, help="HOST:PORT to connect to")
    parser.add_argument("--tag", default="", help="a name shown in the command line (found by process scans)")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.listen, args.to))
    return 0


if __name__ == "__main__":
    sys.exit(main())
