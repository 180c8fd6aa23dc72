from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelrollout import api
from modelrollout.api import Phase
from modelrollout.core.approval import APPROVE, PROMOTE, build_token, check_token, parse_token
from modelrollout.core.plan import gate_reason
from modelrollout.core.preflight import (
    dependency_changes,
    final_name,
    major,
    migrate,
    preflight,
    removed_keys,
    snapshot,
)
from modelrollout.core.steps import first_traffic_step
from modelrollout.core.validate import parse_spec, validate

from .sim import released, spec_dict


def test_token_build_parse_check() -> None:
    tok = build_token("7f2a1b0c9d", 3)
    assert tok == "7f2a1b0c9d-3"
    parsed = parse_token(tok)
    assert parsed is not None and parsed.revision == "7f2a1b0c9d" and parsed.step == 3
    for bad in ("", "true", "7f2a1b", "7f2a1b-", "-3", "XYZXYZ-1", "7f2a1b-3-4", "7f2a1b-99999"):
        assert parse_token(bad) is None, bad
    gates = {3, 5}
    assert check_token(tok, revision="7f2a1b0c9d", step=3, total=7, gates=gates).opens
    stale = check_token("0123456789-3", revision="7f2a1b0c9d", step=3, total=7, gates=gates)
    assert not stale.opens and not stale.pending and "revision 0123456789" in stale.reason
    early = check_token("7f2a1b0c9d-5", revision="7f2a1b0c9d", step=3, total=7, gates=gates)
    assert not early.opens and early.pending and "step 6/7" in early.reason
    late = check_token("7f2a1b0c9d-1", revision="7f2a1b0c9d", step=3, total=7, gates=gates)
    assert not late.opens and not late.pending and "already passed" in late.reason
    assert "malformed" in check_token("yes please", revision="7f2a1b0c9d", step=3, total=7).reason


@pytest.mark.parametrize(("value", "words"), [
    ("7f2a1b0c9d-7", "no such step"),        # one beyond the last step
    ("7f2a1b0c9d-42", "no such step"),       # far beyond
    ("7f2a1b0c9d-4", "not a gate"),          # a later step that is no gate
    ("7f2a1b0c9d-6", "not a gate"),          # the last step, no gate
])
def test_tokens_no_gate_will_ever_be_at_are_refused(value: str, words: str) -> None:
    for step in (3, None):
        check = check_token(value, revision="7f2a1b0c9d", step=step, total=7, gates={3, 5})
        assert not check.opens and not check.pending and words in check.reason, check


def test_promote_tokens_are_never_kept_for_later() -> None:
    check = check_token("7f2a1b0c9d-5", revision="7f2a1b0c9d", step=3, total=7, gates={3, 5}, what="promote")
    assert not check.opens and not check.pending and "not the current step" in check.reason
    assert check_token("7f2a1b0c9d-7", revision="7f2a1b0c9d", step=7, total=7, what="promote").opens  # all done
    far = check_token("7f2a1b0c9d-8", revision="7f2a1b0c9d", step=7, total=7, what="promote")
    assert not far.opens and "no such step" in far.reason


def warnings(w: Any, reason: str) -> list[str]:
    return [e.message for d in w.decisions for e in d.events if e.reason == reason and e.type == "Warning"]


STEPS = [{"setWeight": 10}, {"pause": {}}, {"setWeight": 30}, {"approval": {"reason": "look"}},
         {"setWeight": 100}]


@pytest.mark.parametrize("index", [2, 5, 9])  # a step that is no gate, one beyond the last, far beyond
def test_an_approve_token_no_gate_will_be_at_is_removed_with_the_current_token(index: int) -> None:
    w = released(STEPS)
    w.set_image("model:2")
    w.run(until=lambda w: w.status.phase is Phase.AWAITING_APPROVAL)
    assert w.status.approval is not None
    current, weights = w.status.approval.token, list(w.weights)
    w.annotations[APPROVE] = f"{w.revision}-{index}"
    w.step()
    assert APPROVE not in w.annotations
    assert any(current in m for m in warnings(w, "ApprovalRejected")), warnings(w, "ApprovalRejected")
    assert w.status.phase is Phase.AWAITING_APPROVAL and w.status.current_step == 1 and w.weights == weights


