"""The dashboard's store: what it records of each rollout while it runs, and what it tells the open pages."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from modelrollout.dashboard.server import QUEUE_LIMIT, Store

from .test_dashboard_view import WAITING
from .test_plugin_render import mro

T0 = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)


def with_status(**status: Any) -> dict[str, Any]:
    return mro({**WAITING, **status})


def test_weights_and_evaluations_are_recorded_as_they_change_and_forgotten_with_the_rollout() -> None:
    async def main() -> None:
        store = Store()
        queue = store.subscribe()
        store.apply("ADDED", with_status(currentWeight=25), T0)
        store.apply("MODIFIED", with_status(currentWeight=25), T0 + timedelta(seconds=1))
        later = [{"name": "error-rate", "value": 0.03, "verdict": "Fail", "at": "2026-01-01T10:01:00Z"}]
        store.apply("MODIFIED", with_status(currentWeight=50, analysis=later), T0 + timedelta(seconds=2))
        key = ("ml", "chat")
        assert store.weights[key] == [(T0, 25), (T0 + timedelta(seconds=2), 50)]
        assert sorted(store.evaluations[key]["error-rate"]) == ["2026-01-01T10:00:50Z", "2026-01-01T10:01:00Z"]
        events = [queue.get_nowait() for _ in range(queue.qsize())]
        assert [(e["type"], e["summary"]["weight"]) for e in events] == [("MODIFIED", 25)] * 2 + [("MODIFIED", 50)]
        store.apply("DELETED", with_status())
        assert key not in store.objects and key not in store.weights and key not in store.evaluations
        assert queue.get_nowait() == {"type": "DELETED", "key": "ml/chat"}

    asyncio.run(main())


def test_a_page_that_falls_behind_gets_the_overview_again_not_an_endless_queue() -> None:
    async def main() -> None:
        store = Store()
        queue = store.subscribe()
        for weight in range(QUEUE_LIMIT + 5):
            store.apply("MODIFIED", with_status(currentWeight=weight % 100), T0)
        assert queue.qsize() == 5
        assert queue.get_nowait() == {"type": "RESYNC"}

    asyncio.run(main())
