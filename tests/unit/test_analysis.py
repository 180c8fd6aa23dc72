from __future__ import annotations

import math
from datetime import timedelta

import pytest

from modelrollout import api
from modelrollout.api import Phase, Verdict
from modelrollout.core.actions import SetWeight
from modelrollout.core.analysis import Sample, assess, judge
from modelrollout.core.approval import APPROVE, PROMOTE

from .sim import T0, released


def metric(**kw: object) -> api.Metric:
    return api.Metric.model_validate({"name": "m", "query": "q", **kw})


@pytest.mark.parametrize(
    ("bounds", "value", "verdict"),
    [
        ({"min": 0.9}, 0.95, Verdict.PASS),
        ({"min": 0.9}, 0.9, Verdict.PASS),
        ({"min": 0.9}, 0.5, Verdict.FAIL),
        ({"max": 50}, 51, Verdict.FAIL),
        ({"max": 50}, 50, Verdict.PASS),
        ({"min": 1, "max": 2}, 1.5, Verdict.PASS),
        ({"min": 1, "max": 2}, 0.5, Verdict.FAIL),
        ({"min": 1, "max": 2}, 2.5, Verdict.FAIL),
        ({"min": 0.9}, math.nan, Verdict.INCONCLUSIVE),
        ({"min": 0.9}, None, Verdict.INCONCLUSIVE),
    ],
)
def test_judge_table(bounds: dict[str, float], value: float | None, verdict: Verdict) -> None:
    got, message, shown = judge(metric(**bounds), Sample(value, "q"))
    assert got is verdict
    assert "m" in message
    assert shown == (value if verdict is not Verdict.INCONCLUSIVE else None)


def analysis(*metrics: dict[str, object], limit: int = 3, action: str = "pause") -> api.Analysis:
    return api.Analysis.model_validate(
        {
            "interval": "10s",
            "prometheus": {"address": "http://p:9090"},
            "inconclusive": {"limit": limit, "action": action},
            "metrics": list(metrics),
        }
    )


def test_failure_limit_counts_consecutive_failures() -> None:
    a = analysis({"name": "m", "query": "q", "min": 1, "failureLimit": 2})
    prev: tuple[api.MetricStatus, ...] = ()
    breaches = []
    for i, value in enumerate((0, 0, 1, 0, 0, 0)):
        r = assess(a, {"m": Sample(value, "q")}, prev, T0 + timedelta(seconds=i))
        prev = r.metrics
        breaches.append(r.breach is not None)
    assert breaches == [False, False, False, False, False, True]


def test_empty_result_is_inconclusive_never_failure() -> None:
    a = analysis({"name": "m", "query": "q", "min": 1})
    r = assess(a, {"m": Sample(None, "q", "empty result")}, (), T0)
    assert r.inconclusive and r.breach is None and not r.all_pass
    assert r.metrics[0].failures == 0


def test_alert_only_warns_once_per_streak_and_does_not_gate() -> None:
    a = analysis({"name": "a", "query": "q", "min": 1, "onFailure": "alert"}, {"name": "b", "query": "q", "min": 0})
    r1 = assess(a, {"a": Sample(0, "q"), "b": Sample(1, "q")}, (), T0)
    r2 = assess(a, {"a": Sample(0, "q"), "b": Sample(1, "q")}, r1.metrics, T0 + timedelta(seconds=1))
    assert len(r1.alerts) == 1 and r2.alerts == () and r1.breach is None and r1.all_pass


def test_rollback_takes_precedence_over_pause() -> None:
    a = analysis({"name": "p", "query": "q", "min": 1, "onFailure": "pause"}, {"name": "r", "query": "q", "min": 1})
    r = assess(a, {"p": Sample(0, "q"), "r": Sample(0, "q")}, (), T0)
    assert r.breach is not None and r.breach.action == "rollback" and r.breach.metric == "r"


ANALYSIS = {
    "interval": "10s",
    "prometheus": {"address": "http://p:9090"},
    "metrics": [{"name": "compat", "query": "q", "min": 0.99}],
}
STEPS = [{"setWeight": 20}, {"analysis": {"passes": 2}}, {"setWeight": 60}, {"setWeight": 100}]