@pytest.mark.parametrize("index", [2, 5])
def test_an_approve_token_is_refused_while_no_gate_waits_too(index: int) -> None:
    w = released(STEPS)
    w.set_image("model:2")
    w.canary_ready = False  # the first step waits for canary pods: no gate is waiting
    w.run(until=lambda w: w.status.phase is Phase.PROGRESSING and w.status.current_step == 0 and w.canary is not None
          and w.canary.replicas > 0)
    w.annotations[APPROVE] = f"{w.revision}-{index}"
    w.step()
    assert APPROVE not in w.annotations
    assert any(f"{w.revision}-0" in m for m in warnings(w, "ApprovalRejected"))


def test_a_token_for_the_current_step_that_is_no_gate_is_refused() -> None:
    w = released(STEPS)
    w.set_image("model:2")
    w.canary_ready = False
    w.run(until=lambda w: w.canary is not None and w.canary.replicas > 0)
    w.annotations[APPROVE] = f"{w.revision}-0"
    w.step()
    assert APPROVE not in w.annotations and any("not a gate" in m for m in warnings(w, "ApprovalRejected"))


def test_pre_approval_of_later_gates_still_works_for_spec_risky_and_preflight_gates() -> None:
    w = released([{"setWeight": 10}, {"approval": {"reason": "look"}}, {"setWeight": 60}, {"setWeight": 100}],
                 model={"dependencies": {"torch": "2.5.1"}})
    w.raw["strategy"]["canary"]["riskyAbove"] = 70
    w.raw["model"] = {"dependencies": {"torch": "3.0.0"}}  # preflight gate at the first traffic step (0)
    w.annotations[APPROVE] = f"{w.revision}-0"  # approved with the change: the rollout's first reconcile reaches it
    w.run(until=lambda w: w.status.canary_revision == w.revision)
    for index in (1, 3):  # the approval step, setWeight 100 above riskyAbove 70
        w.annotations[APPROVE] = f"{w.revision}-{index}"
        w.run(until=lambda w, index=index: w.status.approved_step == index or w.status.current_step > index)
    w.run(until=lambda w: w.status.phase is Phase.SUCCEEDED)
    assert [h.step for h in w.status.history if h.outcome == "Approved"] == [0, 1, 3]
    assert warnings(w, "ApprovalRejected") == []
    assert all(d.status.phase is not Phase.AWAITING_APPROVAL for d in w.decisions)


@pytest.mark.parametrize("index", [3, 5, 9])  # a later step, one beyond the last, far beyond
def test_a_promote_token_other_than_the_current_is_removed_naming_it(index: int) -> None:
    w = released(STEPS)
    w.set_image("model:2")
    w.run(until=lambda w: w.status.phase is Phase.AWAITING_APPROVAL)
    w.annotations[PROMOTE] = f"{w.revision}-{index}"
    w.step()
    assert PROMOTE not in w.annotations and w.status.phase is Phase.AWAITING_APPROVAL
    assert any(f"{w.revision}-1" in m for m in warnings(w, "PromoteRejected"))
    assert all("kept" not in m for m in warnings(w, "PromoteRejected"))


def spec(**canary: Any) -> api.ModelRolloutSpec:
    raw = spec_dict([{"setWeight": 10}, {"pause": {}}, {"approval": {"reason": "look"}}, {"setWeight": 60}])
    raw["strategy"]["canary"].update(canary)
    return api.ModelRolloutSpec.model_validate(raw)


def test_gate_rules() -> None:
    s = spec(riskyAbove=50)
    assert gate_reason(s, 0) is None
    assert gate_reason(s, 1) == "indefinite pause"
    assert gate_reason(s, 2) == "look"
    assert gate_reason(s, 3) == "setWeight 60 is above riskyAbove 50"
    assert gate_reason(spec(), 3) is None
    assert gate_reason(s, 0, ["torch 2.5 -> 3.0 is a major-version change"]) is not None
    assert gate_reason(s, 3, ["x"]) == "setWeight 60 is above riskyAbove 50"


@pytest.mark.parametrize(("v", "m"), [("2.5.1", 2), ("v3", 3), ("10.0", 10), ("latest", None)])
def test_major(v: str, m: int | None) -> None:
    assert major(v) == m


