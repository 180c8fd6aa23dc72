"""``kubectl-modelrollout``: the kubectl plugin (``kubectl modelrollout get|approve|abort|retry|promote NAME``,
``dashboard``).

``get`` shows a rollout's status in words (``-w`` follows it); the other commands set the control
annotations the operator consumes (``modelrollout.io/approve``, ``abort``, ``retry``, ``promote``) with a
merge patch under the field manager ``kubectl-modelrollout``, so status.history records who did it.

:func:`render` is pure (a ModelRollout dict in, text out); everything else talks to the apiserver.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from modelrollout import api
from modelrollout.api import Phase
from modelrollout.core.approval import ABORT, APPROVE, PROMOTE, RETRY, ROLLBACK_TO, build_token, parse_token
from modelrollout.core.phases import ACTIVE, TERMINAL
from modelrollout.core.plan import SKIP_ANALYSIS, describe_step, gate_reason
from modelrollout.core.steps import step_of, steps_of

if TYPE_CHECKING:
    from modelrollout.kube import Rollouts

FIELD_MANAGER = "kubectl-modelrollout"
HISTORY_SHOWN = 5
WATCH_CHUNK_SECONDS = 300
"""Without --timeout, one watch request lasts this long before it is resumed from the last resourceVersion."""

DONE_MARK = "✓"
CURRENT_MARK = "▶"
FAILED_MARK = "✗"
SKIPPED_MARK = "–"

Obj = dict[str, Any]

_ACTIVE = frozenset(p.value for p in ACTIVE)
_TERMINAL = frozenset(p.value for p in TERMINAL)
"""Phase names as status carries them."""


class PluginError(Exception):
    """A failure to report in one line (exit 1); ``status`` is the apiserver's HTTP status when it refused."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


# --------------------------------------------------------------------------- rendering (pure)


def render(obj: Obj) -> str:
    """A ModelRollout as read from the apiserver, in words. Pure: no I/O, no clock."""
    meta = obj.get("metadata") or {}
    name = str(meta.get("name") or "?")
    namespace = str(meta.get("namespace") or "default")
    status: Obj = obj.get("status") or {}
    phase = str(status.get("phase") or "Pending")

    lines = [f"ModelRollout {namespace}/{name}"]
    fields: list[tuple[str, str]] = [("Phase", phase)]
    if status.get("message"):
        fields.append(("Message", str(status["message"])))
    elif not status:
        fields.append(("Message", "the operator has not reported on this rollout yet"))
    fields.append(("Stable", _short(status.get("stableRevision"))))
    canary = status.get("canaryRevision")
    fields.append(("Canary", _short(canary)))
    if status.get("rolledBackRevision"):
        fields.append(("Rolled back", _short(status["rolledBackRevision"])))
    weight = int(status.get("currentWeight") or 0)
    fields.append(("Weight", f"{weight}% on canary" if canary else f"{weight}%"))
    if canary and status.get("currentStep") is not None:
        fields.append(("Step", _step(status["currentStep"], obj.get("spec"))))
    generation, observed = meta.get("generation"), status.get("observedGeneration")
    if generation is not None and observed is not None and observed < generation:
        fields.append(("Spec", f"generation {generation}; the operator has acted on {observed} so far"))
    width = max(len(label) for label, _ in fields) + 2
    lines += [f"{label + ':':<{width}}{value}" for label, value in fields]

    lines += ["", *_render_steps(obj)]

    metrics = status.get("analysis") or []
    if metrics:
        lines += ["", *_render_analysis(status, metrics)]

    drill = status.get("drill")
    if isinstance(drill, dict) and drill.get("name"):
        lines += ["", *_render_drill(drill, obj.get("spec"))]

    waiting = _render_waiting(name, namespace, status, phase, _step_count(obj.get("spec")))
    if waiting:
        lines += ["", *waiting]

    history = status.get("history") or []
    if history:
        shown = history[-HISTORY_SHOWN:]
        title = "History:" if len(shown) == len(history) else f"History (last {len(shown)} of {len(history)}):"
        rows = [[_ts(h.get("at")), _short(h.get("revision")), str(h.get("outcome") or ""),
                 "" if h.get("step") is None else f"step {_step(h['step'], obj.get('spec'))}",
                 str(h.get("message") or "") + (f" (by {h['by']})" if h.get("by") else "")] for h in shown]
        lines += ["", title, *_table(rows)]
    return "\n".join(lines) + "\n"


