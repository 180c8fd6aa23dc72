"""A status change that is progress only (message, conditions' text, replicas) within a few seconds of the last
status write is left for the next reconcile, so a transition or evaluation right after writes both at once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from modelrollout.apply import changed_fields
from modelrollout.engine import PROGRESS_WRITE_EVERY, Engine, progress_only
from modelrollout.kube import Kube

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def status(message: str, *, phase: str = "Progressing", ready: str = "False", reason: str = "Progressing",
           replicas: int = 1, step: int = 0, time: str = "t0") -> dict[str, Any]:
    return {"phase": phase, "message": message, "replicas": replicas, "currentStep": step,
            "conditions": [{"type": "Ready", "status": ready, "reason": reason, "message": message,
                            "lastTransitionTime": time, "observedGeneration": 2}]}


def test_only_message_conditions_text_and_replicas_are_progress() -> None:
    old = status("waiting for canary pods, 0/1 ready")
    assert progress_only(changed_fields(status("waiting for canary pods, 1/2 ready", replicas=2), old))
    assert not progress_only(changed_fields(old, old)), "nothing to write is not a deferred write"
    assert not progress_only(changed_fields(status("x", step=1), old)), "a step is a transition"
    assert not progress_only(changed_fields(status("x", phase="Promoting"), old))
    assert not progress_only(changed_fields(status("x", ready="True", time="t1"), old)), "a condition flipped"
    assert not progress_only(changed_fields(status("x", reason="Promoting"), old))
    assert not progress_only(changed_fields({**status("x"), "progressSince": "t"}, old)), \
        "progressSince starts the progress deadline"
    assert not progress_only(changed_fields({**old, "lastAnalysisAt": "t"}, old)), "an evaluation is written"


def test_progress_is_written_at_most_the_interval_after_the_last_write() -> None:
    engine = Engine(Kube(None))
    progress = changed_fields(status("1/2 ready", replicas=2), status("0/1 ready"))
    assert engine._progress_later("ns", "m", progress, T0) is None, "no write remembered: written now"
    engine.status_written[("ns", "m")] = T0
    assert engine._progress_later("ns", "m", progress, T0 + timedelta(seconds=1)) == PROGRESS_WRITE_EVERY - 1
    assert engine._progress_later("ns", "m", progress, T0 + timedelta(seconds=PROGRESS_WRITE_EVERY)) is None
    transition = changed_fields(status("x", step=1), status("0/1 ready"))
    assert engine._progress_later("ns", "m", transition, T0 + timedelta(seconds=1)) is None
    assert engine._progress_later("ns", "other", progress, T0 + timedelta(seconds=1)) is None