def test_dependency_changes_and_jumps() -> None:
    changes, jumps = dependency_changes({"torch": "2.5.1", "transformers": "4.46.0", "numpy": "1.26"},
                                        {"torch": "3.0.0", "transformers": "4.47.0", "accelerate": "1.0"})
    assert jumps == ["torch 2.5.1 -> 3.0.0 is a major-version change"]
    assert "transformers 4.46.0 -> 4.47.0" in changes and "numpy 1.26 removed" in changes
    assert "accelerate added at 1.0" in changes


def test_config_migration_and_removed_keys() -> None:
    rules = [api.ConfigMigration.model_validate({"from": "max_seq_len", "to": "max_length"})]
    assert migrate({"max_seq_len": 4096, "amp": True}, rules) == {"max_length": 4096, "amp": True}
    assert removed_keys({"max_seq_len": 1, "use_fp16": True}, {"max_length": 1}, rules) == ["use_fp16"]
    old = api.ModelSnapshot(config={"max_seq_len": 4096, "use_fp16": True}, dependencies={"torch": "2.5.1"})
    new = api.ModelInfo.model_validate({"config": {"max_length": 4096},
                                        "configMigrations": [{"from": "max_seq_len", "to": "max_length"}],
                                        "dependencies": {"torch": "3.0.0"}})
    check = preflight(old, new)
    assert check.removed_config_keys == ["use_fp16"]
    assert check.renamed_config_keys == ["max_seq_len -> max_length"]
    assert check.reasons == ["torch 2.5.1 -> 3.0.0 is a major-version change",
                             "config key use_fp16 removed without a migration rule"]


def rules(*pairs: str) -> list[api.ConfigMigration]:
    return [api.ConfigMigration.model_validate({"from": a, "to": b}) for a, b in (p.split(">") for p in pairs)]


def model(config: dict[str, Any], *pairs: str) -> api.ModelInfo:
    return api.ModelInfo.model_validate({"config": config,
                                         "configMigrations": [{"from": a, "to": b} for a, b in
                                                              (p.split(">") for p in pairs)]})


@pytest.mark.parametrize("stable_config", [{"max_length": 4096, "amp": True},          # kept rendered
                                           {"max_seq_len": 4096, "use_fp16": True}])  # kept raw by an older operator
def test_old_key_names_with_rules_on_the_new_side_remove_nothing(stable_config: dict[str, Any]) -> None:
    new = model({"max_seq_len": 4096, "use_fp16": True}, "max_seq_len>max_length", "use_fp16>amp")
    check = preflight(api.ModelSnapshot(config=stable_config), new)
    assert check.removed_config_keys == [] and check.added_config_keys == [] and check.reasons == []


def test_old_key_names_on_the_stable_side_are_renamed_not_removed() -> None:
    stable = api.ModelSnapshot(config={"max_seq_len": 4096, "use_fp16": True})
    check = preflight(stable, model({"max_length": 4096, "amp": True}, "max_seq_len>max_length", "use_fp16>amp"))
    assert check.removed_config_keys == [] and check.reasons == []
    assert check.renamed_config_keys == ["max_seq_len -> max_length", "use_fp16 -> amp"]


def test_stable_snapshot_keeps_the_rendered_config() -> None:
    snap = snapshot(model({"max_seq_len": 1, "amp": True}, "max_seq_len>max_length"))
    assert snap.config == {"max_length": 1, "amp": True}
    # the next revision drops amp: that is a removal of a rendered key, whatever names the rules used
    check = preflight(snap, model({"max_length": 1}, "max_seq_len>max_length"))
    assert check.removed_config_keys == ["amp"] and "config key amp removed" in check.reasons[0]


def test_both_names_present_the_new_one_wins_and_nothing_is_removed() -> None:
    rules_ = rules("max_seq_len>max_length")
    assert migrate({"max_seq_len": 1, "max_length": 2}, rules_) == {"max_length": 2}
    assert migrate({"max_length": 2, "max_seq_len": 1}, rules_) == {"max_length": 2}
    check = preflight(api.ModelSnapshot(config={"max_length": 1}),
                      model({"max_seq_len": 1, "max_length": 2}, "max_seq_len>max_length"))
    assert check.removed_config_keys == [] and check.added_config_keys == []