def _render_drill(drill: Obj, raw_spec: Any) -> list[str]:
    """status.drill: which experiment ran, when, for how long, how it ended, and what every metric did."""
    outcome = str(drill.get("outcome") or "Running")
    when = f"started {_ts(drill.get('startedAt'))}" + (
        f", deleted {_ts(drill['finishedAt'])}" if drill.get("finishedAt") else "")
    lines = [f"Drill (step {_step(drill.get('step'), raw_spec)}): {drill.get('kind')} {drill.get('name')} for "
             f"{drill.get('duration')} at weight {drill.get('weight', 0)}: {outcome}, {when}"]
    if drill.get("message"):
        lines.append(f"  {drill['message']}")
    rows = []
    for m in drill.get("metrics") or []:
        low, high = m.get("min"), m.get("max")
        span = "no value" if low is None or high is None else (f"{low:g}" if low == high else f"{low:g}..{high:g}")
        rows.append([str(m.get("name")), span, f"{m.get('evaluations', 0)} evaluations",
                     f"{m.get('failures', 0)} failing"])
    return lines + (_table(rows) if rows else ["  no metric was evaluated during the drill"])


def _step_count(raw_spec: Any) -> int:
    """How many steps the rollout walks (from the raw steps when the spec does not parse)."""
    spec = parse_spec(raw_spec)
    if spec is not None:
        return len(steps_of(spec))
    return len((((raw_spec or {}).get("strategy") or {}).get("canary") or {}).get("steps") or [])


def _step(index: Any, raw_spec: Any) -> str:
    """A 0-based step index (status.currentStep, approval.step, a token's step) as messages show it: ``2/5``."""
    try:
        return step_of(int(index), _step_count(raw_spec))
    except (TypeError, ValueError):
        return str(index)


def parse_spec(raw: Any) -> api.ModelRolloutSpec | None:
    try:
        return api.ModelRolloutSpec.model_validate(raw or {})
    except Exception:
        return None


def _short(revision: Any) -> str:
    return str(revision) if revision else "-"


def _ts(value: Any) -> str:
    """An RFC 3339 timestamp as ``2024-05-01 10:00:00Z``; anything else as given."""
    if not value:
        return "-"
    try:
        at = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value)
    if at.tzinfo is not None:
        at = at.astimezone(UTC)
    return at.strftime("%Y-%m-%d %H:%M:%SZ")


def _table(rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))] if rows else []
    out = []
    for row in rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row)]
        out.append((indent + "  ".join(cells)).rstrip())
    return out


def _raw_step(step: Any) -> tuple[str, str | None]:
    """Description and gate of a step when the spec does not parse (the operator marks it Invalid)."""
    if not isinstance(step, dict):
        return str(step), None
    if "setWeight" in step:
        return f"setWeight {step['setWeight']}", None
    if "pause" in step:
        duration = (step.get("pause") or {}).get("duration")
        return (f"pause {duration}", None) if duration else ("pause (until approved)", "indefinite pause")
    if "approval" in step:
        return "approval", str((step.get("approval") or {}).get("reason") or "approval required")
    if "analysis" in step:
        return f"analysis x{(step.get('analysis') or {}).get('passes', 1)}", None
    if "chaos" in step:
        drill = step.get("chaos") or {}
        return f"chaos {drill.get('kind')} {drill.get('duration')}", None
    return str(step), None


@dataclass(frozen=True)
class StepRow:
    """One step of a rollout as the plugin and the dashboard show it (``index`` None for the promotion row)."""

    index: int | None
    text: str
    gate: str | None = None
    state: str = ""
    """``done``, ``current``, ``failed`` (a rollback happened there), ``skipped`` (by a promotion) or ``""``."""
    approved: bool = False
    waiting: bool = False
    """The gate waits for an approval that continues past this step."""


STATE_MARKS = {"done": DONE_MARK, "current": CURRENT_MARK, "failed": FAILED_MARK, "skipped": SKIPPED_MARK, "": " "}


