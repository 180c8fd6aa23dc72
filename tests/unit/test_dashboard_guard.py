"""The dashboard server's guard, on a real aiohttp server on 127.0.0.1 (no apiserver needed for these paths):
the Host check against DNS rebinding, the key of the printed URL (a cookie), the page's token and the Origin
check on every POST, the headers."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer

from modelrollout.dashboard.server import TOKEN_HEADER, Dashboard, bind


class NoCluster:
    """Stands in for CustomObjectsApi: these requests must be refused before any cluster call."""

    api_client = None

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the guard let a request reach the cluster ({name})")


def run(check: Any) -> None:
    async def main() -> None:
        dash = Dashboard(NoCluster(), "ml", "ml")
        dash.core = NoCluster()
        dash.token = "t0k3n"
        sock = bind(0)
        dash.port = int(sock.getsockname()[1])
        sock.close()
        server = TestServer(dash.app(), host="127.0.0.1", port=dash.port)
        await server.start_server()
        try:
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
                base = f"http://127.0.0.1:{dash.port}"
                async with session.get(base + "/") as resp:
                    assert resp.status == 401, "no page without the key of the printed URL"
                async with session.get(base + "/?key=wrong") as resp:
                    assert resp.status == 401
                async with session.get(dash.url()) as resp:
                    assert resp.status == 200 and str(resp.url) == base + "/"
                    cookie = resp.history[0].cookies[dash.cookie]
                    assert cookie["httponly"] and cookie["samesite"] == "Strict"
                await check(session, base, dash)
        finally:
            await server.close()

    asyncio.run(main())


def test_requests_for_another_host_are_refused() -> None:
    async def check(session: aiohttp.ClientSession, base: str, dash: Dashboard) -> None:
        async with session.get(base + "/", headers={"Host": f"rebound.example:{dash.port}"}) as resp:
            assert resp.status == 421
        async with session.get(base + "/", headers={"Host": f"localhost:{dash.port}"}) as resp:
            assert resp.status == 200 and 'content="t0k3n"' in await resp.text()
            csp = resp.headers["Content-Security-Policy"]
            assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
            assert resp.headers["X-Frame-Options"] == "DENY"
        async with session.get(base + "/static/app.js") as resp:
            assert resp.status == 200 and "X-ModelRollout-Token" in await resp.text()
        async with session.get(base + "/static/../server.py") as resp:
            assert resp.status == 404

    run(check)


def test_a_post_needs_the_token_and_a_same_origin() -> None:
    async def check(session: aiohttp.ClientSession, base: str, dash: Dashboard) -> None:
        url = base + "/api/rollouts/ml/chat/abort"
        async with session.post(url, json={}) as resp:
            assert resp.status == 403 and TOKEN_HEADER in (await resp.json())["error"]
        async with session.post(url, json={}, headers={TOKEN_HEADER: "wrong"}) as resp:
            assert resp.status == 403
        async with session.post(url, json={}, headers={TOKEN_HEADER: "t0k3n", "Origin": "http://evil.example"}) as resp:
            assert resp.status == 403 and "cross-origin" in (await resp.json())["error"]
        async with session.post(url, json={}, headers={TOKEN_HEADER: "t0k3n", "Sec-Fetch-Site": "cross-site"}) as resp:
            assert resp.status == 403
        async with session.post(base + "/api/rollouts/ml/chat/delete", json={},
                                headers={TOKEN_HEADER: "t0k3n", "Origin": base}) as resp:
            assert resp.status == 404, "past the guard, only the plugin's actions exist"

    run(check)
