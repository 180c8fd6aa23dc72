"""Every decision: what a running fault drill saw, and the deletion of drills that no longer run."""

from __future__ import annotations

from datetime import timedelta

from modelrollout.core import actions as act
from modelrollout.core import chaos
from modelrollout.core.plan.state import Plan
from modelrollout.durations import format_duration


def sweep_drills(p: Plan) -> None:
    """Every decision: record what the metrics did during a running drill, stop it (Warning Event, history) when
    the rollout left its step, and delete every experiment of the rollout except the running drill's."""
    d = p.status.drill
    if chaos.running(d):
        d = chaos.with_evaluation(d, p.status.analysis, p.status.last_analysis_at)
        if not chaos.wanted(d, phase=p.status.phase, step=p.status.current_step,
                            canary_revision=p.status.canary_revision, revision=p.obs.revision):
            why = p.status.message or (p.status.phase or "")
            d = d.model_copy(update={"outcome": "Stopped", "finished_at": p.now, "message": why})
            p.history("DrillStopped", f"{d.kind} {d.name} stopped after "
                      f"{format_duration(timedelta(seconds=round((p.now - d.started_at).total_seconds())))}: {why}; "
                      f"{chaos.summary(d)}", step=d.step, revision=d.revision)
            p.event("DrillStopped", f"{d.kind} {d.name} deleted before its {d.duration} were over: {why}; "
                    f"{chaos.summary(d)}", warning=True)
        p.status.drill = d
    keep = d.name if chaos.running(d) else None
    stale = [act.DeleteDrill(kind, name) for kind, name in p.obs.drills if name != keep]
    p.actions[:0] = stale  # faults stop first, before any routing write