def step_rows(obj: Obj) -> tuple[bool, list[StepRow]]:
    """Whether a rollout is in progress, and its steps (with a last promotion row while one is). Pure."""
    raw_spec: Obj = obj.get("spec") or {}
    spec = parse_spec(raw_spec)
    status: Obj = obj.get("status") or {}
    phase = str(status.get("phase") or "Pending")
    if spec is not None:
        count = len(steps_of(spec))
        described = [(describe_step(spec, i), gate_reason(spec, i)) for i in range(count)]
    else:
        raw_steps = ((raw_spec.get("strategy") or {}).get("canary") or {}).get("steps") or []
        described = [_raw_step(s) for s in raw_steps]
    current = status.get("currentStep")
    in_progress = current is not None and bool(status.get("canaryRevision"))
    approval = status.get("approval") or {}
    rows = []
    for i, (text, gate) in enumerate(described):
        state = ""
        if in_progress:
            assert current is not None
            if i < current:
                state = "done"
            elif phase == Phase.PROMOTING:
                state = "skipped"
            elif i == current:
                state = "failed" if phase in (Phase.ROLLING_BACK, Phase.ROLLED_BACK) else "current"
        rows.append(StepRow(i, text, gate, state, approved=in_progress and status.get("approvedStep") == i,
                            waiting=bool(approval) and approval.get("step") == i
                            and approval.get("action", "continue") == "continue"))
    if in_progress:
        assert current is not None
        promoting = phase == Phase.PROMOTING or (current >= len(described) and phase in _ACTIVE)
        rows.append(StepRow(None, "promotion", state="current" if promoting else ""))
    return in_progress, rows


def _render_steps(obj: Obj) -> list[str]:
    in_progress, steps = step_rows(obj)
    lines = ["Steps:" if in_progress else "Steps (no rollout in progress):"]
    rows = []
    for row in steps:
        notes = ["(skipped)"] if row.state == "skipped" else []
        if row.gate is not None:
            notes.append(f"[gate: {row.gate}]")
        if row.approved:
            notes.append("(approved)")
        if row.waiting:
            notes.append("<- waiting for approval")
        rows.append([STATE_MARKS[row.state], "" if row.index is None else str(row.index + 1), row.text,
                     " ".join(notes)])
    lines += _table(rows) if rows else ["  (none)"]
    return lines


def _number(value: Any) -> str:
    if value is None:
        return "-"
    try:
        return f"{float(value):.4g}"
    except (TypeError, ValueError):
        return str(value)


def _render_analysis(status: Obj, metrics: list[Obj]) -> list[str]:
    head = f"Analysis: {int(status.get('analysisPasses') or 0)} passing evaluation(s) in a row"
    if status.get("inconclusiveCount"):
        head += f", {status['inconclusiveCount']} inconclusive in a row"
    if status.get("lastAnalysisAt"):
        head += f"; last at {_ts(status['lastAnalysisAt'])}"
    rows = [["METRIC", "VALUE", "VERDICT", "FAILURES", "MESSAGE"]]
    rows += [[str(m.get("name") or "?"), _number(m.get("value")), str(m.get("verdict") or "-"),
              str(int(m.get("failures") or 0)), str(m.get("message") or "")] for m in metrics]
    return [head, *_table(rows)]


def plugin_command(verb: str, name: str, namespace: str) -> str:
    """The plugin command line for ``verb`` on a rollout (``-n`` left out for namespace default)."""
    ns = "" if namespace == "default" else f" -n {namespace}"
    return f"kubectl modelrollout {verb} {name}{ns}"


def _render_waiting(name: str, namespace: str, status: Obj, phase: str, total: int) -> list[str]:
    approval = status.get("approval")
    if approval:
        action = approval.get("action") or "continue"
        at = step_of(int(approval.get("step") or 0), total)
        does = {"continue": f"continues past step {at}",
                "resume": "resumes the rollout", "rollback": "rolls the canary back"}.get(action, action)
        out = [f"Waiting for: approval at step {at} ({approval.get('reason') or 'approval'})",
               f"  since:   {_ts(approval.get('since'))}",
               f"  token:   {approval.get('token')} (approving {does})",
               f"  approve: {plugin_command('approve', name, namespace)}"]
        if approval.get("command"):
            out.append(f"       or: {approval['command']}")
        return out
    if phase == Phase.ROLLED_BACK and status.get("rolledBackRevision"):
        return [f"To try revision {status['rolledBackRevision']} again: {plugin_command('retry', name, namespace)}"]
    return []


# --------------------------------------------------------------------------- the apiserver


def _connect(args: argparse.Namespace) -> tuple[Rollouts, str]:
    """The port to the rollouts and the namespace, loading the kubeconfig like kubectl does."""
    from modelrollout.kube import KubeconfigError, Rollouts

    try:
        return Rollouts.connect(args.kubeconfig, args.context, args.namespace)
    except KubeconfigError as exc:
        raise PluginError(str(exc)) from None