@pytest.mark.parametrize("order", [("a>b", "b>c"), ("b>c", "a>b")])
def test_rename_chains_end_at_the_last_name_whatever_the_order(order: tuple[str, str]) -> None:
    assert migrate({"a": 1}, rules(*order)) == {"c": 1}
    assert migrate({"a": 1, "b": 2}, rules(*order)) == {"c": 2}  # nearer the end of the chain wins
    assert migrate({"a": 1, "c": 3}, rules(*order)) == {"c": 3}
    check = preflight(api.ModelSnapshot(config={"a": 1, "x": 0}), model({"c": 1, "x": 0}, *order))
    assert check.removed_config_keys == [] and check.renamed_config_keys == ["a -> c"]
    # a chain that stops short of where the new config keeps the key: removed (b) and added (c)
    check = preflight(api.ModelSnapshot(config={"a": 1}), model({"c": 1}, "a>b"))
    assert check.removed_config_keys == ["b"] and check.added_config_keys == ["c"]


def test_a_rule_cycle_stops_before_it_repeats() -> None:
    assert migrate({"a": 1}, rules("a>b", "b>a")) == {"b": 1}


def test_nested_config_is_compared_key_by_key() -> None:
    stable = api.ModelSnapshot(config={"generation": {"top_k": 5, "top_p": 0.9}, "amp": True})
    check = preflight(stable, model({"generation": {"top_k": 5, "temperature": 0.7}, "amp": True}))
    assert check.removed_config_keys == ["generation.top_p"]
    assert check.added_config_keys == ["generation.temperature"]
    assert check.reasons == ["config key generation.top_p removed without a migration rule"]
    # a renamed top-level key carries its nested mapping along
    moved = preflight(stable, model({"sampling": {"top_k": 5, "top_p": 0.9}, "amp": True}, "generation>sampling"))
    assert moved.removed_config_keys == [] and moved.renamed_config_keys == ["generation -> sampling"]


def test_added_keys_alone_do_not_gate() -> None:
    check = preflight(api.ModelSnapshot(config={"amp": True}), model({"amp": True, "max_batch": 8}))
    assert check.added_config_keys == ["max_batch"] and check.reasons == []


def test_torch_major_jump_gates_the_first_traffic_step() -> None:
    w = released([{"setWeight": 20}, {"setWeight": 100}], model={"dependencies": {"torch": "2.5.1"}})
    w.raw["model"] = {"dependencies": {"torch": "3.0.0"}}
    w.run(until=lambda w: w.status.phase is Phase.AWAITING_APPROVAL)
    assert w.weights == []
    assert w.status.approval is not None and "torch 2.5.1 -> 3.0.0" in w.status.approval.reason
    assert w.status.preflight is not None and w.status.preflight.dependency_jumps
    w.annotations[APPROVE] = w.status.approval.token
    w.run(until=lambda w: w.status.phase is Phase.SUCCEEDED)
    assert w.weights == [20, 100]
    assert w.status.stable_model is not None and w.status.stable_model.dependencies == {"torch": "3.0.0"}


def test_minor_upgrade_with_migrated_key_does_not_gate() -> None:
    w = released([{"setWeight": 20}, {"setWeight": 100}],
                 model={"config": {"max_seq_len": 10}, "dependencies": {"torch": "2.5.1"}})
    w.raw["model"] = {"config": {"max_length": 10}, "dependencies": {"torch": "2.6.0"},
                      "configMigrations": [{"from": "max_seq_len", "to": "max_length"}]}
    w.run(until=lambda w: w.status.phase is Phase.SUCCEEDED)
    assert w.weights == [20, 100]


def test_old_key_names_with_rules_do_not_gate_the_rollout() -> None:
    w = released([{"setWeight": 20}, {"setWeight": 100}], model={"config": {"max_length": 10, "amp": True}})
    w.raw["model"] = {"config": {"max_seq_len": 10, "use_fp16": True},
                      "configMigrations": [{"from": "max_seq_len", "to": "max_length"},
                                           {"from": "use_fp16", "to": "amp"}]}
    w.run(until=lambda w: w.status.phase is Phase.SUCCEEDED)
    assert w.weights == [20, 100]
    assert all(h.outcome != "Approved" for h in w.status.history)
    assert w.status.stable_model is not None and w.status.stable_model.config == {"max_length": 10, "amp": True}


