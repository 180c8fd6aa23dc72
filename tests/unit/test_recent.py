"""watchcache.Recent: facts (and answers, also None) remembered for a while, on a clock the test controls."""

from __future__ import annotations

from modelrollout.watchcache import PRUNE_EVERY, Recent


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_a_noted_answer_is_given_back_until_its_ttl_ends() -> None:
    clock = Clock()
    recent = Recent(clock)
    recent.note("k", 10.0, "ImagePullBackOff on pod p")
    clock.t += 9.9
    assert recent.holds("k") and recent.get("k") == "ImagePullBackOff on pod p"
    clock.t += 0.2
    assert not recent.holds("k") and recent.get("k", "gone") == "gone"


def test_a_noted_none_is_held_apart_from_nothing_noted() -> None:
    recent = Recent(Clock())
    recent.note("no reason", 10.0, None)
    assert recent.holds("no reason") and recent.get("no reason", "default") is None
    assert not recent.holds("never noted")


def test_forget_and_pruning_drop_keys() -> None:
    clock = Clock()
    recent = Recent(clock)
    recent.note("a", 1.0)
    recent.note("b", 1000.0)
    recent.forget("b")
    assert not recent.holds("b")
    clock.t += PRUNE_EVERY + 1
    recent.note("c", 1.0)  # prunes the expired "a"
    assert len(recent._until) == 1
