"""The plan: :func:`decide`, the whole rollout state machine as one pure function, split by concern.

``decide`` (:mod:`.decide`) picks the branch: first release, steady, or a rollout of a new revision. A rollout
walks its steps (:mod:`.canary`, canary and blue-green alike), stops at gates (:mod:`.gates`), folds in the
evidence of analysis and the progress deadline (:mod:`.evaluation`), pre-pulls images (:mod:`.prewarm`), promotes
(:mod:`.promotion`) or rolls back (:mod:`.rollback`); every decision ends by deriving the per-track Services'
selectors and the Deployments still needed from the status it writes (:mod:`.roles`), and fault drills are swept
(:mod:`.drills`).
Every branch edits one :class:`~.state.Plan`: the status being written as typed fields (:class:`~.state.Draft`),
the actions and the Events; :meth:`~.state.Plan.done` adds the kstatus conditions (:mod:`.conditions`).
"""

from modelrollout.core.plan.conditions import conditions
from modelrollout.core.plan.decide import decide
from modelrollout.core.plan.evaluation import evidence_missing, receives_traffic
from modelrollout.core.plan.gates import (
    describe_step,
    gate_reason,
    gate_steps,
    preflight_reasons,
    step_label,
)
from modelrollout.core.plan.promotion import SKIP_ANALYSIS
from modelrollout.core.plan.shape import dynamic_stable, replica_ratio
from modelrollout.core.plan.state import HISTORY_LIMIT, POLL_SECONDS, STALLED

__all__ = [
    "HISTORY_LIMIT",
    "POLL_SECONDS",
    "SKIP_ANALYSIS",
    "STALLED",
    "conditions",
    "decide",
    "describe_step",
    "dynamic_stable",
    "evidence_missing",
    "gate_reason",
    "gate_steps",
    "preflight_reasons",
    "receives_traffic",
    "replica_ratio",
    "step_label",
]