def _api_error(exc: Any, name: str, namespace: str) -> PluginError:
    if getattr(exc, "status", None) == 404:
        return PluginError(f'modelrollout "{name}" not found in namespace "{namespace}"', 404)
    reason = getattr(exc, "reason", None) or exc
    said = apiserver_message(exc)
    return PluginError(f"{name}: the apiserver said {getattr(exc, 'status', '?')} {reason}"
                       + (f": {said}" if said else ""), getattr(exc, "status", None))


def apiserver_message(exc: Any) -> str:
    """The ``message`` of the Status an ApiException carries (e.g. who may not patch what), else ``""``."""
    import json

    try:
        body = json.loads(getattr(exc, "body", None) or "")
    except (TypeError, ValueError):
        return ""
    return str(body.get("message") or "") if isinstance(body, dict) else ""


def _get(rollouts: Rollouts, namespace: str, name: str) -> Obj:
    from modelrollout.kube import ApiError

    try:
        return rollouts.get(namespace, name)
    except ApiError as exc:
        raise _api_error(exc, name, namespace) from None


def annotate(rollouts: Rollouts, namespace: str, name: str, key: str, value: str,
             field_manager: str = FIELD_MANAGER) -> None:
    """Set one control annotation with a merge patch under ``field_manager`` (status.history's ``by``)."""
    from modelrollout.kube import ApiError

    try:
        rollouts.annotate(namespace, name, key, value, field_manager=field_manager)
    except ApiError as exc:
        raise _api_error(exc, name, namespace) from None


def _done(obj: Obj) -> bool:
    """In a terminal phase for the latest spec the operator has seen."""
    status = obj.get("status") or {}
    generation = (obj.get("metadata") or {}).get("generation")
    observed = status.get("observedGeneration")
    if generation is not None and (observed is None or observed < generation):
        return False
    return status.get("phase") in _TERMINAL


def _in_progress(status: Obj) -> bool:
    return bool(status.get("canaryRevision")) and status.get("phase") in _ACTIVE


def _stale(obj: Obj) -> bool:
    """The operator has not acted on the latest spec yet (status may describe an older one)."""
    generation = (obj.get("metadata") or {}).get("generation")
    observed = (obj.get("status") or {}).get("observedGeneration")
    return generation is not None and (observed is None or observed < generation)


# --------------------------------------------------------------------------- commands


def cmd_get(args: argparse.Namespace) -> int:
    rollouts, namespace = _connect(args)
    obj = _get(rollouts, namespace, args.name)
    if not args.watch:
        sys.stdout.write(render(obj))
        return 0
    return _watch(rollouts, namespace, args.name, obj, args)


def _show(obj: Obj, first: bool) -> None:
    if sys.stdout.isatty():
        sys.stdout.write("\x1b[H\x1b[2J")
    elif not first:
        sys.stdout.write("\n" + "─" * 72 + "\n")
    sys.stdout.write(render(obj))
    sys.stdout.flush()


def _watch(rollouts: Rollouts, namespace: str, name: str, obj: Obj, args: argparse.Namespace) -> int:
    from urllib3.exceptions import HTTPError

    from modelrollout.kube import ApiError

    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    _show(obj, True)
    if args.until_done and _done(obj):
        return 0
    rv = str(obj["metadata"]["resourceVersion"])
    while True:
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            break
        chunk = WATCH_CHUNK_SECONDS if remaining is None else max(1, math.ceil(remaining))
        try:
            events = rollouts.watch(namespace, name=name, resource_version=rv, timeout_seconds=chunk,
                                    request_timeout=(10, chunk + 10))
            for event in events:
                raw = event.get("raw_object") or {}
                rv = str((raw.get("metadata") or {}).get("resourceVersion") or rv)
                if event.get("type") == "BOOKMARK":
                    continue
                if event.get("type") == "DELETED":
                    print(f"\nmodelrollout {namespace}/{name} was deleted", file=sys.stderr)
                    return 1
                _show(raw, False)
                if args.until_done and _done(raw):
                    return 0
                if deadline is not None and time.monotonic() >= deadline:
                    break
        except ApiError as exc:
            if exc.status != 410:
                raise _api_error(exc, name, namespace) from None
            obj = _get(rollouts, namespace, name)  # the watch expired: start again from the current object
            rv = str(obj["metadata"]["resourceVersion"])
            _show(obj, False)
            if args.until_done and _done(obj):
                return 0
        except HTTPError:
            continue  # a read timeout or a dropped connection: resume from rv until the deadline
    if args.until_done:
        print(f"timed out after {args.timeout:g}s: {name} is not done yet", file=sys.stderr)
        return 1
    return 0