@pytest.mark.parametrize(("rules_", "words"), [
    ([("a", "b"), ("b", "a")], "the rules a -> b -> a form a cycle"),
    ([("a", "b"), ("b", "c"), ("c", "a")], "a -> b -> c -> a form a cycle"),
    ([("a", "a")], "a -> a form a cycle"),
    ([("a", "b"), ("a", "c")], "spec.model.configMigrations[1]: a second rule for 'a'"),
])
def test_ambiguous_migration_rules_are_invalid(rules_: list[tuple[str, str]], words: str) -> None:
    raw = spec_dict([{"setWeight": 100}], model={"configMigrations": [{"from": a, "to": b} for a, b in rules_]})
    assert words in (parse_spec(raw)[1] or "")


def test_chained_migration_rules_are_valid() -> None:
    raw = spec_dict([{"setWeight": 100}], model={"configMigrations": [{"from": "b", "to": "c"},
                                                                      {"from": "a", "to": "b"}]})
    assert parse_spec(raw)[1] is None


KEYS = st.sampled_from(["a", "b", "c", "d"])


@given(config=st.dictionaries(KEYS, st.integers(0, 9)), pairs=st.dictionaries(KEYS, KEYS))
def test_rendering_is_idempotent_and_loses_no_key(config: dict[str, int], pairs: dict[str, str]) -> None:
    rules_ = [api.ConfigMigration.model_validate({"from": a, "to": b}) for a, b in pairs.items()]
    out = migrate(config, rules_)
    assert migrate(out, rules_) == out or any(a == b for a, b in pairs.items()) or _cyclic(pairs)
    finals = {final_name(key, rules_) for key in config}
    assert set(out) == finals  # every key ends up under its final name, and nothing else appears
    assert preflight(api.ModelSnapshot(config=config), model(config, *(f"{a}>{b}" for a, b in pairs.items()))
                     ).removed_config_keys == []  # the same config on both sides removes nothing


def _cyclic(pairs: dict[str, str]) -> bool:
    for start in pairs:
        seen, key = {start}, start
        while key in pairs:
            key = pairs[key]
            if key in seen:
                return True
            seen.add(key)
    return False


@pytest.mark.parametrize(("steps", "traffic", "first"), [
    ([{"setWeight": 20}, {"setWeight": 100}], {}, 0),
    ([{"pause": {"duration": "1m"}}, {"setWeight": 20}, {"setWeight": 100}], {}, 1),
    # a header pin by default reaches the new revision at its first route step, weight 0 or not
    ([{"setWeight": 0}, {"setWeight": 20}, {"setWeight": 100}], {"headerRoute": {"name": "x-canary", "value": "1"}}, 0),
    ([{"setHeaderRoute": {"name": "x-canary", "value": "1"}}, {"setWeight": 20}, {"setWeight": 100}], {}, 0),
    ([{"setWeight": 0}, {"setMirror": {"percent": 10}}, {"setWeight": 100}], {}, 1),
])
def test_preflight_gates_the_first_step_that_sends_traffic(steps: list[dict[str, Any]], traffic: dict[str, Any],
                                                           first: int) -> None:
    """Preflight findings hold whichever step first lets requests reach the new revision (a weight, a header pin
    or a mirror), and no request reaches it before the approval."""
    w = released(steps, model={"dependencies": {"torch": "2.5.1"}})
    w.raw["traffic"].update(traffic)
    assert first_traffic_step(w.spec) == first
    before = len(w.routes)
    w.raw["model"] = {"dependencies": {"torch": "3.0.0"}}
    w.run(until=lambda w: w.status.phase is Phase.AWAITING_APPROVAL)
    assert w.status.current_step == first
    assert all(weight == 0 and not features.any for weight, features in w.routes[before:])
    assert w.status.approval is not None and "torch 2.5.1 -> 3.0.0" in w.status.approval.reason


def test_no_step_sending_traffic_is_found_alike_by_validation() -> None:
    """The one definition serves validation: analysis without any step that sends traffic is refused."""
    raw = spec_dict([{"setWeight": 0}, {"pause": {"duration": "1m"}}],
                    analysis={"prometheus": {"address": "http://127.0.0.1:9"},
                              "metrics": [{"name": "e", "query": "up", "max": 1}]})
    spec = api.ModelRolloutSpec.model_validate(raw)
    assert first_traffic_step(spec) is None
    assert "no step sends traffic" in (validate(spec) or "")