def test_healthy_canary_promotes_after_passing_analysis() -> None:
    w = released(STEPS, analysis=ANALYSIS)
    w.metric_values["compat"] = 1.0
    w.set_image("img:2")
    w.run(until=lambda w: w.status.phase is Phase.SUCCEEDED)
    assert w.weights == [20, 60, 100]
    assert any(h.outcome == "AnalysisPassed" for h in w.status.history)


def test_breach_rolls_back_naming_metric_value_threshold_and_query() -> None:
    # an ingress router: the replica-ratio router first scales stable back to full size (tests/unit/test_scale.py)
    w = released(STEPS, analysis=ANALYSIS, traffic={"service": {"name": "m"}, "ingress": {"name": "m"}})
    w.metric_values["compat"] = 1.0
    w.set_image("img:2")
    w.run(until=lambda w: w.status.current_weight == 20)
    w.metric_values["compat"] = 0.5
    w.run(until=lambda w: w.status.phase in (Phase.ROLLING_BACK, Phase.ROLLED_BACK))
    assert w.router is None and w.weights == [20, 0]
    msg = w.status.message
    assert "compat" in msg and "0.5" in msg and "0.99" in msg and "query: q" in msg


def test_no_data_pauses_and_resumes_when_data_returns_never_promotes() -> None:
    w = released(STEPS, analysis={**ANALYSIS, "inconclusive": {"limit": 2, "action": "pause"}})
    w.metric_values["compat"] = 1.0
    w.set_image("img:2")
    w.run(until=lambda w: w.status.current_weight == 20)
    w.metric_values["compat"] = None
    w.run(until=lambda w: w.status.phase is Phase.PAUSED and "inconclusive" in w.status.message)
    for _ in range(10):
        w.step()
        w.now += timedelta(seconds=10)
    assert w.status.phase is Phase.PAUSED and w.weights == [20]
    w.metric_values["compat"] = 1.0
    w.run(until=lambda w: w.status.phase is Phase.SUCCEEDED)
    assert w.weights == [20, 60, 100]


def test_on_failure_pause_waits_for_approval_to_resume() -> None:
    w = released(
        STEPS, analysis={**ANALYSIS, "metrics": [{"name": "compat", "query": "q", "min": 0.99, "onFailure": "pause"}]}
    )
    w.metric_values["compat"] = 0.5
    w.set_image("img:2")
    w.run(until=lambda w: w.status.phase is Phase.PAUSED and w.status.approval is not None)
    assert w.weights == [20] and w.status.approval is not None and w.status.approval.action == "resume"
    w.metric_values["compat"] = 1.0
    w.annotations[APPROVE] = w.status.approval.token
    w.run(until=lambda w: w.status.phase is Phase.SUCCEEDED)


def test_manual_rollback_policy_waits_for_approval_to_roll_back() -> None:
    w = released(STEPS, analysis=ANALYSIS, rollback={"automatic": False, "scaleDownDelay": "0s"})
    w.metric_values["compat"] = 0.5
    w.set_image("img:2")
    w.run(until=lambda w: w.status.phase is Phase.AWAITING_APPROVAL)
    assert w.status.approval is not None and w.status.approval.action == "rollback" and w.router == 20
    w.annotations[APPROVE] = w.status.approval.token
    w.run(until=lambda w: w.status.phase is Phase.ROLLED_BACK)
    assert w.router is None


def test_the_reconcile_that_completes_an_analysis_step_also_carries_out_the_next_weight() -> None:
    # one round trip less per step: the decision recording the last pass moves the weight too (it was due anyway)
    w = released(STEPS, analysis=ANALYSIS, replicas=1, traffic={"service": {"name": "m"}, "ingress": {"name": "m"}})
    w.metric_values["compat"] = 1.0
    w.set_image("img:2")
    w.run(until=lambda w: any(h.outcome == "AnalysisPassed" for h in w.status.history))
    last = w.decisions[-1]
    assert [a.weight for a in last.actions if isinstance(a, SetWeight)] == [60]
    assert [e.reason for e in last.events if e.reason == "SetWeight"] == ["SetWeight"]
    assert w.status.current_step == 3 and w.status.current_weight == 60 and w.weights == [20, 60]


def test_a_failing_last_evaluation_completes_no_step_and_moves_no_weight() -> None:
    w = released(STEPS, analysis=ANALYSIS, replicas=1, traffic={"service": {"name": "m"}, "ingress": {"name": "m"}})
    w.metric_values["compat"] = 1.0
    w.set_image("img:2")
    w.run(until=lambda w: w.status.current_step == 1 and w.status.analysis_passes == 1)
    w.metric_values["compat"] = 0.5
    w.run(until=lambda w: w.status.phase in (Phase.ROLLING_BACK, Phase.ROLLED_BACK))
    assert w.weights == [20, 0] and not any(h.outcome == "AnalysisPassed" for h in w.status.history)