@dataclass(frozen=True)
class Action:
    """What a command writes (one control annotation) and what it then says; ``warning`` goes to stderr."""

    key: str
    value: str
    message: str
    warning: str | None = None


def plan_approve(name: str, obj: Obj, token: str | None = None) -> Action:
    """Approve the gate the rollout waits at (``status.approval.token``), or with ``token``. Pure."""
    status: Obj = obj.get("status") or {}
    approval: Obj = status.get("approval") or {}
    action = "continue"
    step: Any
    warning = None
    if token:
        parsed = parse_token(token)
        if parsed is None:
            raise PluginError(f"malformed token {token!r}: expected REVISION-STEP, e.g. 7f2a1b0c9d-3")
        value, step = str(parsed), parsed.step
        canary = status.get("canaryRevision")
        if canary and parsed.revision != canary:
            warning = f"warning: {value} is for revision {parsed.revision}, the rollout is at {canary}"
        if approval.get("token") == value:
            action = str(approval.get("action") or "continue")
    else:
        if not approval.get("token"):
            phase = status.get("phase") or "Pending"
            message = f": {status['message']}" if status.get("message") else ""
            raise PluginError(f"nothing waits for approval on {name} (phase {phase}{message})")
        value, step = str(approval["token"]), approval.get("step")
        action = str(approval.get("action") or "continue")
    suffix = {"resume": " (the rollout resumes)", "rollback": " (the canary rolls back)"}.get(action, "")
    return Action(APPROVE, value, f"approved {name} at step {_step(step, obj.get('spec'))} with {value}{suffix}",
                  warning)


def plan_abort(name: str, obj: Obj) -> Action:
    status: Obj = obj.get("status") or {}
    if status.get("phase") == Phase.PROMOTING:
        raise PluginError(f"{name} is promoting revision {status.get('canaryRevision')}; it cannot be aborted")
    if not _in_progress(status) and not _stale(obj):
        raise PluginError(f"no rollout in progress on {name} (phase {status.get('phase') or 'Pending'})")
    return Action(ABORT, "true", f"aborted {name} at step {_step(status.get('currentStep'), obj.get('spec'))}: "
                  f"revision {_short(status.get('canaryRevision'))} rolls back, stable "
                  f"{_short(status.get('stableRevision'))} takes all traffic")


def plan_retry(name: str, obj: Obj) -> Action:
    status: Obj = obj.get("status") or {}
    phase = status.get("phase") or "Pending"
    if phase == Phase.ROLLING_BACK:
        raise PluginError(f"{name} is still rolling back; retry once it is RolledBack "
                          f"(kubectl modelrollout get {name} -w --until-done)")
    if phase != Phase.ROLLED_BACK or not status.get("rolledBackRevision"):
        raise PluginError(f"{name} has no rolled-back revision to retry (phase {phase})")
    return Action(RETRY, "true", f"retried {name}: revision {status['rolledBackRevision']} starts again from step "
                  f"{_step(0, obj.get('spec'))}")


def plan_promote(name: str, obj: Obj, *, skip_analysis: bool = False) -> Action:
    status: Obj = obj.get("status") or {}
    canary, step = status.get("canaryRevision"), status.get("currentStep")
    if not _in_progress(status) or step is None:
        raise PluginError(f"no rollout in progress on {name} (phase {status.get('phase') or 'Pending'})")
    if _stale(obj):
        raise PluginError(f"the operator has not acted on the latest spec of {name} yet; try again")
    token = build_token(str(canary), int(step))
    return Action(PROMOTE, token + (SKIP_ANALYSIS if skip_analysis else ""),
                  f"promoted {name} at step {_step(step, obj.get('spec'))} with {token}: the remaining steps are "
                  "skipped" + ("; so is the analysis evidence" if skip_analysis
                     else "; promotion still waits for the analysis evidence"))


def rollback_candidates(obj: Obj) -> list[str]:
    """Earlier successful revisions (oldest first) that ``rollback-to`` can put back."""
    status: Obj = obj.get("status") or {}
    return [str(h["revision"]) for h in status.get("history") or []
            if h.get("outcome") == "Succeeded" and h.get("revision") != status.get("stableRevision")]


def plan_rollback_to(name: str, obj: Obj, revision: str | None = None) -> Action:
    status: Obj = obj.get("status") or {}
    if _in_progress(status):
        raise PluginError(f"a rollout is in progress on {name}; use `kubectl modelrollout abort {name}`")
    if revision is None:
        earlier = rollback_candidates(obj)
        if not earlier:
            raise PluginError(f"{name} has no earlier successful revision to roll back to")
        revision = earlier[-1]
    return Action(ROLLBACK_TO, revision,
                  f"rolling {name} back to revision {revision}: its template returns to the spec, steps skipped")


