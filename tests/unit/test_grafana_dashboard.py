"""docs/grafana-dashboard.json: valid JSON, every metric and label its queries use exists in the operator's own
prometheus_client registry (modelrollout.telemetry), and every query parses in the real Prometheus."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.metrics import MetricWrapperBase

from devenv.localenv.prometheus import Prometheus
from modelrollout import telemetry

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json"

# words of PromQL that look like identifiers but are not metric names
_PROMQL = {"sum", "min", "max", "avg", "count", "rate", "increase", "irate", "by", "without", "histogram_quantile",
           "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset", "topk", "bottomk",
           "label_values", "abs", "clamp_min", "clamp_max", "delta", "deriv", "time", "vector", "scalar"}
_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h", "$namespace": ".*", "$rollout": ".*"}


def load() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text())
    assert isinstance(data, dict)
    return data


def series() -> dict[str, set[str]]:
    """Every sample name the operator exposes -> its label names (histograms' _bucket has le)."""
    out: dict[str, set[str]] = {}
    for value in vars(telemetry).values():
        if not isinstance(value, MetricWrapperBase):
            continue
        family = value.describe()[0]
        labels = set(value._labelnames)
        if family.type == "counter":
            out[f"{family.name}_total"] = labels
        elif family.type == "histogram":
            out[f"{family.name}_bucket"] = labels | {"le"}
            out[f"{family.name}_count"] = labels
            out[f"{family.name}_sum"] = labels
        else:
            out[family.name] = labels
    return out


def panels(data: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in data["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return [p for p in out if p.get("type") != "row"]


def exprs(data: dict[str, Any]) -> list[str]:
    found = [t["expr"] for p in panels(data) for t in p.get("targets", [])]
    for var in data["templating"]["list"]:
        if var["type"] == "query":
            found.append(var["definition"].removeprefix("label_values(").rsplit(",", 1)[0])
    return found


def metric_names(expr: str) -> set[str]:
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    without_ranges = re.sub(r"\[[^\]]*\]", "", without_strings)
    without_by = re.sub(r"\b(by|without)\s*\([^)]*\)", "", without_ranges)
    without_selectors = re.sub(r"\{[^}]*\}", "", without_by)
    words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", without_selectors))
    return {w for w in words if w not in _PROMQL and not w.startswith("$")}


def selector_labels(expr: str) -> list[tuple[str, set[str]]]:
    """(metric, labels used in its {} selector) for every selector."""
    out = []
    for metric, body in re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}", expr):
        out.append((metric, set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", body))))
    return out


def grouping_labels(expr: str) -> set[str]:
    return {label.strip() for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr)
            for label in group.split(",") if label.strip()}


def test_dashboard_shape() -> None:
    data = load()
    assert 36 <= data["schemaVersion"] <= 41
    names = {v["name"]: v for v in data["templating"]["list"]}
    assert names["datasource"]["type"] == "datasource" and names["datasource"]["query"] == "prometheus"
    assert {"namespace", "rollout"} <= set(names)
    ids = [p["id"] for p in data["panels"]]
    assert len(ids) == len(set(ids))
    for p in panels(data):
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}"


def test_every_metric_the_issue_asks_for_has_a_panel() -> None:
    used = set().union(*(metric_names(e) for e in exprs(load())))
    for name in ("modelrollout_rollout_phase", "modelrollout_rollout_weight",
                 "modelrollout_step_duration_seconds_bucket", "modelrollout_analysis_evaluations_total",
                 "modelrollout_rollbacks_total", "modelrollout_reconcile_errors_total",
                 "modelrollout_approval_wait_seconds_bucket"):
        assert name in used, name


def test_metrics_and_labels_exist_in_the_registry() -> None:
    known = series()
    for expr in exprs(load()):
        names = metric_names(expr)
        assert names, expr
        for name in names:
            assert name in known, f"{name} (in {expr}) is not exposed by modelrollout.telemetry"
        for metric, labels in selector_labels(expr):
            assert labels <= known[metric], f"{metric}: {labels - known[metric]} unknown in {expr}"
        grouping = grouping_labels(expr)
        available = set().union(*(known[n] for n in names))
        assert grouping <= available, f"by({grouping - available}) unknown in {expr}"


def test_every_query_parses_in_prometheus(prometheus: Prometheus) -> None:
    for expr in exprs(load()):
        text = expr
        for var, value in _VARIABLES.items():
            text = text.replace(var, value)
        prometheus.query(text)  # PrometheusError (HTTP 400) when it does not parse


@pytest.mark.parametrize("bad", ['sum by (nope) (modelrollout_rollout_weight)', 'modelrollout_nope_total',
                                 'modelrollout_rollout_weight{phase="x"}'])
def test_the_checks_catch_mistakes(bad: str) -> None:
    known = series()
    names = metric_names(bad)
    problems = [n for n in names if n not in known]
    problems += [m for m, labels in selector_labels(bad) if m in known and not labels <= known[m]]
    problems += [g for g in grouping_labels(bad) if not any(g in known.get(n, set()) for n in names)]
    assert problems, bad