def test_a_repeated_sample_counts_neither_as_pass_nor_as_failure() -> None:
    w = released(STEPS, analysis=ANALYSIS)
    w.metric_values["compat"] = 1.0
    w.set_image("img:2")
    w.run(until=lambda w: w.status.current_weight == 20)
    w.metric_times["compat"] = w.now + timedelta(seconds=1)  # one scrape after traffic started, then no more
    w.now += timedelta(seconds=2)
    for _ in range(12):
        w.step()
        w.now += timedelta(seconds=10)
    assert w.weights == [20] and w.status.analysis_passes == 1 and w.status.consecutive_passes == 1
    assert "the same sample as before: not counted" in (w.status.analysis[0].message or "")
    w.metric_values["compat"] = 0.5  # an impossible answer for the same sample: not a second failure either
    w.step()
    assert w.status.analysis[0].failures == 0 and w.status.phase is Phase.PROGRESSING
    w.metric_values["compat"] = 1.0
    w.metric_times.pop("compat")  # new samples at every evaluation again
    w.run(until=lambda w: w.status.phase is Phase.SUCCEEDED)


def test_a_sample_scraped_before_traffic_started_is_not_evidence() -> None:
    w = released(STEPS, analysis=ANALYSIS)
    w.metric_values["compat"] = 1.0
    w.metric_times["compat"] = w.now
    w.set_image("img:2")
    w.run(until=lambda w: w.status.current_weight == 20)
    for _ in range(5):
        w.step()
        w.now += timedelta(seconds=10)
    assert w.status.consecutive_passes == 0 and w.status.analysis[0].verdict is Verdict.PASS


def test_steps_without_traffic_never_promote_with_analysis_configured() -> None:
    w = released([{"setWeight": 0}, {"pause": {"duration": "5s"}}], analysis=ANALYSIS)
    w.metric_values["compat"] = 1.0
    w.set_image("img:2")
    for _ in range(30):
        w.step()
        w.now += timedelta(seconds=5)
    assert w.status.phase is Phase.PROGRESSING and w.status.stable_revision != w.revision
    assert "no traffic reaches the canary" in w.status.message


def test_promote_skips_steps_not_evidence() -> None:
    steps = [{"setWeight": 20}, {"approval": {"reason": "look"}}, {"setWeight": 60}, {"setWeight": 100}]
    w = released(steps, analysis={**ANALYSIS, "passes": 3})
    w.metric_values["compat"] = 1.0
    w.metric_times["compat"] = w.now
    w.set_image("img:2")
    w.run(until=lambda w: w.status.phase is Phase.AWAITING_APPROVAL)
    w.annotations[PROMOTE] = f"{w.revision}-1"
    w.step()
    assert w.status.phase is not Phase.PROMOTING and w.status.current_step == len(steps)
    assert "0/3" in w.status.message and w.router == 20
    w.metric_times.pop("compat")
    w.run(until=lambda w: w.status.phase is Phase.SUCCEEDED)
    assert w.status.consecutive_passes >= 3 and w.weights == [20]


def test_promote_before_any_traffic_is_refused_unless_analysis_is_skipped_explicitly() -> None:
    steps = [{"approval": {"reason": "first"}}, {"setWeight": 20}, {"setWeight": 100}]
    w = released(steps, analysis=ANALYSIS)
    w.metric_values["compat"] = 1.0
    w.set_image("img:2")
    w.run(until=lambda w: w.status.phase is Phase.AWAITING_APPROVAL)
    w.annotations[PROMOTE] = f"{w.revision}-0"
    d = w.step()
    assert w.status.phase is Phase.AWAITING_APPROVAL and PROMOTE not in w.annotations
    assert any(e.reason == "PromoteRejected" and "+skip-analysis" in e.message for e in d.events)
    w.annotations[PROMOTE] = f"{w.revision}-0+skip-analysis"
    w.run(until=lambda w: w.status.phase is Phase.SUCCEEDED)
    assert w.weights == [] and any(h.outcome == "Promoted" and "analysis skipped" in h.message
                                   for h in w.status.history)