def _act(args: argparse.Namespace, plan: Any) -> int:
    """Read the rollout, decide with ``plan(name, obj)``, set the annotation, say what was done."""
    rollouts, namespace = _connect(args)
    obj = _get(rollouts, namespace, args.name)
    action: Action = plan(args.name, obj)
    if action.warning:
        print(action.warning, file=sys.stderr)
    annotate(rollouts, namespace, args.name, action.key, action.value)
    print(action.message)
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    return _act(args, lambda name, obj: plan_approve(name, obj, args.token))


def cmd_abort(args: argparse.Namespace) -> int:
    return _act(args, plan_abort)


def cmd_retry(args: argparse.Namespace) -> int:
    return _act(args, plan_retry)


def cmd_promote(args: argparse.Namespace) -> int:
    skip = bool(getattr(args, "skip_analysis", False))
    return _act(args, lambda name, obj: plan_promote(name, obj, skip_analysis=skip))


def cmd_rollback_to(args: argparse.Namespace) -> int:
    return _act(args, lambda name, obj: plan_rollback_to(name, obj, args.revision))


# --------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-n", "--namespace", help="namespace (default: the kubeconfig context's, else default)")
    common.add_argument("--kubeconfig", help="kubeconfig file (default: KUBECONFIG, else ~/.kube/config)")
    common.add_argument("--context", help="kubeconfig context (default: the current context)")

    parser = argparse.ArgumentParser(prog="kubectl-modelrollout",
                                     description="Inspect and steer ModelRollouts (modelrollout.io/v1alpha1).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    get = sub.add_parser("get", parents=[common], help="show a rollout's status in words")
    get.add_argument("name", metavar="NAME")
    get.add_argument("-w", "--watch", action="store_true", help="re-render on every change")
    get.add_argument("--timeout", type=float, default=None,
                     help="with -w: stop after this many seconds (default: until Ctrl-C)")
    get.add_argument("--until-done", action="store_true",
                     help="with -w: exit 0 once the phase is terminal (Succeeded, RolledBack, Failed, Invalid)")
    get.set_defaults(func=cmd_get)

    approve = sub.add_parser("approve", parents=[common], help="open the gate the rollout waits at")
    approve.add_argument("name", metavar="NAME")
    approve.add_argument("--token", help="approve with this REVISION-STEP token (default: status.approval.token)")
    approve.set_defaults(func=cmd_approve)

    for verb, helptext, func in (
        ("abort", "roll the canary back to stable", cmd_abort),
        ("retry", "try a rolled-back revision again from the first step", cmd_retry),
        ("promote", "skip the remaining steps and promote the canary", cmd_promote),
    ):
        p = sub.add_parser(verb, parents=[common], help=helptext)
        p.add_argument("name", metavar="NAME")
        if verb == "promote":
            p.add_argument("--skip-analysis", action="store_true",
                           help="promote without the passing evaluations spec.analysis.passes asks for")
        p.set_defaults(func=func)
    back = sub.add_parser("rollback-to", parents=[common],
                          help="after promotion: put an earlier revision back, steps skipped")
    back.add_argument("name", metavar="NAME")
    back.add_argument("revision", metavar="REVISION", nargs="?",
                      help="the revision (default: the previous successful one)")
    back.set_defaults(func=cmd_rollback_to)

    dash = sub.add_parser("dashboard", parents=[common],
                          help="a live web page of the rollouts on 127.0.0.1, acting with your kubeconfig")
    dash.add_argument("-A", "--all-namespaces", action="store_true",
                      help="every namespace (needs list and watch on modelrollouts cluster-wide; "
                      "default: the namespace)")
    dash.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    dash.add_argument("--prometheus", metavar="URL", default=None,
                      help="query this Prometheus for the charts (e.g. a port-forward) instead of the address "
                      "each rollout names")
    dash.set_defaults(func=cmd_dashboard)
    return parser


def cmd_dashboard(args: argparse.Namespace) -> int:
    from modelrollout.dashboard.server import cmd_dashboard as serve

    return serve(args)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "get" and not args.watch and (args.until_done or args.timeout is not None):
        print("warning: --timeout and --until-done only apply with -w", file=sys.stderr)
    try:
        code: int = args.func(args)
        return code
    except PluginError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
